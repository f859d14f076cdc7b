"""A join's view of its flow's results, read by reference.

The join's payload holds how the flow ended and its counts (`FlowResults`); the steps' results
stay in the barrier and are read a page at a time, so a join of 10,000 steps with large results
has a payload of a few hundred bytes. A small flow's steps also come inline in the payload
(`steps_inline`), which the reader then serves without a read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from tq_cloud.domain.flows import FlowResults, FlowStepResult, StepCounts
from tq_cloud.errors import TqError
from tq_cloud.ports.barrier import FlowBarrierProvider


class FlowResultsReader:
    """Example:
        @app.task("orders", "ship")
        async def ship(task: Task, actions: ExecutorActions) -> None:
            results = actions.flow_results(task)
            shipped = [step.result["sku"] async for step in results.steps() if step.status == "success"]
            actions.success(task, {"shipped": shipped, "aborted": results.aborted})
    """

    def __init__(self, summary: FlowResults, barriers: FlowBarrierProvider | None) -> None:
        self.summary = summary
        self._barriers = barriers

    @classmethod
    def of(cls, payload: Any, barriers: FlowBarrierProvider | None) -> FlowResultsReader:
        """The reader for a join task's payload (a dict, or a model with `flow_results`)."""
        data = payload.get("flow_results") if isinstance(payload, dict) else getattr(payload, "flow_results", None)
        if data is None:
            raise TqError("this task is not a flow's join: its payload has no flow_results")
        return cls(FlowResults.model_validate(data), barriers)

    @property
    def flow_id(self) -> str:
        return self.summary.flow_id

    @property
    def aborted(self) -> bool:
        return self.summary.aborted

    @property
    def timed_out(self) -> bool:
        return self.summary.timed_out

    @property
    def counts(self) -> StepCounts:
        return self.summary.counts

    async def steps(self, page_size: int = 100) -> AsyncIterator[FlowStepResult]:
        """Each recorded step's result, by step index."""
        if self.summary.steps_inline:
            for step in self.summary.steps:
                yield step
            return
        if self._barriers is None:
            raise TqError("reading a flow's results needs the flow barrier provider")
        after = -1
        while page := await self._barriers.step_results_page(self.flow_id, after, page_size):
            for step in page:
                yield step
            after = page[-1].step_index

    async def all(self) -> list[FlowStepResult]:
        """Every step's result in one list (mind the memory of a very large flow)."""
        return [step async for step in self.steps()]
