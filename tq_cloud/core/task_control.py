"""Results by id, and cancelling tasks and flows: what `handler.result`, `handler.cancel` and
`handler.cancel_flow` do.

A result is read from the task's row (its executor's `keep_result` gives every task one, from
the moment it is sent), waiting with back-off (50 ms, doubling to 2 s) until the timeout: on
DynamoDB each look is one consistent GetItem. A cancel is one conditional write to the row
(see `TaskStorage.cancel`); a task cancelled before it ran has its cancel committed as an
outcome (flow barrier, projection, lifecycle event), as any other final outcome is.
"""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import datetime
from typing import Any

from tq_cloud.clock import Clock
from tq_cloud.core.commit import CommitPipeline
from tq_cloud.core.control import RunControl
from tq_cloud.core.extensions import FlowClosing
from tq_cloud.domain.outcomes import Outcome, RunResult
from tq_cloud.domain.task import Task, TaskStatus
from tq_cloud.errors import ResultNotKeptError, TaskCancelledError, TaskFailedError
from tq_cloud.ids import derived_id, new_id
from tq_cloud.ports.barrier import BarrierState
from tq_cloud.ports.storage import CancelOutcome, TaskStorage

log = logging.getLogger("tq_cloud.control")

FIRST_LOOK = 0.05
LONGEST_WAIT = 2.0
CANCEL_WAVE = 100


class TaskControl:
    def __init__(self, storage: TaskStorage, clock: Clock, pipeline: CommitPipeline, control: RunControl,
                 flows: FlowClosing | None) -> None:
        self.storage = storage
        self.clock = clock
        self.pipeline = pipeline
        self.control = control
        self.flows = flows

    async def result(self, task_id: str, timeout: float = 0.0) -> Any:  # noqa: ASYNC109 - handler.result's
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not math.isfinite(timeout) \
                or timeout < 0:
            raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        started = self.clock.now()
        wait = FIRST_LOOK
        while True:
            found = await self.storage.get([task_id])
            if not found:
                raise ResultNotKeptError(f"no task {task_id!r} is stored: an unknown id, or a task whose executor "
                                         "keeps no result (give it keep_result=timedelta(...))")
            row = found[0]
            if row.status.is_terminal:
                return _final(row, self.clock.now())
            left = timeout - (self.clock.now() - started).total_seconds()
            if left <= 0:
                raise TimeoutError(f"task {task_id!r} is still {row.status.value} after {timeout:g} s")
            await self.clock.sleep(min(wait, left))
            wait = min(wait * 2, LONGEST_WAIT)

    async def cancel(self, task_id: str, reason: str) -> bool:
        now, cancel_id = self.clock.now(), new_id()
        outcome = await self.storage.cancel(task_id, reason, now, cancel_id)
        if outcome is CancelOutcome.REQUESTED:
            self.control.request(task_id, reason)
            return True
        if outcome is CancelOutcome.CANCELLED:
            await self._settle([task_id], now)
            return True
        if outcome is CancelOutcome.FINISHED:  # perhaps this call's own cancel, its answer lost and retried
            settled = await self._settle([task_id], now, only_unsettled=True, cancel_id=cancel_id)
            return any(row.execution_stats.cancel_id == cancel_id for row in settled)
        return self.control.request(task_id, reason)  # a task without a row, running in this process

    async def cancel_flow(self, flow_id: str, reason: str) -> bool:
        if self.flows is None:
            return False
        snapshot = await self.flows.barriers.get(flow_id)
        if snapshot is None or not await self.flows.barriers.close(flow_id, BarrierState.CANCELLED):
            return False
        now = self.clock.now()
        steps = [derived_id(flow_id, "step", i) for i in range(snapshot.total_steps)]
        cancelled: list[Task] = []
        for start in range(0, len(steps), CANCEL_WAVE):
            wave = steps[start:start + CANCEL_WAVE]
            outcomes = await asyncio.gather(*(self.storage.cancel(i, reason, now) for i in wave))
            ids = [i for i, o in zip(wave, outcomes, strict=True) if o is CancelOutcome.CANCELLED]
            cancelled += await self._settle(ids, now)
        await self.flows.cancelled(snapshot, next((t.flow_meta for t in cancelled if t.flow_meta), None))
        return True

    async def _settle(self, ids: list[str], now: datetime, only_unsettled: bool = False,
                      cancel_id: str | None = None) -> list[Task]:
        """Commit the cancel of rows cancelled before they ran: their flow barriers, projections
        and lifecycle events (every write of the pipeline is idempotent, so doing it again after
        a failure is safe). `only_unsettled`: of a row cancelled earlier, only what a lost commit
        could leave stuck (a flow step, a projection), unless the cancel was `cancel_id`'s."""
        rows = [r for r in await self.storage.get(ids) if r.status is TaskStatus.CANCELLED] if ids else []
        if only_unsettled:
            rows = [r for r in rows if r.flow_meta is not None or r.entity is not None
                    or r.execution_stats.cancel_id == cancel_id]
        if rows:
            reason = [r.execution_stats.cancel_reason or "" for r in rows]
            await self.pipeline.commit(RunResult(outcomes=[
                Outcome(task=row, succeeded=False, started_at=now, finished_at=now, retryable=False,
                        error=f"cancelled: {why}" if why else "cancelled", cancel_reason=why)
                for row, why in zip(rows, reason, strict=True)]), "cancel")
        return rows


def _final(row: Task, now: datetime) -> Any:
    if row.expires_at is not None and row.expires_at <= now:
        raise ResultNotKeptError(f"task {row.key!r} finished, and its row expired at {row.expires_at.isoformat()}")
    stats = row.execution_stats
    if row.status is TaskStatus.EXECUTED:
        if stats.result_dropped:
            raise ResultNotKeptError(f"task {row.key!r} succeeded, but its result was not kept: {stats.result_dropped}")
        return row.execution_result
    if row.status is TaskStatus.CANCELLED:
        raise TaskCancelledError(stats.cancel_reason or "", row.key)
    error = stats.ignored_reason if row.status is TaskStatus.IGNORED else stats.last_error
    raise TaskFailedError(row.key, error or stats.last_error, stats.last_error_type, row.status.value)

