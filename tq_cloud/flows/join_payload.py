"""The join's payload, bounded: a join is always dispatched, however large its steps' results.

`payload["flow_results"]` carries every step's index, status, result or error. If they do not
fit the queue record and the store item (with room for the join's own failure record), the
largest results are dropped first (each drop said on its step as `result_dropped`), then, if
the steps alone are still too many, the list is cut and `truncated` says how many are left out.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import to_json

from tq_cloud.core.limits import ROW_HEADROOM_BYTES
from tq_cloud.core.models import Task
from tq_cloud.flows.models import FlowResults, FlowStepResult
from tq_cloud.ports.barrier import BarrierState


def join_payload(join: Task, flow_id: str, steps: list[FlowStepResult], state: BarrierState,
                 limit: int) -> dict[str, Any]:
    flow_results = FlowResults(flow_id=flow_id, steps=steps, aborted=state is BarrierState.ABORTED,
                               timed_out=state is BarrierState.TIMED_OUT)
    budget = limit - ROW_HEADROOM_BYTES - len(join.model_dump_json(exclude_defaults=True))

    def size(results: FlowResults) -> int:
        return len(to_json(results.model_dump(mode="json")))

    if size(flow_results) > budget:
        flow_results = _fit(flow_results, budget, size)
    return {"flow_results": flow_results.model_dump(mode="json")}


def _fit(results: FlowResults, budget: int, size: Any) -> FlowResults:
    steps = list(results.steps)
    by_size = sorted(range(len(steps)), key=lambda i: -len(to_json(steps[i].result)))
    total = size(results)
    for i in by_size:
        if total <= budget:
            break
        before = len(to_json(steps[i].result))
        if steps[i].result is None:
            continue
        steps[i] = steps[i].model_copy(update={
            "result": None, "result_dropped": f"result of {before} bytes left out: the join's payload is limited"})
        total -= before
    fitted = results.model_copy(update={"steps": steps})
    while steps and size(fitted) > budget:
        keep = min(max(len(steps) * budget // max(size(fitted), 1) - 1, 0), len(steps) - 1)
        steps = steps[:keep]
        fitted = results.model_copy(update={"steps": steps, "truncated": len(results.steps) - len(steps)})
    return fitted
