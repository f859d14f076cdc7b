"""Cancel flags and progress of the runs a runner has in flight.

`actions.is_cancelled(task)` reads a flag, never the store, so asking costs nothing. The flag
is set by `handler.cancel` in the same process at once; by a progress write, which learns of a
cancel asked elsewhere for free; and, for runs of `cancellable` executors only, by one batched
read of the batch's cancel requests every CANCEL_POLL seconds while it runs (a run shorter than
that reads nothing). Progress is written at most once per PROGRESS_INTERVAL seconds per task,
and only to a row whose run lease this runner holds: a task without a row has nowhere to show
it, and a stale run never overwrites a newer one's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime

from tq_cloud.clock import Clock
from tq_cloud.domain.task import Task, TaskProgress
from tq_cloud.errors import InvalidProgressError
from tq_cloud.ports.storage import TaskStorage

log = logging.getLogger("tq_cloud.control")

PROGRESS_INTERVAL = 5.0
CANCEL_POLL = 5.0
FRESH = 1.0
"""A task about to start whose cancel requests were last read longer ago than this (it waited
in its batch behind others) has them read again first: a cancel asked while it waited stops it
before it starts."""
MAX_NOTE_CHARS = 200


class RunControl:
    def __init__(self, storage: TaskStorage | None, clock: Clock) -> None:
        self.storage = storage
        self.clock = clock
        self._running: dict[str, str | None] = {}
        """Tasks running here, each with the owner of its run lease (None: it has no row)."""
        self._cancelled: dict[str, str] = {}
        self._written: dict[str, datetime] = {}
        self._pending: set[asyncio.Future[None]] = set()
        self._read_at: dict[str, datetime] = {}
        """When the row (so the cancel request) of each leased task of a cancellable executor
        running here was last read."""

    def begin(self, tasks: Iterable[Task], owner: str, leased: set[str], cancellable: set[str]) -> None:
        """Runs start: `leased`, the ids whose run lease `owner` took; `cancellable`, those of
        them whose executor is cancellable (their requests are read while they wait and run)."""
        now = self.clock.now()
        for task in tasks:
            self._running[task.key] = owner if task.key in leased else None
            if task.key in cancellable:
                self._read_at[task.key] = now

    async def asked_before_start(self, task: Task) -> str | None:
        """The reason of a cancel asked for `task` (leased, cancellable, about to start), reading
        the requests of the cancellable tasks running here (one batched read) if the last read
        is stale."""
        key = task.key
        if key not in self._read_at or self.storage is None:
            return None
        now = self.clock.now()
        if key not in self._cancelled and (now - self._read_at[key]).total_seconds() > FRESH:
            fresh = [i for i in self._read_at if i not in self._cancelled]
            try:
                found = await self.storage.cancel_requests(fresh)
            except Exception as exc:  # noqa: BLE001 - the run's watcher and progress writes look again
                log.warning("reading cancel requests failed: %r", exc)
                return None
            for i in fresh:
                self._read_at[i] = now
            for i, reason in found.items():
                self._cancelled.setdefault(i, reason)
        return self._cancelled.get(key)

    def end(self, ids: Iterable[str]) -> None:
        for key in ids:
            self._running.pop(key, None)
            self._cancelled.pop(key, None)
            self._written.pop(key, None)
            self._read_at.pop(key, None)

    def is_cancelled(self, task_id: str) -> bool:
        return task_id in self._cancelled

    def cancel_reason(self, task_id: str) -> str | None:
        return self._cancelled.get(task_id)

    def request(self, task_id: str, reason: str) -> bool:
        """Raise the flag of a task running here (`handler.cancel` in the same process)."""
        if task_id not in self._running:
            return False
        self._cancelled.setdefault(task_id, reason)
        return True

    def progress(self, task: Task, done: float, note: str | None) -> None:
        """Validate and (at most once per PROGRESS_INTERVAL) write a run's progress."""
        if isinstance(done, bool) or not isinstance(done, int | float) or not math.isfinite(done) \
                or not 0.0 <= done <= 1.0:
            raise InvalidProgressError(f"progress of task {task.id!r}: {done!r} is not a fraction; give a "
                                       "number from 0.0 to 1.0")
        if note is not None and not isinstance(note, str):
            raise InvalidProgressError(f"progress of task {task.id!r}: the note must be text, "
                                       f"got {type(note).__name__}")
        key = task.key
        owner = self._running.get(key)
        if owner is None or self.storage is None:
            return
        now = self.clock.now()
        last = self._written.get(key)
        if last is not None and (now - last).total_seconds() < PROGRESS_INTERVAL:
            return
        self._written[key] = now
        if note is not None and len(note) > MAX_NOTE_CHARS:
            note = note[:MAX_NOTE_CHARS - 1] + "…"
        job = asyncio.ensure_future(self._write(task, owner, TaskProgress(done=float(done), note=note, at=now)))
        self._pending.add(job)
        job.add_done_callback(self._pending.discard)

    async def _write(self, task: Task, owner: str, progress: TaskProgress) -> None:
        assert self.storage is not None
        try:
            if await self.storage.record_progress(task, owner, progress):
                self._cancelled.setdefault(task.key, "cancel requested")
        except Exception as exc:  # noqa: BLE001 - progress is advisory: its write never fails a run
            log.warning("progress of task %s not recorded: %r", task.key, exc)

    async def settle(self) -> None:
        """Wait for the progress writes in flight (a Lambda handler settles what it started)."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    @contextlib.asynccontextmanager
    async def watching(self, ids: Sequence[str]) -> AsyncIterator[None]:
        """Poll the cancel requests of `ids` while the block runs (nothing if `ids` is empty)."""
        watcher = asyncio.ensure_future(self._watch(list(ids))) if ids and self.storage is not None else None
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)

    async def _watch(self, ids: list[str]) -> None:
        assert self.storage is not None
        while True:
            await self.clock.sleep(CANCEL_POLL)
            try:
                found = await self.storage.cancel_requests([i for i in ids if i in self._running])
            except Exception as exc:  # noqa: BLE001 - the next poll tries again
                log.warning("reading cancel requests failed: %r", exc)
                continue
            for key, reason in found.items():
                self._cancelled.setdefault(key, reason)
