"""Commits what a batch produced, in an order that converges under redelivery.

Every write is idempotent (set-if-absent inserts, conditional transitions, derived ids), so if
anything here fails the batch is reported uncommitted, redelivered, re-run, and committed again
into the same state. Effects come before terminal marks: retries, children, flow barriers and
joins are written before a task is marked executed or failed. Projections and lifecycle events
come last and never fail the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from tq_cloud.clock import Clock
from tq_cloud.core.models import Task
from tq_cloud.core.outcomes import Outcome, RunResult
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.core.retry import retry_delay_ms
from tq_cloud.core.routing import TaskRouter
from tq_cloud.lifecycle.emitter import LifecycleEmitter, timing
from tq_cloud.lifecycle.events import (
    TaskCancelled,
    TaskCompleted,
    TaskContextFields,
    TaskExhausted,
    TaskFailed,
    TaskTiming,
)
from tq_cloud.ports.storage import TaskStorage

if TYPE_CHECKING:
    from tq_cloud.flows.middleware import FlowMiddleware
    from tq_cloud.projections.sink import ProjectionSink

log = logging.getLogger("tq_cloud.postprocess")


@dataclass(slots=True)
class Decisions:
    """How each outcome of a batch is committed."""

    succeeded: list[Outcome] = field(default_factory=list)
    retried: list[tuple[Outcome, Task]] = field(default_factory=list)
    failed_stored: list[Outcome] = field(default_factory=list)
    discarded: list[Outcome] = field(default_factory=list)

    @property
    def final_failures(self) -> list[Outcome]:
        return self.failed_stored + self.discarded


DiscardHook = Callable[[int], Awaitable[None]]


class PostProcessor:
    def __init__(
        self,
        router: TaskRouter,
        storage: TaskStorage,
        registry: TaskQueuesManager,
        clock: Clock,
        lifecycle: LifecycleEmitter,
        *,
        flows: FlowMiddleware | None = None,
        projections: ProjectionSink | None = None,
        on_discarded: DiscardHook | None = None,
    ) -> None:
        self.router = router
        self.storage = storage
        self.registry = registry
        self.clock = clock
        self.lifecycle = lifecycle
        self.flows = flows
        self.projections = projections
        self.on_discarded = on_discarded

    def decide(self, result: RunResult, now: datetime) -> Decisions:
        decisions = Decisions()
        for outcome in result.outcomes:
            if outcome.succeeded:
                decisions.succeeded.append(outcome)
                continue
            task = _with_error(outcome)
            max_retries = self.registry.max_retries(task.retries, task.queue_id, task.type)
            if not outcome.consume_attempt:
                delay = timedelta(seconds=outcome.retry_delay or 0)
                decisions.retried.append((outcome, self._retry_copy(task, now + delay, 0, 1)))
            elif outcome.retryable and task.retry_count < max_retries:
                delay = timedelta(milliseconds=retry_delay_ms(task.retry_after, task.retry_count))
                decisions.retried.append((outcome, self._retry_copy(task, now + delay, 1, 0)))
            elif self._stored(task):
                decisions.failed_stored.append(outcome)
            else:
                decisions.discarded.append(outcome)
        return decisions

    def _stored(self, task: Task) -> bool:
        executor = self.registry.get_executor(task.queue_id, task.type)
        return task.force_store or bool(executor and executor.options.store_on_failure)

    def _retry_copy(self, task: Task, execute_at: datetime, attempts: int, deferrals: int) -> Task:
        stats = task.execution_stats.model_copy(update={
            "retry_count": task.retry_count + attempts,
            "deferrals": task.execution_stats.deferrals + deferrals})
        return task.model_copy(update={"execute_at": execute_at, "execution_stats": stats,
                                       "force_store": self._stored(task), "updated_at": self.clock.now()})

    async def commit(self, result: RunResult, consumer_id: str | None = None) -> Decisions:
        now = self.clock.now()
        decisions = self.decide(result, now)
        await self.router.dispatch_retries([copy for _, copy in decisions.retried])
        if self.flows is not None and result.flows:
            await self.flows.init(result.flows)
        await self.router.dispatch(result.new_tasks)
        if self.flows is not None:
            await self.flows.on_post_process(
                [o.task for o in decisions.succeeded], [o.task for o in decisions.final_failures]
            )
        if decisions.failed_stored:
            await self.storage.mark_failed([o.task for o in decisions.failed_stored], now)
        for group in _by_type(result.ignored):
            await self.storage.mark_ignored(group, _ignored_reason(group[0]), now)
        stored_successes = [o.task for o in decisions.succeeded if o.task.force_store]
        if stored_successes:
            await self.storage.mark_executed(stored_successes, now)
        if self.projections is not None:
            await self.projections.terminal(decisions, result.flows)
        if decisions.discarded and self.on_discarded is not None:
            await self.on_discarded(len(decisions.discarded))
        await self._emit(decisions, result.ignored, now, consumer_id)
        return decisions

    async def _emit(
        self, decisions: Decisions, ignored: Sequence[Task], now: datetime, consumer_id: str | None
    ) -> None:
        emit = self.lifecycle
        if emit.task_provider is None:
            return
        for outcome in decisions.succeeded:
            ctx = self._ctx(outcome.task, now, consumer_id)
            await emit.task("on_task_completed", TaskCompleted(
                **ctx, timing=_timing(outcome), result=outcome.task.execution_result))
        for outcome, copy in decisions.retried:
            ctx = self._ctx(outcome.task, now, consumer_id)
            await emit.task("on_task_failed", TaskFailed(
                **ctx, timing=_timing(outcome), error=outcome.error or "task failed",
                will_retry=True, next_attempt_at=copy.execute_at))
        for outcome in decisions.final_failures:
            ctx = self._ctx(outcome.task, now, consumer_id)
            error = outcome.error or "task failed"
            await emit.task("on_task_failed", TaskFailed(
                **ctx, timing=_timing(outcome), error=error, will_retry=False))
            await emit.task("on_task_exhausted", TaskExhausted(
                **ctx, timing=_timing(outcome), error=error,
                total_attempts=outcome.task.retry_count + 1,
                stored=outcome in decisions.failed_stored))
        for task in ignored:
            await emit.task("on_task_cancelled", TaskCancelled(
                **self._ctx(task, now, consumer_id), reason=_ignored_reason(task)))

    def _ctx(self, task: Task, now: datetime, consumer_id: str | None) -> TaskContextFields:
        max_retries = self.registry.max_retries(task.retries, task.queue_id, task.type)
        return self.lifecycle.context(task, max_retries, now, consumer_id)


def _with_error(outcome: Outcome) -> Task:
    task = outcome.task
    details = {**task.execution_stats.details, **(outcome.details or {})}
    task.execution_stats = task.execution_stats.model_copy(update={
        "last_error": outcome.error, "last_error_type": outcome.error_type, "details": details})
    return task


def _timing(outcome: Outcome) -> TaskTiming:
    return timing(outcome.task.created_at, outcome.started_at, outcome.finished_at)


def _by_type(tasks: Sequence[Task]) -> list[list[Task]]:
    groups: dict[tuple[str, str], list[Task]] = {}
    for task in tasks:
        groups.setdefault((task.queue_id, task.type), []).append(task)
    return list(groups.values())


def _ignored_reason(task: Task) -> str:
    return f"no executor registered for ({task.queue_id!r}, {task.type!r})"
