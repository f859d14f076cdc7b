"""The simulation's stand-ins at the edges of the engine: the Lambda runtime and context the
real handlers are given, and the backends with the checker's eyes on them (what a publish
reported written, rows reset, projections stored)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tq_cloud.assembly.handler import TaskHandler
from tq_cloud.backends.memory import InMemoryAdapter, InMemoryProjectionProvider
from tq_cloud.domain.task import Task, TaskStatus
from tq_cloud.errors import QueueWriteError
from tq_cloud.simulation.checks import Tracker
from tq_cloud.simulation.faults import CURRENT
from tq_cloud.simulation.stream import attempt_key


class SimRuntime:
    """What the Lambda handlers need of their runtime: the stack, and no metrics. Its handler
    counts each record it is given as a delivery (the worker handler gives a record again,
    itself, when its batch did not commit)."""

    def __init__(self, handler: TaskHandler, tracker: Tracker) -> None:
        self.handler = _Counting(handler, tracker)
        self.metrics = None
        self.metrics_namespace = self.service = "tq-sim"

    async def stack(self) -> SimRuntime:
        return self

    def observability(self) -> None:
        return None

    def run(self, coro: Any) -> Any:
        raise RuntimeError("the simulation awaits handle() on its own loop")


class _Counting:
    def __init__(self, handler: TaskHandler, tracker: Tracker) -> None:
        self._handler = handler
        self._tracker = tracker

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._handler, attr)

    async def process_records(self, records: list[Any], owner: str = "direct", *args: Any, **kwargs: Any) -> Any:
        for record in records:
            if isinstance(record, Task):
                self._tracker.delivered(attempt_key(record))
        report = await self._handler.process_records(records, owner, *args, **kwargs)
        current = CURRENT.get(None)
        manager = self._handler.async_manager
        if current is None or current.name not in self._tracker.release_failed:
            for task in report.not_committed:  # handed back: its lease must not hold up the redelivery
                if task.id and not (manager and manager.is_handed_off(task.id)):  # still running keeps it
                    self._tracker.handed_back.add((task.key, owner))
        return report


class SimContext:
    def __init__(self, request_id: str, deadline: float) -> None:
        self.aws_request_id = request_id
        self.deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - asyncio.get_running_loop().time()) * 1000)


class TrackedStorage(InMemoryAdapter):
    """The store with the checker's eyes on its writes: no outcome lands over a later attempt,
    no reset wipes a live lease, no retry due later waits as `processing`; and it keeps the
    failed rows an operator may re-drive."""

    def __init__(self, tracker: Tracker, index_lag: float = 0.0) -> None:
        super().__init__()
        self.tracker = tracker
        self.failed: list[str] = []
        """Ids of rows that became failed, in order (the operator's candidates)."""
        self.index_lag = index_lag
        self._written: dict[str, float] = {}
        """When each open row was last written (its index entries show `index_lag` later)."""

    def _put(self, task: Task, keep_for: Any = None, **update: object) -> Task:
        row = super()._put(task, keep_for, **update)
        if row.status.is_terminal:
            self._written.pop(row.key, None)
        else:
            self._written[row.key] = self.tracker.now()
        return row

    async def take_leases(self, tasks: Any, owner: str, now: Any, expired_before: Any, until: Any = None) -> set[str]:
        held = {t.key: lease[0] for t in tasks if (lease := self._leases.get(t.key)) is not None
                and lease[0] != owner and lease[1] >= now}
        leased = await super().take_leases(tasks, owner, now, expired_before, until)
        for key in leased:  # leased again (a retry of its hand-back): a new lease, to its deadline
            self.tracker.handed_back.discard((key, owner))
            if key in self.tracker.cx_runs or key in self.tracker.cancels:
                self.tracker.leased_at[key] = self.tracker.now()
        for key, holder in held.items():
            if key not in leased and (key, holder) in self.tracker.handed_back:
                self.tracker.violate(f"task {key}: a lease its holder handed back held up the redelivery")
        return leased

    async def claim_mature(self, now: Any, limit: int) -> list[Task]:
        with self._index_view():
            return await super().claim_mature(now, limit)

    async def recover_stale(self, processing_before: Any, now: Any) -> int:
        with self._index_view():
            return await super().recover_stale(processing_before, now)

    @contextmanager
    def _index_view(self) -> Iterator[None]:
        """What an eventually consistent index shows: open rows but those written just now."""
        horizon = self.tracker.now() - self.index_lag
        hidden = {k for k in self._open if self._written.get(k, horizon) > horizon}
        self._open -= hidden
        try:
            yield
        finally:
            self._open |= {k for k in hidden if k in self._rows and not self._rows[k].status.is_terminal}

    async def reset_to_scheduled(self, tasks: Any) -> None:
        current = [row for t in tasks if t.key in self._rows and _same_attempt(row := self._rows[t.key], t)]
        self.tracker.resetting(current)
        now = self.tracker.clock.now()
        live = {t.key for t in tasks if (lease := self._leases.get(t.key)) is not None and lease[1] >= now}
        await super().reset_to_scheduled(tasks)
        for key in live:
            if self._rows[key].status is TaskStatus.SCHEDULED:
                self.tracker.violate(f"task {key} reset to scheduled while a run held its lease")

    def _finish(self, rows: list[Task], keep_for: Any = None) -> None:
        before = {r.key: self._rows[r.key] for r in rows if r.key in self._rows}
        super()._finish(rows, keep_for)
        for row in rows:
            self._landed(before.get(row.key), row)

    async def mark_executed(self, tasks: Any, at: Any, keep_for: Any = None) -> None:
        before = {t.key: self._rows[t.key] for t in tasks if t.key in self._rows}
        await super().mark_executed(tasks, at, keep_for)
        for task in tasks:
            self._landed(before.get(task.key), task)

    def _landed(self, before: Task | None, outcome: Task) -> None:
        after = self._rows.get(outcome.key)
        if after is None or not after.status.is_terminal:
            return
        if before is not None and not before.status.is_terminal and before.retry_count > after.retry_count:
            self.tracker.violate(f"task {outcome.key}: attempt {after.retry_count}'s outcome landed over "
                                 f"attempt {before.retry_count} (a re-drive or retry undone)")
        if after.status is TaskStatus.FAILED and (before is None or before.status is not TaskStatus.FAILED):
            self.failed.append(outcome.key)

    async def schedule_retry(self, tasks: Any) -> list[Task]:
        written = await super().schedule_retry(tasks)
        now = self.tracker.clock.now()
        for task in written:
            if task.status is TaskStatus.PROCESSING and task.execute_at is not None and task.execute_at > now:
                self.tracker.violate(f"task {task.key}: its retry, due later, waits as processing "
                                     "(only stale recovery would send it)")
        return written


class TrackedProjections(InMemoryProjectionProvider):
    def __init__(self, tracker: Tracker) -> None:
        super().__init__()
        self.tracker = tracker

    async def upsert_projections(self, entries: Any) -> None:
        await super().upsert_projections(entries)
        for entry in entries:
            stored = self.get(entry.task_id)
            if stored is not None:
                self.tracker.projected(entry.task_id, stored.status.rank)


class ReportingQueue:
    """Tells the checker which tasks each publish reported as written to its caller."""

    def __init__(self, inner: Any, tracker: Tracker) -> None:
        self.inner = inner
        self.tracker = tracker

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    async def publish(self, tasks: list[Task]) -> None:
        try:
            await self.inner.publish(tasks)
        except QueueWriteError as exc:
            refused = set(exc.task_ids) | set(exc.rejected)
            self.tracker.reported_written([t for t in tasks if t.key not in refused])
            raise
        self.tracker.reported_written(list(tasks))


def _same_attempt(row: Task, task: Task) -> bool:
    return (row.execution_stats.retry_count, row.execution_stats.deferrals) == (
        task.execution_stats.retry_count, task.execution_stats.deferrals)


class SlowClaims:
    """The store as the sweeper meets it on DynamoDB: a wave's claims (a conditional update per
    row) take `seconds`, so a backlog makes a sweep long."""

    def __init__(self, inner: Any, seconds: float) -> None:
        self.inner = inner
        self.seconds = seconds

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    async def claim_mature(self, now: Any, limit: int) -> list[Task]:
        await asyncio.sleep(self.seconds)
        claimed: list[Task] = await self.inner.claim_mature(now, limit)
        return claimed
