"""Lifecycle listener ports. Subclass and override what you need: every hook is a no-op by
default, may be sync or async, and an error it raises is logged, never propagated."""

from __future__ import annotations

from tq_cloud.domain.events import (
    BatchCompleted,
    BatchStarted,
    ConsumerStarted,
    ConsumerStopped,
    FlowCompleted,
    FlowStarted,
    TaskCancelled,
    TaskCompleted,
    TaskContext,
    TaskExhausted,
    TaskFailed,
    TaskStarted,
    WorkerHeartbeat,
    WorkerInfo,
    WorkerStopped,
)


class TaskLifecycleProvider:
    """Callbacks on each task's life: started, completed, failed (with whether it will
    retry), exhausted, cancelled. Implement the methods you need.

    Example:
        class Alerts:
            async def on_task_exhausted(self, event: TaskExhausted) -> None:
                page_someone(event.task_type, event.error)

        handler = TaskHandler(queue=queue, registry=app, storage=storage, locks=locks, task_lifecycle=Alerts())
    """
    def on_task_scheduled(self, event: TaskContext) -> object:
        return None

    def on_task_started(self, event: TaskStarted) -> object:
        return None

    def on_task_completed(self, event: TaskCompleted) -> object:
        return None

    def on_task_failed(self, event: TaskFailed) -> object:
        return None

    def on_task_exhausted(self, event: TaskExhausted) -> object:
        return None

    def on_task_cancelled(self, event: TaskCancelled) -> object:
        return None


class WorkerLifecycleProvider:
    """Callbacks on a worker's life: started, heartbeat (with its stats), stopped.

    Example:
        class Health:
            async def on_worker_heartbeat(self, event: WorkerHeartbeat) -> None:
                print(event.worker_id, event.stats)
    """
    def on_worker_started(self, event: WorkerInfo) -> object:
        return None

    def on_worker_heartbeat(self, event: WorkerHeartbeat) -> object:
        return None

    def on_worker_stopped(self, event: WorkerStopped) -> object:
        return None

    def on_batch_started(self, event: BatchStarted) -> object:
        return None

    def on_batch_completed(self, event: BatchCompleted) -> object:
        return None

    def on_consumer_started(self, event: ConsumerStarted) -> object:
        return None

    def on_consumer_stopped(self, event: ConsumerStopped) -> object:
        return None


class FlowLifecycleProvider:
    """Callbacks on a flow's life: started and completed (with how it ended). Implement the
    methods you need; each is awaited after the commit that decided it.

    Example:
        class FlowAudit:
            async def on_flow_completed(self, event: FlowCompleted) -> None:
                print(event.flow_id, event.outcome)

        handler = TaskHandler(queue=queue, registry=app, storage=storage, locks=locks, flow_lifecycle=FlowAudit())
    """
    def on_flow_started(self, event: FlowStarted) -> object:
        return None

    def on_flow_completed(self, event: FlowCompleted) -> object:
        return None
