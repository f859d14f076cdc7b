"""`ExecutorActions`: how an executor reports outcomes and adds work.

Nothing is written while the executor runs; actions are recorded and committed together by
the commit pipeline, so a crash mid-batch leaves nothing half-done and a redelivery replays
cleanly. Every limit a child task must meet is checked here, in the executor's own call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tq_cloud.clock import Clock
from tq_cloud.domain.limits import bounded_error, checked_delay, checked_result, json_safe_details
from tq_cloud.domain.outcomes import Outcome
from tq_cloud.domain.task import Task
from tq_cloud.errors import FlowsNotConfiguredError, NonRetryableError, TaskNotInScopeError
from tq_cloud.ids import derived_id

if TYPE_CHECKING:
    from tq_cloud.core.control import RunControl
    from tq_cloud.core.extensions import FlowStarting
    from tq_cloud.core.flow_results import FlowResultsReader
    from tq_cloud.domain.flows import FlowConfig, FlowStep, StartedFlow
    from tq_cloud.ports.barrier import FlowBarrierProvider

log = logging.getLogger("tq_cloud.actions")
_TASK_LOG = logging.getLogger("tq_cloud.task")

TaskCheck = Callable[[Task], Task]
"""Returns the routed copy of a task, or raises TaskRejectedError naming the broken limit."""


@dataclass(slots=True)
class RunRecorder:
    """Everything the executors of one batch reported."""

    clock: Clock
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    new_tasks: list[Task] = field(default_factory=list)
    flows: list[StartedFlow] = field(default_factory=list)
    started_at: dict[str, datetime] = field(default_factory=dict)
    batch_started_at: datetime | None = None
    deadline: datetime | None = None
    """When the run must be over (a Lambda invocation's end): no task starts whose time limit passes it."""
    budget: float | None = None
    """Seconds the whole invocation had: a time limit longer than that can never be met."""

    def seconds_left(self) -> float | None:
        return None if self.deadline is None else (self.deadline - self.clock.now()).total_seconds()

    def record(
        self,
        task: Task,
        *,
        succeeded: bool = False,
        result: Any = None,
        error: BaseException | str | None = None,
        details: Mapping[str, Any] | None = None,
        retryable: bool = True,
        for_good: bool = False,
        retry_delay: float | None = None,
        consume_attempt: bool = True,
        cancelled: str | None = None,
    ) -> Outcome:
        """Record a task's outcome, bounded: error text truncated, details JSON-safe and
        capped, result JSON or dropped with the reason (the task still succeeds). `cancelled`
        (a reason) ends the task cancelled."""
        now = self.clock.now()
        if cancelled is not None:
            cancelled = bounded_error(cancelled) or ""
            error = f"cancelled: {cancelled}" if cancelled else "cancelled"
        for_good = for_good or isinstance(error, NonRetryableError)
        message = error_type = None
        if not succeeded:
            if isinstance(error, BaseException):
                message, error_type = (str(error) or type(error).__name__), type(error).__name__
            else:
                message = error or "task failed"
        stored, dropped = checked_result(result) if succeeded else (None, None)
        if dropped:
            log.warning("task %s succeeded but its result was dropped: %s", task.key, dropped)
        outcome = Outcome(
            task=task, succeeded=succeeded,
            started_at=self.started_at.get(task.key) or self.batch_started_at or now, finished_at=now,
            result=stored, result_dropped=dropped, error=bounded_error(message), error_type=error_type,
            details=json_safe_details(dict(details)) if details else None, retryable=retryable and not for_good,
            for_good=for_good,
            retry_delay=retry_delay, consume_attempt=consume_attempt, cancel_reason=cancelled)
        self.outcomes[task.key] = outcome
        return outcome


class ExecutorActions:
    """Given to an executor with the task(s) it may report on. Children and flows get ids
    derived from the parent, so a replayed executor adds the same tasks, not new ones.

    Example:
        @app.task("email", "send", retries=3)
        async def send(task: Task[Email], actions: ExecutorActions) -> None:
            if not task.payload.to.endswith(".test"):
                actions.fail(task, "refused domain", retry=False)   # failed for good
                return
            actions.add_tasks([Task(type="audit", queue_id="email", payload={"to": task.payload.to})])
            actions.success(task, {"sent": True})
    """

    def __init__(
        self,
        recorder: RunRecorder,
        scope: Mapping[str, Task],
        parent_key: str | Callable[[], str],
        *,
        check_task: TaskCheck,
        flow_starter: FlowStarting | None,
        log_context: Mapping[str, str] | None = None,
        barriers: FlowBarrierProvider | None = None,
        control: RunControl | None = None,
    ) -> None:
        self._recorder = recorder
        self._control = control
        self._scope = scope
        self._parent_key_source = parent_key
        self._check_task = check_task
        self._flow_starter = flow_starter
        self._barriers = barriers
        self._log_context = dict(log_context) if log_context else None
        self._children = 0
        # the task's context reaches records through LogContextFilter (bound by the runner); as
        # `extra`, a producer's key named like a record field ("name", "message") would raise
        self.log = logging.LoggerAdapter(_TASK_LOG, {})

    @property
    def _parent_key(self) -> str:
        """Computed on first use: a batch's key sorts all its ids, which only children need."""
        if callable(self._parent_key_source):
            self._parent_key_source = self._parent_key_source()
        return self._parent_key_source

    def _own(self, task: Task) -> Task | None:
        """The task as delivered (payload as sent), or None if it already has an outcome."""
        key = task.id
        if key is None or key not in self._scope:
            raise TaskNotInScopeError(
                f"task {key!r} ({task.type}) was not given to this executor; report outcomes only "
                "for the task(s) you received"
            )
        if key in self._recorder.outcomes:
            log.warning("task %s already reported %s; ignoring the second outcome", key,
                        "success" if self._recorder.outcomes[key].succeeded else "failure")
            return None
        return self._scope[key]

    def success(self, task: Task, result: Any = None) -> None:
        """The task succeeded. A result that is not JSON or over 256 KB is dropped (the drop
        is recorded on the task, which still succeeds)."""
        own = self._own(task)
        if own is not None:
            self._recorder.record(own, succeeded=True, result=result)

    def fail(
        self, task: Task, error: BaseException | str | None = None, stats: Mapping[str, Any] | None = None,
        *, retry: bool = True,
    ) -> None:
        """The task failed: retried while it has retries left, unless `retry=False`, which
        fails it for good: stored as failed with `error` (whatever the executor's
        `store_on_failure`), listed by `tq-cloud tasks list --status failed`, re-drivable.
        Raising NonRetryableError does the same."""
        own = self._own(task)
        if own is not None:
            self._recorder.record(own, error=error, details=stats, for_good=not retry)

    def is_cancelled(self, task: Task) -> bool:
        """Whether `handler.cancel` asked this run to stop (free to ask: it reads a flag). The
        run may stop (`raise TaskCancelledError(...)` ends the task cancelled) or go on;
        whatever it reports wins. Cancels asked in another process reach a run of a
        `cancellable` executor within a few seconds, and any run that records progress."""
        self._in_scope(task)
        return self._control is not None and self._control.is_cancelled(task.key)

    def progress(self, task: Task, done: float, note: str | None = None) -> None:
        """How far the run is, from 0.0 to 1.0, with an optional note: recorded on the task's
        row (at most once per 5 s per task) for `handler.find`, `tq-cloud tasks show` and the
        console. A task without a row (no `keep_result`, `cancellable`, `force_store`) has
        nowhere to show it. Raises InvalidProgressError for a value outside 0.0 to 1.0."""
        self._in_scope(task)
        if self._control is not None:
            self._control.progress(self._scope[task.key], done, note)

    def _in_scope(self, task: Task) -> None:
        if task.id is None or task.id not in self._scope:
            raise TaskNotInScopeError(f"task {task.id!r} ({task.type}) was not given to this executor")

    def defer(self, task: Task, seconds: float, reason: str = "deferred") -> None:
        """Run the task again after `seconds`, without using one of its attempts. Raises
        InvalidDelayError for a delay that is not a finite number from 0 to 366 days (a
        computed Retry-After gone wrong): raised here, it fails only this task."""
        seconds = checked_delay(seconds, f"defer of task {task.id!r}")
        own = self._own(task)
        if own is not None:
            self._recorder.record(own, error=reason, retry_delay=seconds, consume_attempt=False)

    def add_tasks(self, tasks: Iterable[Task]) -> list[Task]:
        """Schedule tasks after this batch commits. Returns the children with their ids.
        Raises TaskRejectedError (naming the task and the limit) for a child that breaks a
        limit: a payload that does not match its executor's model, too large, not JSON, an id
        or partition key over 256 characters."""
        added = [self._check_task(self._adopt(task)) for task in tasks]
        self._recorder.new_tasks.extend(added)
        return added

    def _adopt(self, task: Task) -> Task:
        self._children += 1
        update: dict[str, Any] = {}
        if task.id is None:
            update["id"] = derived_id(self._parent_key, "child", self._children)
        if self._log_context:
            merged = {**self._log_context, **(task.metadata.log_context or {})}
            update["metadata"] = task.metadata.model_copy(update={"log_context": merged})
        return task.model_copy(update=update) if update else task.model_copy()

    def flow_results(self, task: Task) -> FlowResultsReader:
        """A join task's view of its flow: how it ended, its counts, and its steps' results
        read a page at a time (`async for step in actions.flow_results(task).steps()`)."""
        from tq_cloud.core.flow_results import FlowResultsReader

        return FlowResultsReader.of(task.payload, self._barriers)

    def start_flow(self, steps: Sequence[FlowStep | Mapping[str, Any]], config: FlowConfig) -> str:
        """Fan out `steps`; when all are final, a join task is dispatched; it reads the steps'
        results with `flow_results`."""
        if self._flow_starter is None:
            raise FlowsNotConfiguredError()
        self._children += 1
        started = self._flow_starter.start(
            flow_id=derived_id(self._parent_key, "flow", self._children),
            steps=steps,
            config=config,
            log_context=self._log_context,
        )
        started.tasks = [self._check_task(task) for task in started.tasks]
        self._recorder.new_tasks.extend(started.tasks)
        self._recorder.flows.append(started)
        return started.flow_id
