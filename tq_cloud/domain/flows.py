"""Flow definitions and the results a join receives. Their validators are built on first use
(`defer_build`), so a worker whose app starts no flow never pays for them at a cold start."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tq_cloud.domain.limits import MAX_DELAY
from tq_cloud.domain.task import EntityRef, FailurePolicy, JoinTarget, StepFailurePolicy, Task
from tq_cloud.ids import derived_id

FLOW_TIMEOUT_TYPE = "_flow.timeout"
FLOW_RETIRE_TYPE = "_flow.retire"
"""The framework's task that gives a closed flow's items their expiry, a page at a time (a flow
without a deadline keeps them, as its meta item, for as long as it is active)."""


def timeout_timer_name(flow_id: str) -> str:
    return f"flow-timeout-{flow_id}"


class FlowStep(BaseModel):
    """One step of a flow: an ordinary task, with a failure policy of its own if it needs one.

    Example:
        FlowStep(type="reserve", queue_id="orders", payload={"sku": "A"}, on_failure="ignore")
    """
    model_config = ConfigDict(extra="forbid", defer_build=True)
    type: str = Field(min_length=1)
    queue_id: str = Field(min_length=1)
    payload: Any = None
    entity: EntityRef | None = None
    retries: int | None = Field(default=None, ge=0)
    retry_after: int | None = Field(default=None, ge=0)
    on_failure: StepFailurePolicy | None = None
    """This step's failure policy, over the flow's (see `StepFailurePolicy`)."""


class FlowConfig(BaseModel):
    """How a flow ends: its join task, whether a failed step aborts it, its timeout, and the
    entity its projection is bound to.

    Example:
        actions.start_flow(steps, FlowConfig(join=JoinTarget(type="ship", queue_id="orders"),
                                              failure_policy="abort", timeout_ms=60_000))
    """
    model_config = ConfigDict(extra="forbid", defer_build=True)
    join: JoinTarget
    failure_policy: FailurePolicy = "continue"
    timeout_ms: int | None = Field(default=None, gt=0, le=int(MAX_DELAY.total_seconds() * 1000))
    entity: EntityRef | None = None


class FlowStepResult(BaseModel):
    model_config = ConfigDict(defer_build=True)
    step_index: int = Field(ge=0)
    status: Literal["success", "fail", "ignored"]
    result: Any = None
    error: str | None = None
    result_dropped: str | None = None
    trace: str | None = None
    """The traceparent of the step's run, when traced: the join's span links it."""


class StepCounts(BaseModel):
    model_config = ConfigDict(defer_build=True)
    succeeded: int = 0
    failed: int = 0
    ignored: int = 0


class FlowResults(BaseModel):
    """`payload["flow_results"]` of a join task: how the flow ended and its counts, with the
    steps' results inline only for a small flow (`steps_inline`); read them, for a flow of any
    size, through `actions.flow_results(task)` (see flows/results.py), which pages through the
    results the barrier keeps.

    Example:
        summary = actions.flow_results(task).summary     # in a join: a FlowResults
        if summary.aborted:
            ...
    """

    model_config = ConfigDict(defer_build=True)
    flow_id: str
    total_steps: int = 0
    aborted: bool = False
    timed_out: bool = False
    counts: StepCounts = Field(default_factory=StepCounts)
    steps_inline: bool = True
    steps: list[FlowStepResult] = Field(default_factory=list)


@dataclass(slots=True)
class StartedFlow:
    flow_id: str
    total_steps: int
    started_at: datetime
    config: FlowConfig
    tasks: list[Task] = field(default_factory=list)

def retire_task(flow_id: str, queue_id: str, now: datetime, after: int = -1) -> Task:
    """The task that dates a closed flow's items from step `after` on (see FLOW_RETIRE_TYPE):
    stored, so that it is sent once whatever redelivers its parent."""
    return Task(id=derived_id(flow_id, "retire", after), type=FLOW_RETIRE_TYPE, queue_id=queue_id,
                payload={"flow_id": flow_id, "after": after}, execute_at=now, created_at=now, force_store=True,
                retries=10)
