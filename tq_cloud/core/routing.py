"""Where a task goes when it is added: the queue now, the store for later, or both.

- due later than the immediate window (2 min), or due later at all on a queue that cannot
  delay (Kinesis): stored as `scheduled`; the sweeper enqueues it when due;
- `force_store` and due: stored as `processing` and enqueued; a failed queue write resets the
  row to `scheduled`, so the sweeper sends it instead;
- otherwise: enqueued only, the cheapest path (no store write at all).
Stored tasks keep `force_store=True`: it marks "this task has a row" for later transitions.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from pydantic import ValidationError

from tq_cloud.clock import Clock
from tq_cloud.core.log_context import limit_log_context
from tq_cloud.core.models import Task, TaskStatus
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.errors import InvalidTaskError, PayloadTooLargeError
from tq_cloud.flows.models import timeout_timer_name
from tq_cloud.ids import new_id
from tq_cloud.lifecycle.emitter import LifecycleEmitter
from tq_cloud.ports.queue import MessageQueue
from tq_cloud.ports.storage import TaskStorage
from tq_cloud.ports.timer import Timer

log = logging.getLogger("tq_cloud.routing")

IMMEDIATE_WINDOW = timedelta(minutes=2)
TasksHook = Callable[[Sequence[Task]], Awaitable[None]]


class TaskRouter:
    def __init__(
        self,
        queue: MessageQueue,
        storage: TaskStorage,
        registry: TaskQueuesManager,
        clock: Clock,
        lifecycle: LifecycleEmitter,
        *,
        immediate_window: timedelta = IMMEDIATE_WINDOW,
        on_scheduled: TasksHook | None = None,
        timer: Timer | None = None,
    ) -> None:
        self.queue = queue
        self.storage = storage
        self.registry = registry
        self.clock = clock
        self.lifecycle = lifecycle
        self.immediate_window = immediate_window
        self.on_scheduled = on_scheduled
        self.timer = timer

    def prepare(self, task: Task, now: datetime) -> Task:
        """A routed copy: id, timestamps, bounded log context, the executor's partition key."""
        executor = self.registry.get_executor(task.queue_id, task.type)
        if executor and executor.options.payload_model is not None:
            try:
                executor.options.payload_model.model_validate(task.payload)
            except ValidationError as exc:
                raise InvalidTaskError(
                    f"task {task.id!r} ({task.queue_id}/{task.type}): payload does not match "
                    f"{executor.options.payload_model.__name__}: {exc}"
                ) from exc
        update: dict[str, object] = {"status": TaskStatus.SCHEDULED, "updated_at": now}
        if task.id is None:
            update["id"] = new_id()
        if task.created_at is None:
            update["created_at"] = now
        if task.execute_at is None:
            update["execute_at"] = now
        ctx = task.metadata.log_context
        if ctx:
            limited = limit_log_context(ctx, task.id or str(update.get("id")))
            if limited != ctx:
                update["metadata"] = task.metadata.model_copy(update={"log_context": limited})
        if executor and executor.options.partition_key is not None:
            key = executor.options.partition_key(task)
            if key:
                update["partition_key"] = str(key)
        return task.model_copy(update=update)

    def check(self, task: Task) -> None:
        """Raise PayloadTooLargeError now, in the executor that adds the task, rather than
        in post-processing where it would fail the whole batch."""
        size = len(task.model_dump_json(exclude_defaults=True))
        if size > self.queue.max_message_bytes:
            raise PayloadTooLargeError(task.id, size, self.queue.max_message_bytes, "the queue")
        if size > self.storage.max_item_bytes and (task.force_store or self._due_later(task)):
            raise PayloadTooLargeError(task.id, size, self.storage.max_item_bytes, "the store")

    def _due_later(self, task: Task) -> bool:
        if task.execute_at is None:
            return False
        delay = task.execute_at - self.clock.now()
        return delay > self.immediate_window or (
            delay > timedelta(0) and not self.queue.honours_execute_at
        )

    async def dispatch(self, tasks: Sequence[Task]) -> list[Task]:
        if not tasks:
            return []
        now = self.clock.now()
        routed = [self.prepare(t, now) for t in tasks]
        later, stored_now, now_only, timed = [], [], [], []
        for task in routed:
            if self.timer is not None and task.flow_meta is not None and task.flow_meta.is_timeout:
                timed.append(task)
            elif self._due_later(task):
                later.append(task.model_copy(update={"force_store": True}))
            elif task.force_store:
                stored_now.append(task)
            else:
                now_only.append(task)
        for task in timed:
            assert self.timer is not None and task.flow_meta is not None
            await self.timer.schedule(timeout_timer_name(task.flow_meta.flow_id), task)
        if later:
            await self.storage.insert(later)
        if stored_now:
            await self._store_and_publish(stored_now, now)
        if now_only:
            await self.queue.publish(now_only)
        await self._scheduled(routed, now)
        return routed

    async def _store_and_publish(self, tasks: list[Task], now: datetime) -> None:
        rows = [t.model_copy(update={"status": TaskStatus.PROCESSING, "processing_started_at": now})
                for t in tasks]
        inserted = {t.key for t in await self.storage.insert(rows)}
        fresh = [t for t in tasks if t.key in inserted]
        if fresh:
            await self._publish_or_reset(fresh)

    async def _publish_or_reset(self, tasks: list[Task]) -> None:
        """Publish tasks that have a `processing` row; on failure put the rows back to
        `scheduled` so the sweeper sends them, then re-raise for the caller to see."""
        try:
            await self.queue.publish(tasks)
        except Exception:
            try:
                await self.storage.reset_to_scheduled([t.key for t in tasks])
            except Exception:
                log.exception("could not reset %d tasks to scheduled; stale recovery will", len(tasks))
            raise

    async def dispatch_retries(self, copies: Sequence[Task]) -> None:
        """Retry copies of stored tasks are upserted (conditionally: a replayed failure does not
        schedule twice); near ones that the queue can delay also go straight to the queue."""
        stored = [c for c in copies if c.force_store]
        unstored = [c for c in copies if not c.force_store]
        if stored:
            now = self.clock.now()
            direct = [c for c in stored if not self._due_later(c)]
            later = [c for c in stored if self._due_later(c)]
            rows = later + [c.model_copy(update={"status": TaskStatus.PROCESSING,
                                                 "processing_started_at": now}) for c in direct]
            accepted = {t.key for t in await self.storage.schedule_retry(rows)}
            send = [c for c in direct if c.key in accepted]
            if send:
                try:
                    await self._publish_or_reset(send)
                except Exception:
                    log.exception("retry enqueue failed for %d tasks; the sweeper will send them",
                                  len(send))
        if unstored:
            await self.dispatch(unstored)

    async def dispatch_mature(self, limit: int) -> int:
        tasks = await self.storage.claim_mature(self.clock.now(), limit)
        if tasks:
            await self._publish_or_reset([t.model_copy(update={"status": TaskStatus.SCHEDULED})
                                          for t in tasks])
        return len(tasks)

    async def _scheduled(self, tasks: list[Task], now: datetime) -> None:
        if self.on_scheduled is not None:
            await self.on_scheduled(tasks)
        if self.lifecycle.task_provider is not None:
            for task in tasks:
                max_retries = self.registry.max_retries(task.retries, task.queue_id, task.type)
                await self.lifecycle.task("on_task_scheduled",
                                          self.lifecycle.scheduled_event(task, max_retries, now))
