"""A listener that logs every task and worker event: health at a glance, no setup."""

from __future__ import annotations

import logging

from tq_cloud.domain.events import (
    BatchCompleted,
    BatchStarted,
    ConsumerStarted,
    ConsumerStopped,
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
from tq_cloud.ports.lifecycle import TaskLifecycleProvider, WorkerLifecycleProvider


class ConsoleHealthProvider(TaskLifecycleProvider, WorkerLifecycleProvider):
    """A worker lifecycle provider that logs each worker's start, heartbeat and stop, with its
    stats: the health lines an operator reads in CloudWatch or a terminal.

    Example:
        handler = TaskHandler(queue=queue, registry=app, storage=storage, locks=locks,
                          worker_lifecycle=ConsoleHealthProvider())
    """
    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger("tq_cloud.health")

    def on_task_scheduled(self, event: TaskContext) -> None:
        self.log.info("scheduled %s %s", event.task_type, event.task_id)

    def on_task_started(self, event: TaskStarted) -> None:
        self.log.info("started %s %s after %.0f ms queued", event.task_type, event.task_id,
                      event.queued_duration_ms)

    def on_task_completed(self, event: TaskCompleted) -> None:
        self.log.info("completed %s %s in %.1f ms", event.task_type, event.task_id,
                      event.timing.processing_duration_ms)

    def on_task_failed(self, event: TaskFailed) -> None:
        self.log.warning("failed %s %s (attempt %d, will_retry=%s): %s", event.task_type,
                         event.task_id, event.attempt, event.will_retry, event.error)

    def on_task_exhausted(self, event: TaskExhausted) -> None:
        self.log.error("exhausted %s %s after %d attempts: %s", event.task_type, event.task_id,
                       event.total_attempts, event.error)

    def on_task_cancelled(self, event: TaskCancelled) -> None:
        self.log.warning("cancelled %s %s: %s", event.task_type, event.task_id, event.reason)

    def on_worker_started(self, event: WorkerInfo) -> None:
        self.log.info("worker %s started on %s, queues %s", event.worker_id, event.hostname,
                      ",".join(event.enabled_queues))

    def on_worker_heartbeat(self, event: WorkerHeartbeat) -> None:
        self.log.info("heartbeat %s: %d processed, %.1f MB", event.worker_id,
                      event.stats.tasks_processed, event.memory_usage_mb)

    def on_worker_stopped(self, event: WorkerStopped) -> None:
        self.log.info("worker %s stopped (%s) after %d tasks", event.worker_id, event.reason,
                      event.final_stats.tasks_processed)

    def on_batch_started(self, event: BatchStarted) -> None:
        self.log.debug("batch of %d started", event.batch_size)

    def on_batch_completed(self, event: BatchCompleted) -> None:
        self.log.debug("batch of %d: %d succeeded, %d failed in %.1f ms", event.batch_size,
                       event.succeeded, event.failed, event.duration_ms)

    def on_consumer_started(self, event: ConsumerStarted) -> None:
        self.log.info("consumer %s started on %s", event.consumer_id, event.queue_id)

    def on_consumer_stopped(self, event: ConsumerStopped) -> None:
        self.log.info("consumer %s stopped (%s)", event.consumer_id, event.reason)
