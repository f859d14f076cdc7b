"""The join's payload: always small, whatever the number and size of its steps' results.

`payload["flow_results"]` says how the flow ended, with its counts. A flow of at most
`INLINE_STEPS` steps whose results fit the queue record and the store item (with room for the
join's own failure record) also carries them inline; any other join reads them by reference
through `FlowResultsReader` (`actions.flow_results(task)`), which pages through the barrier.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import to_json

from tq_cloud.domain.flows import FlowResults, FlowStepResult, StepCounts
from tq_cloud.domain.limits import ROW_HEADROOM_BYTES
from tq_cloud.domain.task import Task
from tq_cloud.ports.barrier import BarrierState, FlowBarrierProvider

INLINE_STEPS = 100


async def join_payload(join: Task, flow_id: str, total_steps: int, state: BarrierState,
                       barriers: FlowBarrierProvider, limit: int) -> tuple[dict[str, Any], StepCounts]:
    """The join's payload and the flow's step counts (at most one page of reads)."""
    summary = FlowResults(flow_id=flow_id, total_steps=total_steps, aborted=state is BarrierState.ABORTED,
                          timed_out=state is BarrierState.TIMED_OUT, steps_inline=False)
    if total_steps <= INLINE_STEPS:
        steps = await barriers.step_results_page(flow_id, -1, INLINE_STEPS)
        summary.counts = _counts(steps)
        inline = summary.model_copy(update={"steps": steps, "steps_inline": True})
        budget = limit - ROW_HEADROOM_BYTES - len(join.model_dump_json(exclude_defaults=True))
        if len(to_json(inline.model_dump(mode="json"))) <= budget:
            summary = inline
    else:
        summary.counts = await barriers.step_counts(flow_id)
    return {"flow_results": summary.model_dump(mode="json")}, summary.counts


def _counts(steps: list[FlowStepResult]) -> StepCounts:
    statuses = [s.status for s in steps]
    return StepCounts(succeeded=statuses.count("success"), failed=statuses.count("fail"),
                      ignored=statuses.count("ignored"))
