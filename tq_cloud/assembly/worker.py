"""Long-running consumption for processes that pull from the queue (local runs, containers).

Stopping is graceful: when `stop` is set, each loop finishes the batch in hand and exits. If a
loop is cancelled instead, the batch in hand is given back to the queue before the
cancellation propagates, so nothing received is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from tq_cloud.asynctasks.manager import AsyncTaskManager
from tq_cloud.clock import Clock
from tq_cloud.core.emitter import LifecycleEmitter
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.core.settings import HandlerSettings
from tq_cloud.core.stats import StatsBook
from tq_cloud.domain.events import (
    ConsumerStarted,
    ConsumerStats,
    ConsumerStopped,
    WorkerHeartbeat,
    WorkerInfo,
    WorkerStopped,
    worker_info_fields,
)
from tq_cloud.domain.task import Task
from tq_cloud.ports.queue import MessageQueue

log = logging.getLogger("tq_cloud.worker")


class ConsumingHandler(Protocol):
    """What the loops need of a TaskHandler (declared here so that worker.py does not import
    handler.py, which imports it)."""

    clock: Clock
    queue: MessageQueue
    registry: TaskQueuesManager
    settings: HandlerSettings
    stats: StatsBook
    lifecycle: LifecycleEmitter
    worker_id: str
    async_manager: AsyncTaskManager | None

    def worker_info(self, queues: Sequence[str] = ()) -> WorkerInfo: ...

    async def process_batch(self, tasks: Sequence[Task], consumer_id: str = "direct",
                            claim_ttl: timedelta | None = None) -> Any: ...

    async def process_mature_tasks(self, deadline: datetime | None = None) -> int: ...

    def take_async_uncommitted(self) -> list[Task]: ...


class Worker:
    def __init__(self, handler: ConsumingHandler) -> None:
        self.handler = handler

    async def _pause(self, stop: asyncio.Event, seconds: float) -> None:
        """Wait on the handler's clock, returning early when `stop` is set."""
        sleeper = asyncio.ensure_future(self.handler.clock.sleep(seconds))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for job in (sleeper, stopper):
                job.cancel()
            await asyncio.gather(sleeper, stopper, return_exceptions=True)

    async def consume(self, queue_id: str, stop: asyncio.Event) -> None:
        h = self.handler
        consumer_id = f"memory:{queue_id}:{h.worker_id}"
        stats = h.stats.consumers.setdefault(consumer_id, ConsumerStats(consumer_id=consumer_id,
                                                                        queue_id=queue_id))
        started = ConsumerStarted(consumer_id=consumer_id, queue_id=queue_id, worker_id=h.worker_id,
                                  started_at=h.clock.now())
        await h.lifecycle.worker("on_consumer_started", started)
        reason = "shutdown"
        try:
            while not stop.is_set():
                tasks = await h.queue.receive(queue_id, h.settings.receive_batch_size)
                if not tasks:
                    await self._pause(stop, h.settings.poll_interval)
                    continue
                try:
                    report = await h.process_batch(tasks, consumer_id)
                except asyncio.CancelledError:
                    await asyncio.shield(h.queue.requeue(tasks))
                    raise
                again = report.not_committed + h.take_async_uncommitted()
                if again:
                    await h.queue.requeue(again)
        except asyncio.CancelledError:
            reason = "cancelled"
            raise
        finally:
            await h.lifecycle.worker("on_consumer_stopped", ConsumerStopped(
                consumer_id=consumer_id, queue_id=queue_id, worker_id=h.worker_id,
                started_at=started.started_at, reason=reason, stats=stats))

    async def sweep(self, stop: asyncio.Event) -> None:
        """Send mature tasks every `mature_interval` seconds. Claims are conditional in the
        store, so several sweepers can run at once without sending a task twice."""
        h = self.handler
        while not stop.is_set():
            try:
                await h.process_mature_tasks()
            except Exception as exc:
                log.exception("mature task sweep failed")
                await h.stats.error(exc, "process_mature_tasks")
            await self._pause(stop, h.settings.mature_interval)

    async def heartbeat(self, stop: asyncio.Event, queues: Sequence[str]) -> None:
        h = self.handler
        interval = h.lifecycle.config.heartbeat_interval
        while not stop.is_set():
            await self._pause(stop, interval)
            if stop.is_set():
                return
            info = h.worker_info(queues)
            await h.lifecycle.worker("on_worker_heartbeat", WorkerHeartbeat(
                **worker_info_fields(info), stats=h.stats.worker, memory_usage_mb=_rss_mb(),
                active_consumers=tuple(h.stats.consumers.values())))

    async def serve(self, stop: asyncio.Event, queues: Sequence[str] | None = None) -> None:
        """Consume every queue (default: all registered), sweep mature tasks, beat, until `stop`."""
        h = self.handler
        enabled = list(queues) if queues is not None else h.registry.get_queues()
        info = h.worker_info(enabled)
        await h.lifecycle.worker("on_worker_started", info)
        jobs = [asyncio.ensure_future(self.consume(q, stop)) for q in enabled]
        jobs.append(asyncio.ensure_future(self.sweep(stop)))
        if h.lifecycle.worker_provider is not None:
            jobs.append(asyncio.ensure_future(self.heartbeat(stop, enabled)))
        reason = "shutdown"
        try:
            await asyncio.gather(*jobs)
        except asyncio.CancelledError:
            reason = "cancelled"
            for job in jobs:
                job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*jobs, return_exceptions=True)
            raise
        finally:
            if h.async_manager is not None:
                await h.async_manager.shutdown()
            await h.stats.final()
            await h.lifecycle.worker("on_worker_stopped", WorkerStopped(
                **worker_info_fields(info), reason=reason, final_stats=h.stats.worker))
            await h.lifecycle.drain()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
