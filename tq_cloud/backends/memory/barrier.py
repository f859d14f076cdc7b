"""In-process flow barriers with the port's set-if-absent and close-once semantics."""

from __future__ import annotations

import bisect
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from tq_cloud.domain.flows import FlowStepResult, StepCounts
from tq_cloud.ports.barrier import BarrierDecrementResult, BarrierSnapshot, BarrierState, FlowPage
from tq_cloud.ports.paging import MAX_PAGE, after_cursor, page_cursor


@dataclass(slots=True)
class _Barrier:
    snapshot: BarrierSnapshot
    results: dict[int, FlowStepResult] = field(default_factory=dict)
    order: list[int] | None = None
    """The recorded indices, sorted when a page is first read after a change."""

    def sorted_indices(self) -> list[int]:
        if self.order is None:
            self.order = sorted(self.results)
        return self.order


class InMemoryFlowBarrierProvider:
    """Flow barriers in memory (the same conformance suite as DynamoDB's).

    Example:
        TaskHandler(queue=queue, registry=app, storage=storage, locks=locks,
                    flow_barriers=InMemoryFlowBarrierProvider())
    """
    def __init__(self) -> None:
        self._flows: dict[str, _Barrier] = {}
        self.calls = 0

    async def init_barrier(self, flow_id: str, total_steps: int, started_at: datetime,
                           deadline: datetime | None = None) -> None:
        self.calls += 1
        self._flows.setdefault(flow_id, _Barrier(BarrierSnapshot(
            flow_id=flow_id, total_steps=total_steps, remaining=total_steps,
            state=BarrierState.ACTIVE, started_at=started_at, join_dispatched=False, deadline=deadline)))

    async def batch_decrement_and_check(
        self, flow_id: str, results: Sequence[FlowStepResult], *, abort_on_failure: bool = False,
        abort_steps: Collection[int] = (), keep_until: datetime | None = None,
    ) -> BarrierDecrementResult:
        self.calls += 1
        barrier = self._flows.get(flow_id)
        if barrier is None:
            return BarrierDecrementResult(remaining=-1)
        snap = barrier.snapshot
        if snap.state is not BarrierState.ACTIVE:
            return BarrierDecrementResult(-1, snap.state, snap.join_dispatched)
        fresh = [r for r in {r.step_index: r for r in reversed(results)}.values()
                 if r.step_index not in barrier.results and 0 <= r.step_index < snap.total_steps]
        for result in fresh:
            barrier.results[result.step_index] = result
            barrier.order = None
        remaining = snap.remaining - len(fresh)
        state = BarrierState.COMPLETE if remaining == 0 else BarrierState.ACTIVE
        recorded = [barrier.results[r.step_index] for r in results if r.step_index in barrier.results]
        if any(r.status == "fail" and (abort_on_failure or r.step_index in abort_steps) for r in recorded):
            state = BarrierState.ABORTED
        barrier.snapshot = replace(snap, remaining=remaining, state=state)
        return BarrierDecrementResult(remaining, state, closed=state is not BarrierState.ACTIVE)

    async def step_results_page(self, flow_id: str, after: int = -1, limit: int = 100) -> list[FlowStepResult]:
        barrier = self._flows.get(flow_id)
        if barrier is None:
            return []
        order = barrier.sorted_indices()
        start = bisect.bisect_right(order, after)
        return [barrier.results[i] for i in order[start:start + limit]]

    async def get_step_results(self, flow_id: str) -> list[FlowStepResult]:
        barrier = self._flows.get(flow_id)
        return [barrier.results[i] for i in barrier.sorted_indices()] if barrier else []

    async def step_counts(self, flow_id: str) -> StepCounts:
        barrier = self._flows.get(flow_id)
        statuses = [r.status for r in barrier.results.values()] if barrier else []
        return StepCounts(succeeded=statuses.count("success"), failed=statuses.count("fail"),
                          ignored=statuses.count("ignored"))

    async def retire(self, flow_id: str, after: int = -1, limit: int = 100) -> int | None:
        return None  # nothing here expires

    async def close(self, flow_id: str, state: BarrierState) -> bool:
        self.calls += 1
        barrier = self._flows.get(flow_id)
        if barrier is None or barrier.snapshot.state is not BarrierState.ACTIVE:
            return False
        barrier.snapshot = replace(barrier.snapshot, state=state, join_dispatched=state is BarrierState.CANCELLED)
        return True

    async def get(self, flow_id: str) -> BarrierSnapshot | None:
        barrier = self._flows.get(flow_id)
        return barrier.snapshot if barrier else None

    async def list_flows(self, limit: int = 50, cursor: str | None = None) -> FlowPage:
        after = after_cursor(cursor)
        found = sorted(((int(b.snapshot.started_at.timestamp() * 1000), flow_id), b.snapshot)
                       for flow_id, b in self._flows.items())
        found = [pair for pair in reversed(found) if after is None or pair[0] < after]
        limit = min(max(limit, 1), MAX_PAGE)
        return FlowPage([snap for _, snap in found[:limit]],
                        page_cursor(*found[limit - 1][0]) if len(found) > limit else None)

    async def mark_join_dispatched(self, flow_id: str) -> None:
        barrier = self._flows.get(flow_id)
        if barrier is not None:
            barrier.snapshot = replace(barrier.snapshot, join_dispatched=True)
