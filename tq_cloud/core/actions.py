"""`ExecutorActions`: how an executor reports outcomes and adds work.

Nothing is written while the executor runs; actions are recorded and committed together by
post-processing, so a crash mid-batch leaves nothing half-done and a redelivery replays cleanly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tq_cloud.clock import Clock
from tq_cloud.core.models import Task
from tq_cloud.core.outcomes import Outcome, checked_result
from tq_cloud.errors import FlowsNotConfiguredError, TaskNotInScopeError
from tq_cloud.ids import derived_id

if TYPE_CHECKING:
    from tq_cloud.flows.models import FlowConfig, FlowStep, StartedFlow
    from tq_cloud.flows.starter import FlowStarter

log = logging.getLogger("tq_cloud.actions")

TaskCheck = Callable[[Task], None]


@dataclass(slots=True)
class RunRecorder:
    """Everything the executors of one batch reported."""

    clock: Clock
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    new_tasks: list[Task] = field(default_factory=list)
    flows: list[StartedFlow] = field(default_factory=list)
    started_at: dict[str, datetime] = field(default_factory=dict)
    batch_started_at: datetime | None = None


class ExecutorActions:
    """Given to an executor with the task(s) it may report on. Children and flows get ids
    derived from the parent, so a replayed executor adds the same tasks, not new ones."""

    def __init__(
        self,
        recorder: RunRecorder,
        scope: Mapping[str, Task],
        parent_key: str | Callable[[], str],
        *,
        check_task: TaskCheck,
        flow_starter: FlowStarter | None,
        log_context: Mapping[str, str] | None = None,
    ) -> None:
        self._recorder = recorder
        self._scope = scope
        self._parent_key_source = parent_key
        self._check_task = check_task
        self._flow_starter = flow_starter
        self._log_context = dict(log_context) if log_context else None
        self._children = 0
        self.log = logging.LoggerAdapter(logging.getLogger("tq_cloud.task"), self._log_context or {})

    @property
    def _parent_key(self) -> str:
        """Computed on first use: a batch's key sorts all its ids, which only children need."""
        if callable(self._parent_key_source):
            self._parent_key_source = self._parent_key_source()
        return self._parent_key_source

    def _own(self, task: Task) -> str:
        key = task.id
        if key is None or key not in self._scope:
            raise TaskNotInScopeError(
                f"task {key!r} ({task.type}) was not given to this executor; report outcomes only "
                "for the task(s) you received"
            )
        if key in self._recorder.outcomes:
            log.warning("task %s already reported %s; ignoring the second outcome", key,
                        "success" if self._recorder.outcomes[key].succeeded else "failure")
            return ""
        return key

    def success(self, task: Task, result: Any = None) -> None:
        key = self._own(task)
        if not key:
            return
        if result is not None or task.execution_result is not None:
            stored, dropped = checked_result(result)
            if dropped:
                log.warning("task %s succeeded but its result was dropped: %s", key, dropped)
                task.execution_stats = task.execution_stats.model_copy(update={"result_dropped": dropped})
            task.execution_result = stored
        self._record(key, task, succeeded=True)

    def fail(
        self, task: Task, error: BaseException | str | None = None, stats: Mapping[str, Any] | None = None
    ) -> None:
        key = self._own(task)
        if key:
            self._record(key, task, succeeded=False, error=error, details=dict(stats) if stats else None)

    def _record(
        self,
        key: str,
        task: Task,
        *,
        succeeded: bool,
        error: BaseException | str | None = None,
        details: dict[str, Any] | None = None,
        retryable: bool = True,
    ) -> None:
        record_failure(self._recorder, key, task, succeeded=succeeded, error=error,
                       details=details, retryable=retryable)

    def add_tasks(self, tasks: Iterable[Task]) -> list[Task]:
        """Schedule tasks after this batch commits. Returns the children with their ids."""
        added = []
        for task in tasks:
            child = self._adopt(task)
            self._check_task(child)
            added.append(child)
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

    def start_flow(self, steps: Sequence[FlowStep | Mapping[str, Any]], config: FlowConfig) -> str:
        """Fan out `steps`; when all are final, a join task gets every step's result."""
        if self._flow_starter is None:
            raise FlowsNotConfiguredError()
        self._children += 1
        started = self._flow_starter.start(
            flow_id=derived_id(self._parent_key, "flow", self._children),
            steps=steps,
            config=config,
            log_context=self._log_context,
        )
        for task in started.tasks:
            self._check_task(task)
        self._recorder.new_tasks.extend(started.tasks)
        self._recorder.flows.append(started)
        return started.flow_id


def record_failure(
    recorder: RunRecorder,
    key: str,
    task: Task,
    *,
    succeeded: bool = False,
    error: BaseException | str | None = None,
    details: dict[str, Any] | None = None,
    retryable: bool = True,
    retry_delay: float | None = None,
    consume_attempt: bool = True,
) -> None:
    """Record an outcome for a task; also used by the runner for crashes and validation errors."""
    now = recorder.clock.now()
    message = error_type = None
    if not succeeded:
        if isinstance(error, BaseException):
            message, error_type = (str(error) or type(error).__name__), type(error).__name__
        else:
            message = error or "task failed"
    recorder.outcomes[key] = Outcome(
        task=task,
        succeeded=succeeded,
        started_at=recorder.started_at.get(key) or recorder.batch_started_at or now,
        finished_at=now,
        error=message,
        error_type=error_type,
        details=details,
        retryable=retryable,
        retry_delay=retry_delay,
        consume_attempt=consume_attempt,
    )
