"""The task and the data it carries.

A task is a pydantic model so that a record from Kinesis or a row from DynamoDB is validated
field by field on the way in, and a bad one becomes a recorded failure with a precise error.
Framework data lives in `execution_stats` and `metadata`; the user's payload is never touched.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, Generic, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from typing_extensions import TypeVar

P = TypeVar("P", default=Any)

MAX_LOG_CONTEXT_KEYS = 10
MAX_LOG_CONTEXT_CHARS = 1024


class TaskStatus(StrEnum):
    """Where a task is: scheduled, processing, then executed, failed, ignored or cancelled
    (the final ones).

    Example:
        failed = await storage.list_tasks(TaskQuery(status=TaskStatus.FAILED))
        assert TaskStatus.EXECUTED.is_terminal
    """
    SCHEDULED = "scheduled"
    PROCESSING = "processing"
    EXECUTED = "executed"
    FAILED = "failed"
    IGNORED = "ignored"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({TaskStatus.EXECUTED, TaskStatus.FAILED, TaskStatus.IGNORED, TaskStatus.CANCELLED})

FailurePolicy = Literal["continue", "abort"]
StepFailurePolicy = Literal["continue", "abort", "ignore"]
"""A step's own failure policy, over its flow's: `abort` closes the flow on this step's failure
(even under `continue`), `continue` never does (even under `abort`) and the join sees the step
failed, `ignore` never does and the join sees the step `ignored`."""


MAX_ENTITY_KEY_BYTES = 1024
"""An entity's key (its type and id as a JSON pair) is a DynamoDB index key (2,048 bytes for a
partition key, 1,024 for a sort key): kept within the smaller, so it fits wherever it goes."""


class EntityRef(BaseModel):
    """The domain object a task works on (a user, an order); projections are keyed by it. Its
    type and id together are refused past MAX_ENTITY_KEY_BYTES where the task is made, so no
    projection is lost at commit for a key DynamoDB would refuse.

    Example:
        Task(type="invoice", queue_id="billing", payload={}, entity=EntityRef(type="user", id="u-7"))
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str = Field(min_length=1)
    type: str = Field(min_length=1)

    @model_validator(mode="after")
    def _key_fits(self) -> EntityRef:
        size = len(json.dumps([self.type, self.id], separators=(",", ":")).encode())
        if size > MAX_ENTITY_KEY_BYTES:
            raise ValueError(f"entity type and id make a {size}-byte key, over the {MAX_ENTITY_KEY_BYTES}-byte "
                             "limit of the index they are kept in: use a shorter id (a hash of a long one)")
        return self


class JoinTarget(BaseModel):
    """The task a flow's join becomes: its type and queue (and optionally a payload of its own).

    Example:
        FlowConfig(join=JoinTarget(type="ship", queue_id="orders"))
    """
    model_config = ConfigDict(frozen=True, extra="forbid")
    type: str = Field(min_length=1)
    queue_id: str = Field(min_length=1)


class FlowMeta(BaseModel):
    """Where a task sits in a flow. Steps have step_index >= 0; joins and sentinels have -1."""

    model_config = ConfigDict(extra="forbid")
    flow_id: str
    step_index: int
    total_steps: int = Field(ge=1)
    join: JoinTarget
    failure_policy: FailurePolicy = "continue"
    step_failure_policy: StepFailurePolicy | None = None
    is_join: bool = False
    is_timeout: bool = False
    entity: EntityRef | None = None
    started_at: AwareDatetime | None = None
    timeout_at: AwareDatetime | None = None


class ScheduleMeta(BaseModel):
    """On an occurrence of a schedule (`task.metadata.schedule`): which schedule, and the time
    the occurrence was scheduled for (EventBridge's `<aws.scheduler.scheduled-time>`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    scheduled_at: AwareDatetime


class TaskMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid")
    log_context: dict[str, str] | None = None
    flow_meta: FlowMeta | None = None
    schedule: ScheduleMeta | None = None


class FailedAttempt(BaseModel):
    """One failed run, as the task's row and its console page show it (the last
    `ATTEMPTS_KEPT`; the error cut to `ATTEMPT_ERROR_CHARS`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    attempt: int = Field(ge=1)
    started_at: AwareDatetime
    finished_at: AwareDatetime
    error: str | None = None
    error_type: str | None = None


ATTEMPTS_KEPT = 5
ATTEMPT_ERROR_CHARS = 300


class ExecutionStats(BaseModel):
    """Framework bookkeeping. The executor's own figures go to `details`, so they can never
    overwrite `retry_count` or the error fields."""

    model_config = ConfigDict(extra="forbid")
    retry_count: int = Field(default=0, ge=0)
    deferrals: int = Field(default=0, ge=0, description="reschedules that used no attempt")
    last_error: str | None = None
    last_error_type: str | None = None
    failed_at: AwareDatetime | None = None
    ignored_reason: str | None = None
    cancel_reason: str | None = Field(default=None, description="why `handler.cancel` stopped the task")
    cancel_id: str | None = Field(default=None, description=(
        "the call of `handler.cancel` that cancelled the row (so a retried call whose first answer "
        "was lost knows the cancel was its own)"))
    result_dropped: str | None = None
    redrives: int = Field(default=0, ge=0, description="times an operator sent the task back to run")
    redriven_at: AwareDatetime | None = None
    redrive_base: int = Field(default=0, ge=0, description="retry_count when last re-driven: the retry "
                                                           "budget and the back-off count from here")
    not_redrivable: str | None = Field(default=None, description=(
        "why this row cannot be sent back to run (it keeps a stand-in, not the task as sent)"))
    requeues: int = Field(default=0, ge=0, description=(
        "times a consumer put the task back on the stream, uncommitted, so that the committed tasks "
        "of its aggregated record are not redelivered with it (bounded: see aws_lambda/remainders.py)"))
    details: dict[str, Any] = Field(default_factory=dict)
    attempts: tuple[FailedAttempt, ...] = Field(default=(), description=(
        "the last failed runs, oldest first (bounded: a retried task's record stays small)"))


class TaskProgress(BaseModel):
    """How far a running task says it is (`actions.progress`), as its row last recorded it.

    Example:
        actions.progress(task, 0.5, "half the rows")     # later: (await handler.find(id)).progress
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    done: float = Field(ge=0.0, le=1.0)
    note: str | None = None
    at: AwareDatetime


class Task(BaseModel, Generic[P]):
    """One unit of work. `Task[MyPayload]` types the payload for an executor that declares
    `payload_model=MyPayload`; the runner validates the payload before the executor runs.

    Example:
        Task(type="send", queue_id="email", payload={"to": "a@b.c"}, partition_key="a@b.c")
    """

    model_config = ConfigDict(extra="forbid", validate_default=False)

    id: str | None = None
    type: str = Field(min_length=1)
    queue_id: str = Field(min_length=1)
    payload: P
    execute_at: AwareDatetime | None = None
    status: TaskStatus = TaskStatus.SCHEDULED
    retries: int | None = Field(default=None, ge=0)
    retry_after: int | None = Field(default=None, ge=0, description="base back-off in ms")
    execution_stats: ExecutionStats = Field(default_factory=ExecutionStats)
    entity: EntityRef | None = None
    force_store: bool = False
    metadata: TaskMetadata = Field(default_factory=TaskMetadata)
    partition_key: str | None = Field(default=None, min_length=1, max_length=256)
    dedup_key: str | None = Field(default=None, min_length=1, max_length=256, description=(
        "a second task of the same queue, type and key within its executor's dedup_window is not sent"))
    execution_result: Any = None
    created_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None
    processing_started_at: AwareDatetime | None = None
    lease_until: AwareDatetime | None = Field(default=None, exclude=True, description=(
        "read from the store only: when the live run lease on the task's row ends; never written"))
    cancel_requested: str | None = Field(default=None, exclude=True, description=(
        "read from the store only: the reason of a cancel asked while the task ran (`handler.cancel`)"))
    progress: TaskProgress | None = Field(default=None, exclude=True, description=(
        "read from the store only: the last progress a run of the task recorded"))
    expires_at: AwareDatetime | None = Field(default=None, exclude=True, description=(
        "read from the store only: when the store deletes the finished row (its TTL)"))

    @property
    def key(self) -> str:
        """The id, which every task has once it went through `add_tasks`."""
        if self.id is None:
            raise ValueError(f"task of type {self.type!r} has no id; add it through add_tasks")
        return self.id

    @property
    def flow_meta(self) -> FlowMeta | None:
        return self.metadata.flow_meta

    @property
    def retry_count(self) -> int:
        return self.execution_stats.retry_count
