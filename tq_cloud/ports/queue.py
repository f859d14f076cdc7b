"""The message queue port: the transport that carries due tasks to workers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from tq_cloud.domain.task import Task


class MessageQueue(Protocol):
    @property
    def max_message_bytes(self) -> int:
        """Largest serialised task the transport accepts (Kinesis: 1 MiB)."""
        ...

    @property
    def honours_execute_at(self) -> bool:
        """Whether a message with a future `execute_at` waits until then. Kinesis cannot delay a
        record, so near-future tasks (short retries) go through the store instead."""
        ...

    async def publish(self, tasks: Sequence[Task]) -> None:
        """Write tasks; on a partial failure raise QueueWriteError naming the unwritten tasks."""
        ...

    async def receive(self, queue_id: str, limit: int) -> list[Task]:
        """Take up to `limit` due tasks of one queue. Pull-style consumers use this; the
        Lambda event source mapping pushes batches instead."""
        ...

    async def requeue(self, tasks: Sequence[Task]) -> None:
        """Give back tasks received but not committed, for redelivery."""
        ...
