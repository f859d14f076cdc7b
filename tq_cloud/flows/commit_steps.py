"""Flow steps of the commit pipeline: barriers created before steps are sent, then final step
outcomes counted and joins dispatched.

One barrier call per flow per batch. Every final outcome of a step reaches its barrier: an
executed step with its result, a failed, discarded or ignored step (no executor for its type)
as a failure with the reason, and a step that could never be written as a failure too, so a
flow always closes. A join is dispatched by whoever closes the barrier (the last step, the
first failure under `abort`, or the timeout sentinel); its id is derived from the flow id and
its store insert is set-if-absent, so a redelivered batch that dispatches it again creates
nothing new, and `join_dispatched` tells a replay whether it still must. A barrier write that
fails fails the batch (redelivered; set-if-absent makes that safe).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import timedelta
from typing import TYPE_CHECKING

from tq_cloud.clock import Clock
from tq_cloud.core.commit import CommitBatch
from tq_cloud.core.emitter import LifecycleEmitter
from tq_cloud.domain.events import FlowCompleted, FlowStarted
from tq_cloud.domain.flows import FlowStepResult, retire_task, timeout_timer_name
from tq_cloud.domain.outcomes import Outcome, Verdict
from tq_cloud.domain.task import FlowMeta, Task, TaskMetadata
from tq_cloud.flows.join_payload import join_payload
from tq_cloud.ids import derived_id
from tq_cloud.ports.barrier import BarrierSnapshot, BarrierState, FlowBarrierProvider
from tq_cloud.ports.timer import Timer

if TYPE_CHECKING:
    from tq_cloud.core.routing import TaskRouter
    from tq_cloud.projections.sink import ProjectionSink

log = logging.getLogger("tq_cloud.flows")

_OUTCOME = {BarrierState.COMPLETE: "completed", BarrierState.ABORTED: "aborted",
            BarrierState.TIMED_OUT: "timed_out", BarrierState.CANCELLED: "cancelled"}


class FlowInitStep:
    """Create barriers before any step is sent, so durations count from the start."""

    def __init__(self, barriers: FlowBarrierProvider, lifecycle: LifecycleEmitter) -> None:
        self.barriers = barriers
        self.lifecycle = lifecycle

    async def __call__(self, batch: CommitBatch) -> None:
        for flow in batch.flows:
            timeout = flow.config.timeout_ms
            deadline = flow.started_at + timedelta(milliseconds=timeout) if timeout else None
            await self.barriers.init_barrier(flow.flow_id, flow.total_steps, flow.started_at, deadline)
            await self.lifecycle.flow("on_flow_started", FlowStarted(
                flow_id=flow.flow_id, total_steps=flow.total_steps, join=flow.config.join,
                failure_policy=flow.config.failure_policy, entity=flow.config.entity,
                started_at=flow.started_at, step_types=tuple(t.type for t in flow.tasks
                                                             if t.flow_meta and t.flow_meta.step_index >= 0)))


class FlowBarrierStep:
    def __init__(
        self,
        barriers: FlowBarrierProvider,
        router: TaskRouter,
        clock: Clock,
        lifecycle: LifecycleEmitter,
        *,
        timer: Timer | None = None,
        projections: ProjectionSink | None = None,
    ) -> None:
        self.barriers = barriers
        self.router = router
        self.clock = clock
        self.lifecycle = lifecycle
        self.timer = timer
        self.projections = projections
        self.barrier_calls = 0

    async def __call__(self, batch: CommitBatch) -> None:
        steps: dict[str, list[tuple[FlowMeta, FlowStepResult]]] = defaultdict(list)
        contexts: dict[str, dict[str, str] | None] = {}  # each flow's log and trace context: its join's
        for outcome in batch.final:
            meta = outcome.task.flow_meta
            if meta is None:
                continue
            if meta.is_join:
                await self._join_finished(meta, outcome)
            elif meta.is_timeout:
                if outcome.verdict is Verdict.EXECUTED:
                    await self._timed_out(meta, outcome.task.metadata.log_context)
            else:
                steps[meta.flow_id].append((meta, _step_result(meta, outcome)))
                contexts.setdefault(meta.flow_id, outcome.task.metadata.log_context)
        for task, reason in batch.rejected_new.values():
            meta = task.flow_meta
            if meta is not None and meta.step_index >= 0 and not meta.is_join and not meta.is_timeout:
                steps[meta.flow_id].append((meta, FlowStepResult(
                    step_index=meta.step_index, status="ignored" if meta.step_failure_policy == "ignore" else "fail",
                    error=f"step could never be sent: {reason}")))
                contexts.setdefault(meta.flow_id, task.metadata.log_context)
        for flow_id, group in steps.items():
            await self._steps_finished(group, contexts.get(flow_id))

    async def _steps_finished(self, group: list[tuple[FlowMeta, FlowStepResult]],
                              log_context: dict[str, str] | None) -> None:
        meta = group[0][0]
        self.barrier_calls += 1
        results = [r for _, r in group]
        aborting = [m.step_index for m, _ in group if _step_policy(m) == "abort"]
        keep_until = max(meta.started_at, meta.timeout_at) if meta.started_at and meta.timeout_at else None
        outcome = await self.barriers.batch_decrement_and_check(
            meta.flow_id, results, abort_steps=aborting, keep_until=keep_until)
        if outcome.closed and outcome.state is not None:
            trigger = next((r.step_index for r in results if r.status == "fail" and r.step_index in aborting), None)
            await self._dispatch_join(meta, outcome.state, log_context, trigger)
        elif outcome.remaining < 0 and outcome.state is not None and not outcome.join_dispatched:
            log.warning("flow %s closed without a dispatched join; dispatching it now", meta.flow_id)
            await self._dispatch_join(meta, outcome.state, log_context)

    async def _timed_out(self, meta: FlowMeta, log_context: dict[str, str] | None) -> None:
        snapshot = await self.barriers.get(meta.flow_id)
        if snapshot is None:
            log.error("timeout sentinel for unknown flow %s ignored", meta.flow_id)
            return
        if snapshot.state is BarrierState.ACTIVE:
            if await self.barriers.close(meta.flow_id, BarrierState.TIMED_OUT):
                await self._dispatch_join(meta, BarrierState.TIMED_OUT, log_context)
                return
            snapshot = await self.barriers.get(meta.flow_id)
        if snapshot is not None and not snapshot.join_dispatched:
            await self._dispatch_join(meta, snapshot.state, log_context)

    async def _dispatch_join(self, meta: FlowMeta, state: BarrierState, log_context: dict[str, str] | None,
                             trigger: int | None = None) -> None:
        """The join, with the flow's times as the barrier keeps them (a step of a flow started
        again by a parent run later carries later ones), and the flow's log context: the
        executor that started the flow is its span's parent, as it is its steps'."""
        snapshot = await self.barriers.get(meta.flow_id)
        if snapshot is not None:
            meta = meta.model_copy(update={"started_at": snapshot.started_at, "timeout_at": snapshot.deadline})
        now = self.clock.now()
        join = Task(
            id=derived_id(meta.flow_id, "join"), type=meta.join.type, queue_id=meta.join.queue_id,
            payload={}, execute_at=now, created_at=now, force_store=True,
            metadata=TaskMetadata(log_context=log_context, flow_meta=meta.model_copy(update={
                "is_join": True, "is_timeout": False, "step_index": -1})))
        limit = min(self.router.queue.max_message_bytes, self.router.storage.max_item_bytes)
        payload, counts = await join_payload(join, meta.flow_id, meta.total_steps, state, self.barriers, limit)
        join = join.model_copy(update={"payload": payload})
        retire = [] if meta.timeout_at is not None else [retire_task(meta.flow_id, meta.join.queue_id, now)]
        _, rejected = await self.router.dispatch([join, *retire], strict=False)
        if rejected:
            raise RuntimeError(f"flow {meta.flow_id}: its join could not be written: {rejected}")
        await self.barriers.mark_join_dispatched(meta.flow_id)
        if self.timer is not None and meta.timeout_at is not None and state is not BarrierState.TIMED_OUT:
            await self.timer.cancel(timeout_timer_name(meta.flow_id))
        if self.projections is not None and state is not BarrierState.COMPLETE:
            error = "flow_aborted" if state is BarrierState.ABORTED else "flow_timeout"
            await self.projections.flow_final(meta, succeeded=False, error=error)
        duration = (now - meta.started_at).total_seconds() * 1000 if meta.started_at else None
        await self.lifecycle.flow("on_flow_completed", FlowCompleted(
            flow_id=meta.flow_id, total_steps=meta.total_steps, join=meta.join,
            outcome=_OUTCOME[state], duration_ms=duration,  # type: ignore[arg-type]
            steps_succeeded=counts.succeeded, steps_failed=counts.failed, trigger_step_index=trigger))

    async def cancelled(self, snapshot: BarrierSnapshot, meta: FlowMeta | None) -> None:
        """After `handler.cancel_flow` closed a flow: its timeout sentinel cancelled, its items
        dated (a flow without a deadline), and, when a step's row told the flow's join and
        entity (`meta`), its projection and `on_flow_completed` event."""
        now = self.clock.now()
        if snapshot.deadline is None:
            queues = self.router.registry.get_queues()
            join_queue = meta.join.queue_id if meta is not None else (queues[0] if queues else None)
            if join_queue is not None:
                await self.router.dispatch([retire_task(snapshot.flow_id, join_queue, now)], strict=True)
        elif self.timer is not None:
            await self.timer.cancel(timeout_timer_name(snapshot.flow_id))
        if meta is None:
            return
        if self.projections is not None:
            await self.projections.flow_final(meta, succeeded=False, error="flow_cancelled")
        counts = await self.barriers.step_counts(snapshot.flow_id)
        await self.lifecycle.flow("on_flow_completed", FlowCompleted(
            flow_id=snapshot.flow_id, total_steps=snapshot.total_steps, join=meta.join, outcome="cancelled",
            duration_ms=(now - snapshot.started_at).total_seconds() * 1000,
            steps_succeeded=counts.succeeded, steps_failed=counts.failed))

    async def _join_finished(self, meta: FlowMeta, outcome: Outcome) -> None:
        if self.projections is not None:
            ok = outcome.verdict is Verdict.EXECUTED
            await self.projections.flow_final(
                meta, succeeded=ok, result=outcome.result,
                error=None if ok else (outcome.error or "join task failed"))


def _step_policy(meta: FlowMeta) -> str:
    """What a failure of this step does: its own policy, else its flow's."""
    return meta.step_failure_policy or meta.failure_policy


def _step_result(meta: FlowMeta, outcome: Outcome) -> FlowStepResult:
    if outcome.verdict is Verdict.EXECUTED:
        return FlowStepResult(step_index=meta.step_index, status="success", result=outcome.result, trace=outcome.trace)
    reason = outcome.error or "step failed"
    if outcome.verdict is Verdict.IGNORED:
        reason = f"ignored: {reason}"
    status = "ignored" if meta.step_failure_policy == "ignore" else "fail"
    return FlowStepResult(step_index=meta.step_index, status=status, error=reason, trace=outcome.trace)

