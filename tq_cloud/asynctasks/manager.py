"""Keeps long tasks running after the batch that started them has moved on.

A task handed off keeps its claim; when it settles, its outcome is committed through the same
post-processing as any batch (success, retry, projection, flow barrier). A task that runs past
its limit, or is still running when `shutdown` gives up, is cancelled and committed as a
failure with a retry: it is never dropped, unlike in the reference library, where evicted
and abandoned tasks were simply forgotten.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tq_cloud.clock import Clock, SystemClock
from tq_cloud.domain.task import Task
from tq_cloud.errors import ConfigurationError

log = logging.getLogger("tq_cloud.asynctasks")

TimeoutCallback = Callable[[str, Task, float], object]


@dataclass(frozen=True, kw_only=True)
class AsyncTaskManagerOptions:
    """How many handed-off tasks one process keeps at once, how often it sweeps them, and how
    long one may run by default.

    Example:
        AsyncTaskManager(AsyncTaskManagerOptions(max_tasks=200, default_max_duration=900))
    """
    max_tasks: int = 100
    sweep_interval: float = 5.0
    default_max_duration: float = 600.0
    shutdown_grace: float = 10.0
    on_task_timeout: TimeoutCallback | None = None

    def __post_init__(self) -> None:
        if self.max_tasks < 0:
            raise ConfigurationError(f"max_tasks must be >= 0, got {self.max_tasks}")
        if self.default_max_duration < 0 or self.shutdown_grace < 0:
            raise ConfigurationError("durations must be >= 0 seconds")


@dataclass(frozen=True, slots=True)
class AsyncMetrics:
    active_task_count: int
    total_handed_off: int
    total_completed: int
    total_rejected: int
    total_timed_out: int
    oldest_task_ms: float
    max_tasks: int
    utilization_percent: float


@dataclass(frozen=True, slots=True)
class ShutdownResult:
    completed_during_grace: int
    abandoned_task_ids: list[str]


@dataclass(slots=True)
class _Entry:
    task: Task
    job: asyncio.Future[Any]
    started: datetime
    max_duration: float
    settled: asyncio.Future[None] | None = None


class AsyncTaskManager:
    """Runs tasks that outlive their executor's `handoff_timeout` past the end of their batch,
    and commits each when it settles (a shutdown abandons the rest, which are retried).

    Example:
        manager = AsyncTaskManager(AsyncTaskManagerOptions(max_tasks=50))
        handler = TaskHandler(queue=queue, registry=app, storage=storage, locks=locks, async_manager=manager)
    """
    def __init__(self, options: int | AsyncTaskManagerOptions | None = None, *,
                 clock: Clock | None = None) -> None:
        if isinstance(options, int):
            options = AsyncTaskManagerOptions(max_tasks=options)
        self.options = options or AsyncTaskManagerOptions()
        self.clock = clock or SystemClock()
        self._entries: dict[str, _Entry] = {}
        self._accepting = True
        self._sweeper: asyncio.Task[None] | None = None
        self._deadline: datetime | None = None
        self._settling: set[asyncio.Future[None]] = set()
        self.total_handed_off = self.total_completed = self.total_rejected = self.total_timed_out = 0

    def can_accept(self) -> bool:
        return self._accepting and len(self._entries) < self.options.max_tasks

    def is_handed_off(self, task_id: str) -> bool:
        return task_id in self._entries

    def handoff(
        self, task: Task, job: asyncio.Future[Any], finish: Callable[[], Awaitable[None]],
        timeout: float | None = None,
    ) -> bool:
        """Track `job`; when it settles (or is cancelled), await `finish()` to commit it."""
        if task.id is None or not self.can_accept() or task.id in self._entries:
            self.total_rejected += 1
            return False
        entry = _Entry(task, job, self.clock.now(),
                       self.options.default_max_duration if timeout is None else timeout)
        self._entries[task.id] = entry
        self.total_handed_off += 1
        entry.settled = asyncio.ensure_future(self._settle(task.id, entry, finish))
        self._settling.add(entry.settled)
        entry.settled.add_done_callback(self._settling.discard)
        self._ensure_sweeper()
        return True

    async def _settle(self, task_id: str, entry: _Entry, finish: Callable[[], Awaitable[None]]) -> None:
        await asyncio.gather(entry.job, return_exceptions=True)
        try:
            await finish()
        except Exception:
            log.exception("committing async task %s failed", task_id)
        finally:
            if self._entries.get(task_id) is entry:
                del self._entries[task_id]
                self.total_completed += 1

    async def wait_idle(self) -> None:
        """Wait until every handed-off task, evicted ones included, has been committed."""
        while self._settling:
            await asyncio.gather(*list(self._settling), return_exceptions=True)

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None and self.options.sweep_interval > 0:
            self._sweeper = asyncio.ensure_future(self._sweep_loop())

    async def _sweep_loop(self) -> None:
        while self._entries and self._accepting:
            await self.clock.sleep(self.options.sweep_interval)
            self.sweep()
        self._sweeper = None

    def set_deadline(self, deadline: datetime | None) -> None:
        """A hard stop (a Lambda's remaining time): the sweep cancels whatever runs past it."""
        self._deadline = deadline

    def sweep(self) -> int:
        """Cancel tasks past their limit or the deadline; each is committed as a retry."""
        now = self.clock.now()
        evicted = 0
        for task_id, entry in list(self._entries.items()):
            age = (now - entry.started).total_seconds()
            past_deadline = self._deadline is not None and now >= self._deadline
            if age > entry.max_duration or past_deadline:
                del self._entries[task_id]
                self.total_timed_out += 1
                evicted += 1
                entry.job.cancel()
                self._notify_timeout(task_id, entry.task, age * 1000)
        return evicted

    def _notify_timeout(self, task_id: str, task: Task, duration_ms: float) -> None:
        callback = self.options.on_task_timeout
        if callback is None:
            return
        try:
            result = callback(task_id, task, duration_ms)
            if asyncio.iscoroutine(result):
                asyncio.ensure_future(result).add_done_callback(_log_callback_error)
        except Exception:
            log.exception("on_task_timeout failed for %s", task_id)

    def get_metrics(self) -> AsyncMetrics:
        now = self.clock.now()
        oldest = max(((now - e.started).total_seconds() * 1000 for e in self._entries.values()),
                     default=0.0)
        cap = self.options.max_tasks
        return AsyncMetrics(
            active_task_count=len(self._entries), total_handed_off=self.total_handed_off,
            total_completed=self.total_completed, total_rejected=self.total_rejected,
            total_timed_out=self.total_timed_out, oldest_task_ms=oldest, max_tasks=cap,
            utilization_percent=(len(self._entries) / cap * 100) if cap else 0.0)

    def reset_counters(self) -> None:
        self.total_handed_off = self.total_completed = self.total_rejected = self.total_timed_out = 0

    async def shutdown(self, grace: float | None = None, deadline: datetime | None = None) -> ShutdownResult:
        """Stop accepting; wait up to `grace` seconds (or until `deadline`) for tracked tasks;
        cancel the rest, which are committed as failures with a retry."""
        self._accepting = False
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        wait = self.options.shutdown_grace if grace is None else grace
        if deadline is not None:
            wait = min(wait, max((deadline - self.clock.now()).total_seconds(), 0.0))
        return await self._wait_or_abandon(wait)

    async def settle(self, deadline: datetime) -> ShutdownResult:
        """Wait for tracked tasks until `deadline`, then abandon the rest (failed with a retry),
        but keep accepting: a Lambda invocation calls this before it returns, since nothing
        runs between invocations."""
        return await self._wait_or_abandon(max((deadline - self.clock.now()).total_seconds(), 0.0))

    async def _wait_or_abandon(self, wait: float) -> ShutdownResult:
        if not self._entries:
            return ShutdownResult(0, [])
        initial = len(self._entries)
        settling = [e.settled for e in self._entries.values() if e.settled is not None]
        everything: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.gather(*settling, return_exceptions=True))
        timer: asyncio.Future[Any] = asyncio.ensure_future(self.clock.sleep(wait))
        await asyncio.wait({everything, timer}, return_when=asyncio.FIRST_COMPLETED)
        timer.cancel()
        abandoned = list(self._entries)
        for entry in list(self._entries.values()):
            entry.job.cancel()
        await everything
        await self.wait_idle()
        return ShutdownResult(initial - len(abandoned), abandoned)


def _log_callback_error(job: asyncio.Future[Any]) -> None:
    if not job.cancelled() and job.exception() is not None:
        log.error("on_task_timeout failed: %r", job.exception())
