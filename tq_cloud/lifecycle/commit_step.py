"""Lifecycle events of a committed batch, the last step of the commit pipeline: completed,
failed (with `will_retry`), exhausted and cancelled (ignored) events, each once per outcome."""

from __future__ import annotations

from tq_cloud.core.commit import CommitBatch
from tq_cloud.core.emitter import LifecycleEmitter, timing
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.domain.events import (
    TaskCancelled,
    TaskCompleted,
    TaskContextFields,
    TaskExhausted,
    TaskFailed,
    TaskTiming,
)
from tq_cloud.domain.outcomes import Outcome, Verdict


class LifecycleStep:
    def __init__(self, lifecycle: LifecycleEmitter, registry: TaskQueuesManager) -> None:
        self.lifecycle = lifecycle
        self.registry = registry

    async def __call__(self, batch: CommitBatch) -> None:
        emit = self.lifecycle
        if emit.task_provider is None:
            return
        hooks = {h for h in ("on_task_completed", "on_task_failed", "on_task_cancelled", "on_task_exhausted")
                 if emit.wants(h)}
        for outcome in batch.outcomes:
            verdict = outcome.verdict
            if not hooks & _HOOKS[verdict]:
                continue
            ctx = self._ctx(outcome, batch)
            if verdict is Verdict.EXECUTED:
                await emit.task("on_task_completed", TaskCompleted(
                    **ctx, timing=_timing(outcome), result=outcome.result))
            elif verdict is Verdict.RETRY:
                await emit.task("on_task_failed", TaskFailed(
                    **ctx, timing=_timing(outcome), error=outcome.error or "task failed", will_retry=True,
                    next_attempt_at=outcome.retry.execute_at if outcome.retry else None))
            elif verdict is Verdict.IGNORED:
                await emit.task("on_task_cancelled", TaskCancelled(**ctx, reason=outcome.error or "ignored"))
            elif verdict is Verdict.CANCELLED:
                await emit.task("on_task_cancelled", TaskCancelled(**ctx, reason=f"cancelled: {outcome.cancel_reason}"))
            else:
                error = outcome.error or "task failed"
                await emit.task("on_task_failed", TaskFailed(
                    **ctx, timing=_timing(outcome), error=error, will_retry=False))
                await emit.task("on_task_exhausted", TaskExhausted(
                    **ctx, timing=_timing(outcome), error=error,
                    total_attempts=outcome.task.retry_count + 1, stored=verdict is Verdict.FAILED))

    def _ctx(self, outcome: Outcome, batch: CommitBatch) -> TaskContextFields:
        task = outcome.task
        max_retries = self.registry.max_retries(task.retries, task.queue_id, task.type)
        return self.lifecycle.context(task, max_retries, batch.now, batch.consumer_id)


_HOOKS = {Verdict.EXECUTED: {"on_task_completed"}, Verdict.RETRY: {"on_task_failed"},
          Verdict.IGNORED: {"on_task_cancelled"},
          Verdict.CANCELLED: {"on_task_cancelled"}, Verdict.FAILED: {"on_task_failed", "on_task_exhausted"},
          Verdict.DISCARDED: {"on_task_failed", "on_task_exhausted"}, None: set()}


def _timing(outcome: Outcome) -> TaskTiming:
    return timing(outcome.task.created_at, outcome.started_at, outcome.finished_at)
