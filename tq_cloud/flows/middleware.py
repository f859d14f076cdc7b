"""Turns final step outcomes into barrier calls and join dispatches.

One barrier call per flow per batch. A join is dispatched by whoever closes the barrier
(the last step, the first failure under `abort`, or the timeout sentinel); its id is derived
from the flow id and the store insert is set-if-absent, so a redelivered batch that dispatches
it again creates nothing new, and `join_dispatched` tells a replay whether it still must.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tq_cloud.clock import Clock
from tq_cloud.core.models import FlowMeta, Task, TaskMetadata
from tq_cloud.flows.models import (
    FlowResults,
    FlowStepResult,
    StartedFlow,
    timeout_timer_name,
)
from tq_cloud.ids import derived_id
from tq_cloud.lifecycle.emitter import LifecycleEmitter
from tq_cloud.lifecycle.events import FlowCompleted, FlowStarted
from tq_cloud.ports.barrier import BarrierState, FlowBarrierProvider
from tq_cloud.ports.timer import Timer

if TYPE_CHECKING:
    from tq_cloud.core.routing import TaskRouter
    from tq_cloud.projections.sink import ProjectionSink

log = logging.getLogger("tq_cloud.flows")

_OUTCOME = {BarrierState.COMPLETE: "completed", BarrierState.ABORTED: "aborted",
            BarrierState.TIMED_OUT: "timed_out"}


class FlowMiddleware:
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

    async def init(self, flows: Sequence[StartedFlow]) -> None:
        """Create barriers before any step is sent, so durations count from the start."""
        for flow in flows:
            await self.barriers.init_barrier(flow.flow_id, flow.total_steps, flow.started_at)
            await self.lifecycle.flow("on_flow_started", FlowStarted(
                flow_id=flow.flow_id, total_steps=flow.total_steps, join=flow.config.join,
                failure_policy=flow.config.failure_policy, entity=flow.config.entity,
                started_at=flow.started_at, step_types=tuple(t.type for t in flow.tasks
                                                             if t.flow_meta and t.flow_meta.step_index >= 0)))

    async def on_post_process(self, successes: Sequence[Task], final_failures: Sequence[Task]) -> None:
        steps: dict[str, list[tuple[FlowMeta, FlowStepResult]]] = defaultdict(list)
        for task, ok in [(t, True) for t in successes] + [(t, False) for t in final_failures]:
            meta = task.flow_meta
            if meta is None:
                continue
            if meta.is_join:
                await self._join_finished(meta, task, ok)
            elif meta.is_timeout:
                await self._timed_out(meta)
            else:
                steps[meta.flow_id].append((meta, _step_result(meta, task, ok)))
        for group in steps.values():
            await self._steps_finished(group)

    async def _steps_finished(self, group: list[tuple[FlowMeta, FlowStepResult]]) -> None:
        meta = group[0][0]
        self.barrier_calls += 1
        results = [r for _, r in group]
        outcome = await self.barriers.batch_decrement_and_check(
            meta.flow_id, results, abort_on_failure=meta.failure_policy == "abort")
        if outcome.closed and outcome.state is not None:
            trigger = next((r.step_index for r in results if r.status == "fail"), None)
            await self._dispatch_join(meta, outcome.state, trigger)
        elif outcome.remaining < 0 and outcome.state is not None and not outcome.join_dispatched:
            log.warning("flow %s closed without a dispatched join; dispatching it now", meta.flow_id)
            await self._dispatch_join(meta, outcome.state)

    async def _timed_out(self, meta: FlowMeta) -> None:
        snapshot = await self.barriers.get(meta.flow_id)
        if snapshot is None:
            log.error("timeout sentinel for unknown flow %s ignored", meta.flow_id)
            return
        if snapshot.state is BarrierState.ACTIVE:
            if await self.barriers.close(meta.flow_id, BarrierState.TIMED_OUT):
                await self._dispatch_join(meta, BarrierState.TIMED_OUT)
                return
            snapshot = await self.barriers.get(meta.flow_id)
        if snapshot is not None and not snapshot.join_dispatched:
            await self._dispatch_join(meta, snapshot.state)

    async def _dispatch_join(self, meta: FlowMeta, state: BarrierState, trigger: int | None = None) -> None:
        results = await self.barriers.get_step_results(meta.flow_id)
        flow_results = FlowResults(flow_id=meta.flow_id, steps=results,
                                   aborted=state is BarrierState.ABORTED,
                                   timed_out=state is BarrierState.TIMED_OUT)
        now = self.clock.now()
        join = Task(
            id=derived_id(meta.flow_id, "join"), type=meta.join.type, queue_id=meta.join.queue_id,
            payload={"flow_results": flow_results.model_dump(mode="json")}, execute_at=now,
            created_at=now, force_store=True,
            metadata=TaskMetadata(flow_meta=meta.model_copy(update={
                "is_join": True, "is_timeout": False, "step_index": -1})))
        await self.router.dispatch([join])
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
            steps_succeeded=sum(r.status == "success" for r in results),
            steps_failed=sum(r.status == "fail" for r in results), trigger_step_index=trigger))

    async def _join_finished(self, meta: FlowMeta, task: Task, ok: bool) -> None:
        if self.projections is not None:
            await self.projections.flow_final(
                meta, succeeded=ok, result=task.execution_result,
                error=None if ok else (task.execution_stats.last_error or "join task failed"))


def _step_result(meta: FlowMeta, task: Task, ok: bool) -> FlowStepResult:
    if ok:
        return FlowStepResult(step_index=meta.step_index, status="success", result=task.execution_result)
    return FlowStepResult(step_index=meta.step_index, status="fail",
                          error=task.execution_stats.last_error or "step failed")
