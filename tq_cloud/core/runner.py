"""Runs one batch: claims each task, groups by (queue, type), drives each executor kind, and
records every task's outcome. Every claimed task leaves with an outcome, is ignored (no
executor), handed off, or returned as deferred; none is forgotten."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from tq_cloud.clock import Clock
from tq_cloud.core.actions import (
    ExecutorActions,
    RunRecorder,
    TaskCheck,
    record_failure,
)
from tq_cloud.core.executors import BatchTaskExecutor, Executor, SingleTaskExecutor
from tq_cloud.core.log_context import log_context_scope, runtime_context
from tq_cloud.core.models import Task
from tq_cloud.core.outcomes import RunResult
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.flows.models import FLOW_TIMEOUT_TYPE
from tq_cloud.ids import derived_id, new_id
from tq_cloud.lifecycle.emitter import LifecycleEmitter
from tq_cloud.lifecycle.events import TaskStarted
from tq_cloud.ports.locks import LockProvider

if TYPE_CHECKING:
    from tq_cloud.asynctasks.manager import AsyncTaskManager
    from tq_cloud.flows.starter import FlowStarter

log = logging.getLogger("tq_cloud.runner")

FULL_MANAGER_RETRY_DELAY = 30.0
FORGOTTEN = "executor returned without calling success() or fail()"
AsyncCommit = Callable[[RunResult, str], Awaitable[None]]
ProcessingHook = Callable[[Sequence[Task]], Awaitable[None]]


class TaskRunner:
    def __init__(
        self,
        registry: TaskQueuesManager,
        locks: LockProvider,
        clock: Clock,
        lifecycle: LifecycleEmitter,
        *,
        check_task: TaskCheck,
        flow_starter: FlowStarter | None = None,
        async_manager: AsyncTaskManager | None = None,
        on_processing: ProcessingHook | None = None,
        lock_ttl: timedelta = timedelta(minutes=30),
    ) -> None:
        self.registry = registry
        self.locks = locks
        self.clock = clock
        self.lifecycle = lifecycle
        self.check_task = check_task
        self.flow_starter = flow_starter
        self.async_manager = async_manager
        self.on_processing = on_processing
        self.lock_ttl = lock_ttl
        self.commit_async: AsyncCommit | None = None

    async def run(self, runner_id: str, tasks: Sequence[Task]) -> RunResult:
        result = RunResult()
        unique: dict[str, Task] = {}
        for task in tasks:
            if task.id is None:
                task.id = new_id()
            unique.setdefault(task.id, task)
        claimed = await self.locks.acquire(list(unique), runner_id, self.lock_ttl)
        result.deferred = [t for k, t in unique.items() if k not in claimed]
        mine = [t for k, t in unique.items() if k in claimed]
        keep_locked: set[str] = set()
        raw_payloads = {t.key: t.payload for t in mine}
        try:
            if self.on_processing is not None:
                await self.on_processing([t for t in mine if t.entity and not t.retry_count])
            recorder = RunRecorder(self.clock)
            for (queue_id, task_type), group in _group(mine).items():
                executor = self.registry.get_executor(queue_id, task_type) or _builtin(task_type)
                if executor is None:
                    result.ignored.extend(group)
                    continue
                runnable = self._validated(executor, group, recorder)
                if isinstance(executor, BatchTaskExecutor):
                    await self._run_batch(executor, runnable, recorder, runner_id)
                elif executor.parallel:
                    await self._run_parallel(executor, runnable, recorder, runner_id)
                else:
                    await self._run_sequential(executor, runnable, recorder, runner_id, result)
            keep_locked = {t.key for t in result.handed_off}
            accounted = keep_locked | {t.key for t in result.ignored}
            for task in mine:
                if task.key not in recorder.outcomes and task.key not in accounted:
                    record_failure(recorder, task.key, task, error=FORGOTTEN)
            result.outcomes = list(recorder.outcomes.values())
            result.new_tasks = recorder.new_tasks
            result.flows = recorder.flows
            return result
        finally:
            for task in mine:  # the store keeps the payload as sent, not the validated model
                if task.key not in keep_locked:
                    task.payload = raw_payloads[task.key]
            await self.locks.release([k for k in claimed if k not in keep_locked], runner_id)

    def _validated(self, executor: Executor, group: list[Task], recorder: RunRecorder) -> list[Task]:
        """Tasks whose payload fits the executor's model; the rest fail for good (retrying
        cannot fix a malformed payload) with the validation error recorded."""
        model = executor.options.payload_model
        if model is None:
            return group
        valid = []
        for task in group:
            try:
                task.payload = model.model_validate(task.payload)
                valid.append(task)
            except ValidationError as exc:
                record_failure(recorder, task.key, task, retryable=False,
                               error=f"payload does not match {model.__name__}: {exc}")
        return valid

    def _actions(
        self, recorder: RunRecorder, scope: Mapping[str, Task], parent_key: str | Callable[[], str],
        log_context: Mapping[str, str] | None,
    ) -> ExecutorActions:
        return ExecutorActions(recorder, scope, parent_key, check_task=self.check_task,
                               flow_starter=self.flow_starter, log_context=log_context)

    async def _started(self, task: Task, recorder: RunRecorder, consumer_id: str) -> None:
        now = self.clock.now()
        recorder.started_at[task.key] = now
        if self.lifecycle.task_provider is not None:
            max_retries = self.registry.max_retries(task.retries, task.queue_id, task.type)
            queued = max(((now - (task.created_at or now)).total_seconds() * 1000), 0.0)
            ctx = self.lifecycle.context(task, max_retries, now, consumer_id)
            await self.lifecycle.task("on_task_started",
                                      TaskStarted(**ctx, started_at=now, queued_duration_ms=queued))

    async def _call_single(
        self, executor: SingleTaskExecutor, task: Task, recorder: RunRecorder, consumer_id: str
    ) -> None:
        await self._started(task, recorder, consumer_id)
        user_ctx = task.metadata.log_context
        actions = self._actions(recorder, {task.key: task}, _attempt_key(task), user_ctx)
        with log_context_scope(runtime_context(user_ctx, task.key, task.type, self.lifecycle.worker_id)):
            try:
                await executor.fn(task, actions)
            except Exception as exc:  # noqa: BLE001 - an executor's crash is its task's failure
                if task.key not in recorder.outcomes:
                    record_failure(recorder, task.key, task, error=exc)
                log.warning("executor of %s raised for task %s: %r", task.type, task.key, exc)

    async def _run_parallel(
        self, executor: SingleTaskExecutor, tasks: list[Task], recorder: RunRecorder, consumer_id: str
    ) -> None:
        for start in range(0, len(tasks), executor.chunk_size):
            chunk = tasks[start:start + executor.chunk_size]
            await asyncio.gather(*(self._call_single(executor, t, recorder, consumer_id) for t in chunk))

    async def _run_batch(
        self, executor: BatchTaskExecutor, tasks: list[Task], recorder: RunRecorder, consumer_id: str
    ) -> None:
        if not tasks:
            return
        if self.lifecycle.task_provider is None:
            recorder.batch_started_at = self.clock.now()
        else:
            for task in tasks:
                await self._started(task, recorder, consumer_id)
        scope = {t.key: t for t in tasks}

        def parent() -> str:
            return derived_id("batch", *sorted(f"{k}:{t.retry_count}" for k, t in scope.items()))

        actions = self._actions(recorder, scope, parent, None)
        ctx = {"worker_id": self.lifecycle.worker_id, "batch_size": str(len(tasks))}
        with log_context_scope(ctx):
            try:
                await executor.fn(tasks, actions)
            except Exception as exc:  # noqa: BLE001 - the crash fails every task not yet reported
                log.warning("batch executor of %s raised: %r", tasks[0].type, exc)
                for task in tasks:
                    if task.key not in recorder.outcomes:
                        record_failure(recorder, task.key, task, error=exc)

    async def _run_sequential(
        self, executor: SingleTaskExecutor, tasks: list[Task], recorder: RunRecorder,
        consumer_id: str, result: RunResult,
    ) -> None:
        timeout = executor.options.handoff_timeout
        for task in tasks:
            if timeout is None:
                await self._call_single(executor, task, recorder, consumer_id)
            else:
                await self._run_with_handoff(executor, task, recorder, consumer_id, result)

    async def _run_with_handoff(
        self, executor: SingleTaskExecutor, task: Task, recorder: RunRecorder,
        consumer_id: str, result: RunResult,
    ) -> None:
        """Run the task with its own recorder; if it outlives `timeout`, hand it to the async
        manager and move on. Whatever it reports later is committed through the same path."""
        timeout = executor.options.handoff_timeout or 0.0
        own = RunRecorder(self.clock)
        job = asyncio.ensure_future(self._call_single(executor, task, own, consumer_id))
        await asyncio.wait({job}, timeout=timeout)
        if not job.done() and self.async_manager is None:
            log.warning("task %s passed its handoff_timeout but no AsyncTaskManager is configured; "
                        "waiting for it in the batch", task.key)
            await job
        if job.done():
            _merge(own, recorder)
            return
        assert self.async_manager is not None
        accepted = self.async_manager.handoff(
            task, job, lambda: self._finish_async(task, own, job, consumer_id), timeout * 2
        )
        if accepted:
            result.handed_off.append(task)
            return
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        record_failure(recorder, task.key, task,
                       error="async task manager is full; retried without using an attempt",
                       retry_delay=FULL_MANAGER_RETRY_DELAY, consume_attempt=False)

    async def _finish_async(
        self, task: Task, own: RunRecorder, job: asyncio.Future[Any], consumer_id: str
    ) -> None:
        if task.key not in own.outcomes:
            reason = ("abandoned: the async task manager stopped it (timeout or shutdown)"
                      if job.cancelled() else FORGOTTEN)
            record_failure(own, task.key, task, error=reason)
        late = RunResult(outcomes=list(own.outcomes.values()), new_tasks=own.new_tasks,
                         flows=own.flows)
        try:
            if self.commit_async is not None:
                await self.commit_async(late, consumer_id)
        finally:
            await self.locks.release([task.key], consumer_id)


async def _acknowledge(task: Task, actions: ExecutorActions) -> None:
    actions.success(task)


_TIMEOUT_SENTINEL = SingleTaskExecutor(fn=_acknowledge)


def _builtin(task_type: str) -> Executor | None:
    """Executors the framework ships: the flow-timeout sentinel needs no user code (the
    reference library silently never fired timeouts without one)."""
    return _TIMEOUT_SENTINEL if task_type == FLOW_TIMEOUT_TYPE else None


def _attempt_key(task: Task) -> str:
    return f"{task.key}:{task.retry_count}"


def _group(tasks: Sequence[Task]) -> dict[tuple[str, str], list[Task]]:
    groups: dict[tuple[str, str], list[Task]] = {}
    for task in tasks:
        groups.setdefault((task.queue_id, task.type), []).append(task)
    return groups


def _merge(source: RunRecorder, target: RunRecorder) -> None:
    target.outcomes.update(source.outcomes)
    target.new_tasks.extend(source.new_tasks)
    target.flows.extend(source.flows)
    target.started_at.update(source.started_at)
