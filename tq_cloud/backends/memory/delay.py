"""The delay lane in memory: the in-memory queue already holds a task until it is due."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from tq_cloud.backends.memory.queue import InMemoryQueue
from tq_cloud.domain.task import Task
from tq_cloud.ports.delay import SQS_MAX_DELAY, SQS_MAX_MESSAGE_BYTES, LaneMessage


class InMemoryDelayLane:
    """Example:
        stack = InMemoryStack.create(delay_lane=True)   # retries and short delays skip the store
    """

    def __init__(self, queue: InMemoryQueue, *, max_delay: timedelta = SQS_MAX_DELAY,
                 max_message_bytes: int = SQS_MAX_MESSAGE_BYTES) -> None:
        self.queue = queue
        self._max_delay = max_delay
        self._max_bytes = max_message_bytes
        self.sent = 0

    @property
    def max_delay(self) -> timedelta:
        return self._max_delay

    @property
    def max_message_bytes(self) -> int:
        return self._max_bytes

    async def send(self, tasks: Sequence[Task]) -> None:
        self.sent += len(tasks)
        await self.queue.publish(tasks)

    async def retry_soon(self, messages: Sequence[LaneMessage]) -> None:
        """Nothing to do: the in-memory lane hands tasks straight to the queue, so no message
        of it is ever received and forwarded."""
