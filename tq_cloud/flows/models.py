"""Flow definitions and the results a join receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tq_cloud.core.models import EntityRef, FailurePolicy, JoinTarget, Task

FLOW_TIMEOUT_TYPE = "_flow.timeout"


def timeout_timer_name(flow_id: str) -> str:
    return f"flow-timeout-{flow_id}"


class FlowStep(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(min_length=1)
    queue_id: str = Field(min_length=1)
    payload: Any = None
    entity: EntityRef | None = None
    retries: int | None = Field(default=None, ge=0)
    retry_after: int | None = Field(default=None, ge=0)


class FlowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    join: JoinTarget
    failure_policy: FailurePolicy = "continue"
    timeout_ms: int | None = Field(default=None, gt=0)
    entity: EntityRef | None = None


class FlowStepResult(BaseModel):
    step_index: int = Field(ge=0)
    status: Literal["success", "fail"]
    result: Any = None
    error: str | None = None
    result_dropped: str | None = None


class FlowResults(BaseModel):
    """`payload["flow_results"]` of a join task. `truncated`: how many steps were left out
    because the results did not fit one record (see flows/join_payload.py)."""

    flow_id: str
    steps: list[FlowStepResult]
    aborted: bool = False
    timed_out: bool = False
    truncated: int = 0


@dataclass(slots=True)
class StartedFlow:
    flow_id: str
    total_steps: int
    started_at: datetime
    config: FlowConfig
    tasks: list[Task] = field(default_factory=list)
