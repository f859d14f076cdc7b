"""Virtual time for asyncio: an event loop whose clock jumps to the next timer when nothing is
ready, instead of waiting. Every sleep, timeout and batching window then costs no wall time, and
the order of everything that happens depends only on the program and its seeds."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

T = TypeVar("T")
EPOCH = datetime(2026, 3, 29, 0, 52, tzinfo=UTC)
"""Virtual time 0: Europe's clocks go forward eight minutes later (the schedules' DST change)."""


class DeadlockError(RuntimeError):
    """Every coroutine waits for something that nothing will ever do."""


class _VirtualSelector(selectors.BaseSelector):
    """Holds registrations (the loop's self-pipe) but never waits: a select with a timeout moves
    virtual time forward by it."""

    def __init__(self) -> None:
        self._keys: dict[int, selectors.SelectorKey] = {}
        self.loop: VirtualTimeLoop | None = None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        return self._keys.pop(fd)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        assert self.loop is not None
        if timeout is None:
            raise DeadlockError("nothing is ready and no timer is pending: the simulation cannot go on")
        self.loop.advance(timeout)
        return []

    def get_map(self) -> Any:
        return self._keys


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self._virtual = 0.0

    def time(self) -> float:
        return self._virtual

    def advance(self, seconds: float) -> None:
        self._virtual += max(seconds, 0.0)


RESOLUTION = 0.001
"""Times within a millisecond of now count as now: a wait shorter than the loop's clock
resolution would fire at once without moving virtual time, and a loop that waits for a time a
hair ahead of now would spin for ever."""


async def wait_until(event: asyncio.Event, when: float) -> None:
    """Until `event` is set or the loop's time reaches `when` (the event is cleared first)."""
    delay = when - asyncio.get_running_loop().time()
    if delay <= RESOLUTION:
        return
    event.clear()
    try:
        await asyncio.wait_for(event.wait(), delay)
    except TimeoutError:
        pass


def due(when: float) -> bool:
    return when <= asyncio.get_running_loop().time() + RESOLUTION


class LoopClock:
    """The engine's Clock on the running loop's (virtual) time."""

    def now(self) -> datetime:
        return EPOCH + timedelta(seconds=asyncio.get_running_loop().time())

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
