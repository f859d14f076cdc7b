"""Delivers lifecycle events to listeners without ever letting them break processing.

`mode="sync"` awaits each listener before processing goes on (for listeners that must see
events in order, or tests); `mode="async"` runs them in the background and `drain()` waits
for the stragglers at shutdown.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from tq_cloud.domain.events import TaskContext, TaskContextFields, TaskTiming
from tq_cloud.domain.task import Task
from tq_cloud.ports.lifecycle import (
    FlowLifecycleProvider,
    TaskLifecycleProvider,
    WorkerLifecycleProvider,
)

log = logging.getLogger("tq_cloud.lifecycle")


@dataclass(frozen=True, kw_only=True)
class LifecycleConfig:
    """How lifecycle callbacks run: awaited in the commit (`sync`) or beside it (`async`), how
    often workers send heartbeats, and whether task events carry their payloads.

    Example:
        TaskHandler(queue=queue, registry=app, storage=storage, locks=locks, task_lifecycle=audit,
                    lifecycle_config=LifecycleConfig(mode="sync", heartbeat_interval=30.0))
    """
    mode: Literal["sync", "async"] = "async"
    heartbeat_interval: float = 5.0
    include_payload: bool = False


class LifecycleEmitter:
    def __init__(
        self,
        *,
        worker_id: str,
        task_provider: TaskLifecycleProvider | None = None,
        worker_provider: WorkerLifecycleProvider | None = None,
        flow_provider: FlowLifecycleProvider | None = None,
        config: LifecycleConfig | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.task_provider = task_provider
        self.worker_provider = worker_provider
        self.flow_provider = flow_provider
        self.config = config or LifecycleConfig()
        self._pending: set[asyncio.Task[None]] = set()

    def wants(self, hook: str) -> bool:
        """Whether the task provider listens to `hook` (a provider may implement only some):
        callers skip building events nobody hears."""
        return self.task_provider is not None and callable(getattr(self.task_provider, hook, None))

    async def emit(self, provider: object | None, hook: str, event: object) -> None:
        if provider is None or not callable(getattr(provider, hook, None)):
            return
        if self.config.mode == "sync":
            await _call(provider, hook, event)
        else:
            job = asyncio.ensure_future(_call(provider, hook, event))
            self._pending.add(job)
            job.add_done_callback(self._pending.discard)

    async def task(self, hook: str, event: object) -> None:
        await self.emit(self.task_provider, hook, event)

    async def worker(self, hook: str, event: object) -> None:
        await self.emit(self.worker_provider, hook, event)

    async def flow(self, hook: str, event: object) -> None:
        await self.emit(self.flow_provider, hook, event)

    async def drain(self) -> None:
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def context(
        self, task: Task, max_retries: int, now: datetime, consumer_id: str | None = None
    ) -> TaskContextFields:
        """The TaskContext fields, as keyword arguments for any task event."""
        return {
            "task_id": task.id or "",
            "task_type": task.type,
            "queue_id": task.queue_id,
            "payload": _jsonable(task.payload) if self.config.include_payload else {},
            "attempt": task.execution_stats.retry_count + 1,
            "max_retries": max_retries,
            "scheduled_at": task.created_at or now,
            "worker_id": self.worker_id,
            "consumer_id": consumer_id,
            "log_context": task.metadata.log_context,
        }

    def scheduled_event(self, task: Task, max_retries: int, now: datetime) -> TaskContext:
        return TaskContext(**self.context(task, max_retries, now))


def timing(created_at: datetime | None, started_at: datetime, finished_at: datetime) -> TaskTiming:
    origin = created_at or started_at
    return TaskTiming(
        queued_duration_ms=max((started_at - origin).total_seconds() * 1000, 0.0),
        processing_duration_ms=(finished_at - started_at).total_seconds() * 1000,
        total_duration_ms=max((finished_at - origin).total_seconds() * 1000, 0.0),
    )


def _jsonable(payload: Any) -> Any:
    dump = getattr(payload, "model_dump", None)
    return dump(mode="json") if callable(dump) else payload


async def _call(provider: object, hook: str, event: object) -> None:
    try:
        result = getattr(provider, hook)(event)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("lifecycle listener %s.%s failed", type(provider).__name__, hook)
