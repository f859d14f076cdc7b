"""The commit pipeline: one ordered list of small steps that write what a batch produced.

Each step has one interface (`await step(batch)`) and works on the batch's outcomes, reading
and moving their verdicts. The order is what makes a crash anywhere, followed by redelivery,
converge to the same state: effects (retries, children, flow barriers and joins) come before
terminal marks, and every write is idempotent (set-if-absent inserts, conditional transitions,
derived ids). Projections, stats and lifecycle events come last and never fail a batch.

Per-task isolation: a write that can never succeed for one task (too large, not JSON) raises
TaskRejectedError naming it; `CommitBatch.isolate` takes that task out, finalises it as a
recorded, bounded failure, and writes the rest. Only transient failures (throttling, timeouts)
fail the batch, which is then redelivered and replays into the same state.

Example, a step of your own (it runs after the built-in ones):

    class AuditStep:
        async def __call__(self, batch: CommitBatch) -> None:
            for outcome in batch.of(Verdict.FAILED):
                await audit_log.write(outcome.key, outcome.error)

    handler = TaskHandler(..., extra_commit_steps=[AuditStep()])
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from tq_cloud.clock import Clock
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.core.retry import retry_delay_ms
from tq_cloud.domain.limits import bounded_error, clamped_delay, json_safe_details
from tq_cloud.domain.outcomes import Outcome, RunResult, Verdict
from tq_cloud.domain.tally import BatchTally
from tq_cloud.domain.task import ATTEMPT_ERROR_CHARS, ATTEMPTS_KEPT, FailedAttempt, Task
from tq_cloud.errors import TaskRejectedError

if TYPE_CHECKING:
    from tq_cloud.domain.flows import StartedFlow

Rejected = dict[str, str]


class CommitStep(Protocol):
    async def __call__(self, batch: CommitBatch) -> None:
        """Write this step's part of the batch; raise only for transient failures."""
        ...


@dataclass(slots=True)
class CommitBatch:
    """What one batch (or one late async task) commits, and how far it got."""

    decider: Decider
    outcomes: list[Outcome]
    new_tasks: list[Task]
    flows: list[StartedFlow]
    now: datetime
    started_at: datetime
    consumer_id: str | None
    handed_off: list[Task] = field(default_factory=list)
    committed_rows: list[Task] = field(default_factory=list)
    rejected_new: dict[str, tuple[Task, str]] = field(default_factory=dict)
    """New tasks (children, steps, joins) that could never be written, recorded as failed."""
    tally: BatchTally | None = None
    """What the batch did per queue and type (TallyStep): EMF metrics and the kept counters."""

    def of(self, *verdicts: Verdict) -> list[Outcome]:
        return [o for o in self.outcomes if o.verdict in verdicts]

    @property
    def final(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.verdict is not None and o.verdict.is_final]

    def reject(self, outcome: Outcome, reason: str) -> None:
        self.decider.finalise(outcome, reason)

    async def isolate(self, items: Sequence[Task], write: Callable[[list[Task]], Awaitable[Rejected | None]]
                      ) -> Rejected:
        """Write `items`; a task whose write raises TaskRejectedError is taken out (and
        returned with the reason) and the rest written again (every write is idempotent)."""
        rejected: Rejected = {}
        pending = list(items)
        while pending:
            try:
                rejected |= await write(pending) or {}
                return rejected
            except TaskRejectedError as exc:
                if exc.task_id is None or exc.task_id not in {t.key for t in pending}:
                    raise
                rejected[exc.task_id] = str(exc)
                pending = [t for t in pending if t.key != exc.task_id]
        return rejected


class Decider:
    """Turns outcomes into verdicts: retried with back-off while retries are left, else a
    final failure, stored when the task has a row, its executor keeps failures, the executor
    failed it for good, or `history` keeps every outcome."""

    def __init__(self, registry: TaskQueuesManager, clock: Clock, *, history: bool = False) -> None:
        self.registry = registry
        self.clock = clock
        self.history = history

    def decide(self, outcomes: Sequence[Outcome], now: datetime) -> None:
        for outcome in outcomes:
            if outcome.verdict is not None:
                continue
            task = outcome.task
            if outcome.succeeded:
                outcome.verdict = Verdict.EXECUTED
            elif outcome.cancel_reason is not None:
                outcome.verdict = Verdict.CANCELLED
            elif not outcome.consume_attempt:
                delay = timedelta(seconds=clamped_delay(outcome.retry_delay))
                outcome.verdict, outcome.retry = Verdict.RETRY, self._retry_copy(outcome, now + delay, 0, 1)
            elif outcome.retryable and (used := task.retry_count - task.execution_stats.redrive_base) < \
                    self.registry.max_retries(task.retries, task.queue_id, task.type):
                delay = timedelta(milliseconds=retry_delay_ms(task.retry_after, used))
                outcome.verdict, outcome.retry = Verdict.RETRY, self._retry_copy(outcome, now + delay, 1, 0)
            else:
                kept = outcome.for_good or self.history or self.stored(task)
                outcome.verdict = Verdict.FAILED if kept else Verdict.DISCARDED

    def stored(self, task: Task) -> bool:
        executor = self.registry.get_executor(task.queue_id, task.type)
        return task.force_store or bool(executor and (executor.options.store_on_failure or executor.options.has_row))

    def finalise(self, outcome: Outcome, reason: str) -> None:
        """A task whose commit can never be written: a final, stored failure with the reason
        (failure rows are bounded, so this one can always be written)."""
        outcome.verdict, outcome.retry, outcome.succeeded = Verdict.FAILED, None, False
        outcome.error, outcome.error_type, outcome.retryable = bounded_error(reason), "TaskRejectedError", False

    def _retry_copy(self, outcome: Outcome, execute_at: datetime, attempts: int, deferrals: int) -> Task:
        task = outcome.task
        stats = failed_stats(outcome).model_copy(update={
            "retry_count": task.retry_count + attempts,
            "deferrals": task.execution_stats.deferrals + deferrals})
        return task.model_copy(update={"execute_at": execute_at, "execution_stats": stats,
                                       "force_store": self.stored(task), "updated_at": self.clock.now()})


def failed_stats(outcome: Outcome) -> Any:
    """The task's execution stats with this outcome's error and details, and the run among
    its last failed attempts."""
    stats = outcome.task.execution_stats
    details = json_safe_details({**stats.details, **(outcome.details or {})}) or {}
    update: dict[str, Any] = {"last_error": outcome.error, "last_error_type": outcome.error_type, "details": details}
    if outcome.consume_attempt:  # a deferral (a limit, an ordered key's turn) is not a failed run
        run = FailedAttempt(attempt=outcome.task.retry_count + 1, started_at=outcome.started_at,
                            finished_at=outcome.finished_at, error_type=outcome.error_type,
                            error=(outcome.error or "")[:ATTEMPT_ERROR_CHARS] or None)
        update["attempts"] = (*stats.attempts, run)[-ATTEMPTS_KEPT:]
    return stats.model_copy(update=update)


class CommitPipeline:
    """Runs the steps in order over a run's result. `steps` is the one list that says the order."""

    def __init__(self, decider: Decider, clock: Clock, steps: Sequence[CommitStep]) -> None:
        self.decider = decider
        self.clock = clock
        self.steps = list(steps)

    async def commit(self, result: RunResult, consumer_id: str | None = None,
                     started_at: datetime | None = None) -> CommitBatch:
        now = self.clock.now()
        self.decider.decide(result.outcomes, now)
        batch = CommitBatch(self.decider, result.outcomes, result.new_tasks, result.flows, now,
                            started_at or now, consumer_id, result.handed_off, result.committed_rows)
        for step in self.steps:
            await step(batch)
        return batch
