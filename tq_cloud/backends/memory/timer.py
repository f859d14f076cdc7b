"""In-process one-time timers, fired by whoever drives `fire_due` (the worker's sweep)."""

from __future__ import annotations

from datetime import datetime

from tq_cloud.domain.task import Task
from tq_cloud.ports.queue import MessageQueue


class InMemoryTimer:
    """Flow timeouts in memory: due sentinels are put on the queue when the clock passes them.

    Example:
        timer = InMemoryTimer(queue)
    """
    def __init__(self, queue: MessageQueue) -> None:
        self.queue = queue
        self._pending: dict[str, Task] = {}

    async def schedule(self, name: str, task: Task) -> None:
        self._pending.setdefault(name, task)

    async def cancel(self, name: str) -> None:
        self._pending.pop(name, None)

    async def fire_due(self, now: datetime) -> int:
        due = [(n, t) for n, t in self._pending.items() if t.execute_at is None or t.execute_at <= now]
        if due:
            await self.queue.publish([t.model_copy(update={"execute_at": now}) for _, t in due])
            for name, _ in due:
                del self._pending[name]
        return len(due)

    def next_due(self) -> datetime | None:
        dues = [t.execute_at for t in self._pending.values() if t.execute_at is not None]
        return min(dues) if dues else None

    @property
    def pending(self) -> list[str]:
        return sorted(self._pending)
