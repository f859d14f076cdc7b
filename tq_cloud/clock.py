"""Time as an injected dependency.

Retry back-off, mature-task sweeps, heartbeats and flow timeouts all depend on "now". Passing a
clock lets tests and benchmarks move time forward instead of sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """What the engine reads the time from and sleeps on: `SystemClock` in production,
    `ManualClock` in tests and the simulator, so nothing in the engine reads the wall clock.

    Example:
        def stamped(clock: Clock) -> str:
            return clock.now().isoformat()
    """
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait for `seconds` of this clock's time."""
        ...


class SystemClock:
    """The wall clock (UTC) and asyncio's sleep: what production handlers use by default.

    Example:
        handler = TaskHandler(queue=queue, registry=app, storage=storage, locks=locks, clock=SystemClock())
    """
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


class ManualClock:
    """A clock that only moves when told to; sleepers wake when `advance` passes their deadline.

    Example:
        clock = ManualClock()
        clock.advance(300)     # five minutes later: a task delayed that long is due
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._watchers: list[tuple[int, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + timedelta(seconds=seconds), next(self._seq), fut))
        self._wake_watchers()
        await fut

    def _wake_watchers(self) -> None:
        for n, watcher in list(self._watchers):
            if self.sleepers >= n and not watcher.done():
                watcher.set_result(None)
        self._watchers = [(n, w) for n, w in self._watchers if not w.done()]

    async def wait_for_sleepers(self, count: int = 1) -> None:
        """Return once at least `count` coroutines sleep on this clock, so a test can advance
        time knowing the background loop it drives is waiting."""
        if self.sleepers >= count:
            return
        watcher: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchers.append((count, watcher))
        await watcher

    @property
    def sleepers(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper in deadline order and letting it run."""
        target = self._now + timedelta(seconds=seconds)
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not fut.done():
                fut.set_result(None)
                await _settle()
        self._now = target
        await _settle()


async def _settle() -> None:
    """Give woken coroutines a few turns of the loop to reach their next await."""
    for _ in range(20):
        await asyncio.sleep(0)
