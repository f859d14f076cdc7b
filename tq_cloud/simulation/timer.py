"""EventBridge Scheduler, simulated: one-time schedules that fire onto the stream by themselves."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from tq_cloud.backends.aws.scheduler import _at
from tq_cloud.domain.task import Task
from tq_cloud.simulation.loop import EPOCH, due, wait_until
from tq_cloud.simulation.stream import SimStream


class SimTimer:
    """EventBridge Scheduler as it behaves: a one-time `at()` schedule (whole seconds, as
    `_at` writes it) fires once, at its time or some time in the minute after, onto the stream."""

    def __init__(self, stream: SimStream, rng: random.Random) -> None:
        self.stream = stream
        self.rng = rng
        self.pending: dict[str, tuple[float, Task]] = {}
        self.wake = asyncio.Event()

    async def schedule(self, name: str, task: Task) -> None:
        if name in self.pending:
            return
        at = _at(task.execute_at or EPOCH)[3:-1]
        jitter = 0.0 if self.rng.random() < 0.5 else self.rng.uniform(0, 60)
        when = (EPOCH.fromisoformat(at + "+00:00") - EPOCH).total_seconds() + jitter
        self.pending[name] = (when, task)
        self.wake.set()

    async def cancel(self, name: str) -> None:
        self.pending.pop(name, None)

    async def fire_due(self, now: Any) -> int:
        return 0

    async def run(self) -> None:
        while True:
            if not self.pending:
                self.wake.clear()
                await self.wake.wait()
                continue
            name, (when, task) = min(self.pending.items(), key=lambda item: (item[1][0], item[0]))
            if not due(when):
                await wait_until(self.wake, when)
                continue
            del self.pending[name]
            await self.stream.publish([task])
