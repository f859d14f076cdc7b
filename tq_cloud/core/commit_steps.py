"""The engine's own commit steps: retries, new tasks, terminal marks and stats.

Each reads the verdicts on the batch's outcomes and writes its part; a task whose write can
never succeed becomes that task's recorded failure (see `CommitBatch.isolate`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from tq_cloud.core.commit import CommitBatch, failed_stats
from tq_cloud.core.routing import TaskRouter
from tq_cloud.core.stats import StatsBook
from tq_cloud.domain.outcomes import Outcome, RunResult, Verdict
from tq_cloud.domain.tally import BatchTally
from tq_cloud.domain.task import Task
from tq_cloud.ports.counters import TaskCounters
from tq_cloud.ports.storage import TaskStorage

log = logging.getLogger("tq_cloud.commit")


class RetriesStep:
    """Retry copies first: once a retry is written, nothing later can lose the task."""

    def __init__(self, router: TaskRouter) -> None:
        self.router = router

    async def __call__(self, batch: CommitBatch) -> None:
        retried = {o.key: o for o in batch.of(Verdict.RETRY) if o.retry is not None}
        if not retried:
            return
        copies = [o.retry for o in retried.values() if o.retry is not None]
        rejected = await batch.isolate(copies, self.router.dispatch_retries)
        for key, reason in rejected.items():
            batch.reject(retried[key], f"its retry can never be written: {reason}")


class NewTasksStep:
    """Children, flow steps and sentinels. One that can never be written (a limit that only
    the commit could know) is recorded as a failed task of its own; the rest go out."""

    def __init__(self, router: TaskRouter, storage: TaskStorage) -> None:
        self.router = router
        self.storage = storage

    async def __call__(self, batch: CommitBatch) -> None:
        if not batch.new_tasks:
            return

        async def dispatch(tasks: list[Task]) -> dict[str, str]:
            return (await self.router.dispatch(tasks, strict=False, prepared=True))[1]

        rejected = await batch.isolate(batch.new_tasks, dispatch)
        if not rejected:
            return
        by_id = {t.key: t for t in batch.new_tasks}
        batch.rejected_new = {key: (by_id[key], reason) for key, reason in rejected.items() if key in by_id}
        rows = [task.model_copy(update={"execution_stats": task.execution_stats.model_copy(update={
            "last_error": reason, "last_error_type": "TaskRejectedError"})})
            for task, reason in batch.rejected_new.values()]
        await self.storage.mark_failed(rows, batch.now)
        log.error("%d new tasks could never be written; recorded as failed: %s", len(rows),
                  ", ".join(batch.rejected_new))


class TerminalStep:
    """Final marks, after every effect: failed and ignored rows, and executed rows of stored
    tasks (of every task with `history`). An executed row too large with its result is kept
    without the result (the task still succeeded; the drop is recorded on it)."""

    def __init__(self, storage: TaskStorage, *, history: bool = False) -> None:
        self.storage = storage
        self.history = history

    async def __call__(self, batch: CommitBatch) -> None:
        failed = [o.task.model_copy(update={"execution_stats": failed_stats(o)}) for o in batch.of(Verdict.FAILED)]
        if failed:
            await self.storage.mark_failed(failed, batch.now)
        ignored = batch.of(Verdict.IGNORED)
        for group in _by_reason(ignored):
            await self.storage.mark_ignored([o.task for o in group], group[0].error or "ignored", batch.now)
        cancelled = batch.of(Verdict.CANCELLED)
        if cancelled:
            await self.storage.mark_cancelled([o.task.model_copy(update={"execution_stats": o.task.execution_stats
                                               .model_copy(update={"cancel_reason": o.cancel_reason})})
                                               for o in cancelled], batch.now)
        succeeded = batch.of(Verdict.EXECUTED)
        stored = [o for o in succeeded if o.task.force_store]
        for keep_for, group in _by_keep(stored, batch).items():
            await self._executed({o.key: o for o in group}, batch, self.storage.mark_executed, keep_for)
        if self.history:
            await self._executed({o.key: o for o in succeeded if not o.task.force_store}, batch,
                                 self.storage.keep_history)

    async def _executed(self, executed: dict[str, Outcome], batch: CommitBatch, write: ExecutedWrite,
                        keep_for: timedelta | None = None) -> None:
        if not executed:
            return

        async def mark(rows: list[Task]) -> None:
            await write(rows, batch.now, keep_for)

        rejected = await batch.isolate([_executed_row(o) for o in executed.values()], mark)
        if rejected:
            slim = [_executed_row(executed[k], dropped=f"the executed row with its result was too large: {r}")
                    for k, r in rejected.items()]
            await write(slim, batch.now, keep_for)


ExecutedWrite = Callable[[Sequence[Task], datetime, "timedelta | None"], Awaitable[None]]


def _by_keep(outcomes: Sequence[Outcome], batch: CommitBatch) -> dict[timedelta | None, list[Outcome]]:
    """Executed outcomes by how long their rows are kept (their executor's `keep_result`)."""
    groups: dict[timedelta | None, list[Outcome]] = {}
    for outcome in outcomes:
        task = outcome.task
        executor = batch.decider.registry.get_executor(task.queue_id, task.type)
        groups.setdefault(executor.options.keep_result if executor else None, []).append(outcome)
    return groups


def _executed_row(outcome: Outcome, dropped: str | None = None) -> Task:
    stats = outcome.task.execution_stats.model_copy(update={"result_dropped": dropped or outcome.result_dropped})
    return outcome.task.model_copy(update={"execution_result": None if dropped else outcome.result,
                                           "execution_stats": stats})


def _by_reason(outcomes: Sequence[Outcome]) -> list[list[Outcome]]:
    groups: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        groups.setdefault(outcome.error or "", []).append(outcome)
    return list(groups.values())


class StatsStep:
    """Counters, the discarded-task notification (naming the tasks), per-queue stats."""

    def __init__(self, stats: StatsBook) -> None:
        self.stats = stats

    async def __call__(self, batch: CommitBatch) -> None:
        discarded = batch.of(Verdict.DISCARDED)
        if discarded:
            await self.stats.discarded([o.task for o in discarded])
        await self.stats.batch(RunResult(outcomes=batch.outcomes, handed_off=batch.handed_off),
                               batch.consumer_id, batch.started_at, _now(batch))


class TallyStep:
    """The batch's tally (`batch.tally`), added to the kept counters when there are some. Last
    of the pipeline, after every write of the commit: a counter write that fails is logged and
    the batch stays committed (a count is not worth running its tasks again)."""

    def __init__(self, counters: TaskCounters | None) -> None:
        self.counters = counters

    async def __call__(self, batch: CommitBatch) -> None:
        batch.tally = BatchTally.of(batch.outcomes)
        if self.counters is None or not batch.tally:
            return
        try:
            await self.counters.add(batch.tally, batch.now)
        except Exception as exc:  # noqa: BLE001 - the commit stands; the count is what is lost, and said
            log.warning("the kept counters missed a batch of %d outcomes: %r", len(batch.outcomes), exc)


def _now(batch: CommitBatch) -> datetime:
    return batch.decider.clock.now()
