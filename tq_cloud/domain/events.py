"""What lifecycle listeners receive. Field names follow the reference library's contexts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypedDict

from tq_cloud.domain.task import EntityRef, JoinTarget


class TaskContextFields(TypedDict):
    task_id: str
    task_type: str
    queue_id: str
    payload: Any
    attempt: int
    max_retries: int
    scheduled_at: datetime
    worker_id: str
    consumer_id: str | None
    log_context: dict[str, str] | None


class WorkerInfoFields(TypedDict):
    worker_id: str
    hostname: str
    pid: int
    started_at: datetime
    enabled_queues: tuple[str, ...]


def worker_info_fields(info: WorkerInfo) -> WorkerInfoFields:
    return {"worker_id": info.worker_id, "hostname": info.hostname, "pid": info.pid,
            "started_at": info.started_at, "enabled_queues": info.enabled_queues}


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskContext:
    task_id: str
    task_type: str
    queue_id: str
    payload: Any
    attempt: int
    max_retries: int
    scheduled_at: datetime
    worker_id: str
    consumer_id: str | None = None
    log_context: dict[str, str] | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskTiming:
    queued_duration_ms: float
    processing_duration_ms: float
    total_duration_ms: float


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskStarted(TaskContext):
    started_at: datetime
    queued_duration_ms: float


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskCompleted(TaskContext):
    timing: TaskTiming
    result: Any = None


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskFailed(TaskContext):
    timing: TaskTiming
    error: str
    will_retry: bool
    next_attempt_at: datetime | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskExhausted(TaskContext):
    timing: TaskTiming
    error: str
    total_attempts: int
    stored: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskCancelled(TaskContext):
    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerInfo:
    worker_id: str
    hostname: str
    pid: int
    started_at: datetime
    enabled_queues: tuple[str, ...]


@dataclass(kw_only=True, slots=True)
class WorkerStats:
    tasks_processed: int = 0
    tasks_succeeded: int = 0
    tasks_failed: int = 0
    total_processing_ms: float = 0.0

    @property
    def avg_processing_ms(self) -> float:
        return self.total_processing_ms / self.tasks_processed if self.tasks_processed else 0.0


@dataclass(kw_only=True, slots=True)
class ConsumerStats:
    consumer_id: str
    queue_id: str
    tasks_processed: int = 0
    tasks_succeeded: int = 0
    tasks_failed: int = 0
    last_task_at: datetime | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerHeartbeat(WorkerInfo):
    stats: WorkerStats
    memory_usage_mb: float
    active_consumers: tuple[ConsumerStats, ...] = field(default_factory=tuple)


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerStopped(WorkerInfo):
    reason: str
    final_stats: WorkerStats


@dataclass(frozen=True, kw_only=True, slots=True)
class BatchStarted(WorkerInfo):
    batch_size: int
    task_types: tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class BatchCompleted(WorkerInfo):
    batch_size: int
    succeeded: int
    failed: int
    duration_ms: float


@dataclass(frozen=True, kw_only=True, slots=True)
class ConsumerStarted:
    consumer_id: str
    queue_id: str
    worker_id: str
    started_at: datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class ConsumerStopped(ConsumerStarted):
    reason: str
    stats: ConsumerStats


@dataclass(frozen=True, kw_only=True, slots=True)
class FlowStarted:
    flow_id: str
    total_steps: int
    join: JoinTarget
    failure_policy: str
    entity: EntityRef | None
    started_at: datetime
    step_types: tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class FlowCompleted:
    flow_id: str
    total_steps: int
    join: JoinTarget
    outcome: Literal["completed", "aborted", "timed_out", "cancelled"]
    duration_ms: float | None
    steps_succeeded: int
    steps_failed: int
    trigger_step_index: int | None = None
