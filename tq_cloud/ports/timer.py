"""The timer port: deliver a task at a precise time (flow-timeout sentinels)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from tq_cloud.domain.task import Task


class Timer(Protocol):
    async def schedule(self, name: str, task: Task) -> None:
        """Put `task` on the queue at `task.execute_at`. Scheduling a name twice keeps the first."""
        ...

    async def cancel(self, name: str) -> None:
        """Drop a pending timer; unknown names are ignored."""
        ...

    async def fire_due(self, now: datetime) -> int:
        """Deliver due timers, for backends that need a driver (in-memory, local runtime);
        backends that fire by themselves (EventBridge Scheduler) return 0."""
        ...
