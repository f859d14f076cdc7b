"""The notification port: operational signals (discards, errors, per-queue statistics)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class QueueStats:
    queue_id: str
    succeeded: int
    failed: int
    handed_off: int
    ignored: int
    worker_id: str


class NotificationProvider(Protocol):
    async def on_tasks_discarded(self, count: int, total: int) -> None:
        """Unstored tasks that exhausted their retries; `total` counts since the worker started."""
        ...

    async def on_task_error(self, error: BaseException, context: str) -> None:
        ...

    async def on_queue_stats(self, stats: QueueStats) -> None:
        ...

    async def on_final_stats(self, stats: list[QueueStats]) -> None:
        ...
