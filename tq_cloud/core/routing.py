"""Where a task goes when it is added: the queue now, the store for later, or both.

- due later than the immediate window (2 min), or due later at all on a queue that cannot
  delay (Kinesis): given to the delay lane (SQS, to the second) when there is one and the task
  is due within its 15 minutes, fits it and has no row; otherwise stored as `scheduled`, and the
  sweeper enqueues it when due;
- `force_store` and due: stored as `processing` and enqueued; a failed queue write resets the
  row to `scheduled`, so the sweeper sends it instead;
- a task of an executor with `keep_result` or `cancellable` is stored (`force_store`): results
  and cancels need its row;
- otherwise: enqueued only, the cheapest path (no store write at all);
- a task with a `dedup_key` is first checked against the others of its queue, type and key
  within its executor's `dedup_window`: a duplicate is not sent at all (see `_deduplicated`);
- a task of an executor with `debounce` becomes its key's latest and is due at the end of its
  quiet window (see `flow_control.debounce`).
Stored tasks keep `force_store=True`: it marks "this task has a row" for later transitions.

Every limit a task must meet is checked in `prepare`, before anything is written: `add_tasks`
raises naming the task and the limit; the commit path (children, steps, joins, retries) gets
the tasks that can never be written back as `rejected`, so each becomes its own recorded
failure while the rest go out. A partial queue write resets exactly the tasks not written.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from pydantic import ValidationError

from tq_cloud.clock import Clock
from tq_cloud.core.codec import encode_task, encoding_once, usable_id
from tq_cloud.core.emitter import LifecycleEmitter
from tq_cloud.core.executors import Executor
from tq_cloud.core.extensions import NO_SCREEN, NO_TRACING, SendScreen, Tracing
from tq_cloud.core.log_context import limit_log_context
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.domain.flow_control import key_of
from tq_cloud.domain.flows import timeout_timer_name
from tq_cloud.domain.limits import MAX_ID_CHARS, RESERVED_ID_PREFIX, ROW_HEADROOM_BYTES, describe_validation_error
from tq_cloud.domain.task import Task, TaskStatus
from tq_cloud.errors import (
    InvalidTaskError,
    PayloadTooLargeError,
    QueueWriteError,
    TaskRejectedError,
    UnknownTaskTypeError,
)
from tq_cloud.ids import new_id
from tq_cloud.ports.delay import DelayLane
from tq_cloud.ports.queue import MessageQueue
from tq_cloud.ports.storage import NOT_STAMPED, TaskStorage
from tq_cloud.ports.timer import Timer

log = logging.getLogger("tq_cloud.routing")

IMMEDIATE_WINDOW = timedelta(minutes=2)
DEFAULT_DEDUP_WINDOW = timedelta(minutes=10)
TasksHook = Callable[[Sequence[Task]], Awaitable[None]]
Send = Callable[[Sequence[Task]], Awaitable[None]]
Rejected = dict[str, str]
"""Ids of tasks that can never be written, with the reason."""


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
        delay_lane: DelayLane | None = None,
        screen: SendScreen = NO_SCREEN,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self.queue = queue
        self.storage = storage
        self.registry = registry
        self.clock = clock
        self.lifecycle = lifecycle
        self.immediate_window = immediate_window
        self.on_scheduled = on_scheduled
        self.timer = timer
        self.delay_lane = delay_lane
        self._cached_limits: tuple[int, int, bool] | None = None
        self.rows = RowSender(queue, storage, clock)
        self.screen = screen
        self.tracing = tracing

    def check(self, task: Task) -> Task:
        """The routed copy of a task an executor adds, or TaskRejectedError now, in the
        executor's call, where the mistake can be seen and fixed."""
        return self.prepare(task, self.clock.now())

    def check_known(self, task: Task) -> None:
        """UnknownTaskTypeError unless an executor of the registry (or the framework) takes the task."""
        if self.registry.get_executor(task.queue_id, task.type) is None and not task.type.startswith("_"):
            raise UnknownTaskTypeError(task.id, task.queue_id, task.type,
                                       self.registry.get_task_types_for_queue(task.queue_id))

    def prepare(self, task: Task, now: datetime) -> Task:
        """A routed copy (id, timestamps, bounded log context, the executor's partition key)
        that meets every limit, or TaskRejectedError naming the task and the limit."""
        executor = self.registry.get_executor(task.queue_id, task.type)
        name = f"task {task.id!r} ({task.queue_id}/{task.type})"
        if task.id is not None and not usable_id(task.id):
            raise InvalidTaskError(f"{name}: an id must have 1 to {MAX_ID_CHARS} characters and not start "
                                   f"with {RESERVED_ID_PREFIX!r} (kept for the stores' own items), this one "
                                   f"has {len(task.id)}", task.id)
        if executor and executor.options.payload_model is not None:
            try:
                executor.options.payload_model.model_validate(task.payload)
            except ValidationError as exc:
                raise InvalidTaskError(
                    f"{name}: payload does not match {executor.options.payload_model.__name__}: "
                    f"{describe_validation_error(exc)}", task.id) from exc
        update: dict[str, object] = {"status": TaskStatus.SCHEDULED, "updated_at": now}
        if task.id is None:
            update["id"] = new_id()
        if task.created_at is None:
            update["created_at"] = now
        if task.execute_at is None:
            update["execute_at"] = now
        ctx = task.metadata.log_context
        carried = self.tracing.carried(limit_log_context(ctx, task.id or str(update.get("id"))) if ctx else None)
        if carried != ctx:  # bounded, then the sender's trace context (beyond the bound: it is small)
            update["metadata"] = task.metadata.model_copy(update={"log_context": dict(carried) if carried else None})
        key = self._partition_key(task, executor, name)
        self._check_flow_keys(task, executor, name)
        if key is not None:
            update["partition_key"] = key
        if executor is not None and executor.options.has_row and not task.force_store:
            update["force_store"] = True
        routed = task.model_copy(update=update)
        self._check_size(routed, executor)
        return routed

    @staticmethod
    def _check_flow_keys(task: Task, executor: Executor | None, name: str) -> None:
        """A debounce key function that fails, or returns no str, fails the send (it is needed
        now); the run-time keys (concurrency, rate) fail only their task when it runs."""
        debounce = executor.options.debounce if executor else None
        if debounce is not None:
            try:
                key_of(debounce.key, task, "debounce")
            except Exception as exc:
                raise InvalidTaskError(f"{name}: the executor's debounce key raised {exc!r}", task.id) from exc

    @staticmethod
    def _partition_key(task: Task, executor: Executor | None, name: str) -> str | None:
        key = task.partition_key
        if executor and executor.options.partition_key is not None:
            try:
                chosen = executor.options.partition_key(task)
            except Exception as exc:
                raise InvalidTaskError(f"{name}: the executor's partition_key raised {exc!r}; make it "
                                       "handle every task it can be given", task.id) from exc
            key = str(chosen) if chosen else key
        if key is not None and not 0 < len(key) <= MAX_ID_CHARS:
            raise InvalidTaskError(f"{name}: a partition key must have 1 to {MAX_ID_CHARS} characters, "
                                   f"this one has {len(key)}", task.id)
        return key

    def _check_size(self, task: Task, executor: Executor | None) -> None:
        """JSON, fits the queue, and, for a task that will have a row (stored, due later,
        retried through the store, kept on failure), fits the store with room for its failure."""
        size = len(encode_task(task))
        queue_max, store_max, delays = self._limits()
        if size > queue_max:
            raise PayloadTooLargeError(task.id, size, queue_max, "the queue")
        if size <= store_max - ROW_HEADROOM_BYTES:
            return
        retried_in_store = not delays and self.registry.max_retries(task.retries, task.queue_id, task.type) > 0
        stored = (task.force_store or self._due_later(task) or retried_in_store
                  or bool(executor and executor.options.store_on_failure))
        limit = store_max - ROW_HEADROOM_BYTES
        if stored and size > limit:
            raise PayloadTooLargeError(task.id, size, limit, "the task store (less room kept for its failure)")

    def _limits(self) -> tuple[int, int, bool]:
        """The queue's record limit, the store's item limit, and whether the queue can delay:
        read once (they are constants of the backends)."""
        if self._cached_limits is None:
            self._cached_limits = (self.queue.max_message_bytes, self.storage.max_item_bytes,
                                   self.queue.honours_execute_at)
        return self._cached_limits

    def _due_later(self, task: Task) -> bool:
        if task.execute_at is None:
            return False
        delay = task.execute_at - self.clock.now()
        return delay > self.immediate_window or (
            delay > timedelta(0) and not self.queue.honours_execute_at
        )

    async def dispatch(self, tasks: Sequence[Task], *, strict: bool = True, prepared: bool = False,
                       allow_unknown: bool = True) -> tuple[list[Task], Rejected]:
        """Route tasks. `strict` (add_tasks): a task that breaks a limit raises before anything
        is written. Otherwise (the commit path) such tasks come back as rejected and the rest
        are dispatched. Transient failures (throttling) raise in both modes. `prepared`: the
        tasks are `check`'s copies already (children checked in the executor's call).
        `allow_unknown=False` (add_tasks): a (queue, type) no executor takes is refused too.
        Each task is encoded once: its size is measured on the bytes its record is written from."""
        if not tasks:
            return [], {}
        with encoding_once():
            return await self._dispatch(tasks, strict, prepared, allow_unknown)

    async def _dispatch(self, tasks: Sequence[Task], strict: bool, prepared: bool, allow_unknown: bool
                        ) -> tuple[list[Task], Rejected]:
        now = self.clock.now()
        routed: list[Task] = list(tasks) if prepared else []
        rejected: Rejected = {}
        for task in () if prepared else tasks:
            try:
                if not allow_unknown:
                    self.check_known(task)
                routed.append(self.prepare(task, now))
            except TaskRejectedError as exc:
                if strict:
                    raise
                rejected[task.id or "?"] = str(exc)
        twins = await self._deduplicated(routed, now) if any(t.dedup_key for t in routed) else {}
        routed = await self.screen.note(routed, set(twins), now)
        later, delayed, stored_now, now_only, timed = [], [], [], [], []
        for task in (t for i, t in enumerate(routed) if i not in twins):
            if self.timer is not None and task.flow_meta is not None and task.flow_meta.is_timeout:
                timed.append(task)
            elif self._due_later(task):
                if self._lane_takes(task, now):
                    delayed.append(task)
                else:
                    later.append(task.model_copy(update={"force_store": True}))
            elif task.force_store:
                stored_now.append(task)
            else:
                now_only.append(task)
        try:
            for task in timed:
                assert self.timer is not None and task.flow_meta is not None
                await self.timer.schedule(timeout_timer_name(task.flow_meta.flow_id), task)
            if later:
                await self.storage.insert(later)
            if stored_now:
                rejected |= await self._store_and_publish(stored_now, now)
            if now_only:
                rejected |= await self._publish(now_only, strict)
            if delayed:
                assert self.delay_lane is not None
                rejected |= await self._publish(delayed, strict, self.delay_lane.send)
        except Exception:  # whatever this call claimed may not have gone out: a retry must send it
            await self._release_dedup([t for i, t in enumerate(routed) if i not in twins])
            await self.screen.undo([t for i, t in enumerate(routed) if i not in twins], now)
            raise
        await self._release_dedup([t for t in routed if t.key in rejected])
        await self.screen.undo([t for t in routed if t.key in rejected], now)
        sent = [t for i, t in enumerate(routed) if i not in twins and t.key not in rejected]
        await self._scheduled(sent, now)
        if twins:  # a deduplicated task comes back as the task that holds its key
            sent = [twins[i] if i in twins else t for i, t in enumerate(routed) if i in twins or t.key not in rejected]
        return sent, rejected

    async def _release_dedup(self, tasks: list[Task]) -> None:
        for task in tasks:
            if task.dedup_key is not None:
                try:
                    await self.storage.release_dedup(_scope(task), task.key)
                except Exception:
                    log.exception("could not free the dedup key of task %s; it frees at its window's end", task.key)

    async def _deduplicated(self, tasks: list[Task], now: datetime) -> dict[int, Task]:
        """Each task with a `dedup_key` claims its (queue, type, key) for its executor's
        `dedup_window` (one conditional write each; none for tasks without a key). One whose key
        another task holds is not sent: by position, the task that holds it (its id)."""
        async def holder(task: Task) -> str:
            executor = self.registry.get_executor(task.queue_id, task.type)
            window = executor.options.dedup_window if executor else DEFAULT_DEDUP_WINDOW
            return await self.storage.claim_dedup(_scope(task), task.key, now, window)

        keyed = [(i, t) for i, t in enumerate(tasks) if t.dedup_key is not None]
        holders = [await holder(t) for _, t in keyed]  # in order: the first of a call holds its key
        return {i: t.model_copy(update={"id": h}) for (i, t), h in zip(keyed, holders, strict=True) if h != t.key}

    def _lane_takes(self, task: Task, now: datetime) -> bool:
        """The delay lane takes a task without a row, due within its reach, that fits it (a
        stored task waits in the store: the lane delivers at least once, and a stored task's
        attempt is sent once)."""
        lane = self.delay_lane
        if lane is None or task.force_store or task.execute_at is None or task.execute_at - now > lane.max_delay:
            return False
        return len(encode_task(task)) <= lane.max_message_bytes

    async def _publish(self, tasks: list[Task], strict: bool, send: Send | None = None) -> Rejected:
        rejected: Rejected = {}
        rounds = self._in_order(tasks)
        for i, round_ in enumerate(rounds):
            try:
                await (send or self.queue.publish)(round_)
            except QueueWriteError as exc:
                if strict or exc.task_ids:
                    unsent = [t.key for later in rounds[i + 1:] for t in later]
                    if not unsent:
                        raise
                    raise QueueWriteError("a queue write failed; the later tasks of its ordered keys were held back",
                                          exc.task_ids + unsent, exc.rejected) from exc
                rejected |= exc.rejected
        return rejected

    def _in_order(self, tasks: list[Task]) -> list[list[Task]]:
        """The tasks in rounds: the n-th task of each key of an `ordered` executor goes in round n,
        each round written whole before the next. A queue write re-sends its throttled records
        after the rest (PutRecords keeps no order), so two tasks of one key in one write could
        land in the stream the wrong way round. Without ordered keys: one round."""
        if not self.registry.has_ordered:
            return [tasks]
        seen: dict[tuple[str, str, str], int] = {}
        rounds: list[list[Task]] = [[]]
        for task in tasks:
            executor = self.registry.get_executor(task.queue_id, task.type)
            n = 0
            if executor is not None and executor.options.ordered:
                key = (task.queue_id, task.type, task.partition_key or task.key)
                n = seen[key] = seen.get(key, -1) + 1
                if n == len(rounds):
                    rounds.append([])
            rounds[n].append(task)
        return [r for r in rounds if r]

    async def _store_and_publish(self, tasks: list[Task], now: datetime) -> Rejected:
        rows = [t.model_copy(update={"status": TaskStatus.PROCESSING, "processing_started_at": NOT_STAMPED})
                for t in tasks]
        inserted = {t.key for t in await self.storage.insert(rows)}
        fresh = [t for t in tasks if t.key in inserted]
        return await self.rows.publish(fresh) if fresh else {}

    async def _publish_or_reset(self, tasks: list[Task]) -> Rejected:
        return await self.rows.publish(tasks)

    async def fail_rejected(self, tasks: list[Task], rejected: Rejected) -> None:
        """Record tasks that can never be written to the queue as failed, with the reason."""
        await self.rows.fail_rejected(tasks, rejected)

    async def dispatch_retries(self, copies: Sequence[Task]) -> Rejected:
        """Retry copies of stored tasks are upserted (conditionally: a replayed failure does not
        schedule twice); near ones that the queue can delay also go straight to the queue."""
        stored = [c for c in copies if c.force_store]
        unstored = [c for c in copies if not c.force_store]
        rejected: Rejected = {}
        if stored:
            now = self.clock.now()
            direct = [c for c in stored if not self._due_later(c)]
            later = [waiting(c) for c in stored if self._due_later(c)]
            rows = later + [c.model_copy(update={"status": TaskStatus.PROCESSING,
                                                 "processing_started_at": now}) for c in direct]
            accepted = {t.key for t in await self.storage.schedule_retry(rows)}
            send = [c for c in direct if c.key in accepted]
            if send:
                try:
                    rejected |= await self._publish_or_reset(send)
                except Exception:
                    log.exception("retry enqueue failed for %d tasks; the sweeper will send them",
                                  len(send))
        if unstored:
            rejected |= (await self.dispatch(unstored, strict=False))[1]
        return rejected

    async def dispatch_mature(self, limit: int) -> int:
        """Claim due rows and send them. A record that can never be written is recorded as
        failed; rows not written this time go back to `scheduled` for the next sweep."""
        tasks = await self.storage.claim_mature(self.clock.now(), limit)
        if tasks:
            try:
                await self._publish_or_reset(as_sent(tasks))
            except QueueWriteError as exc:
                log.warning("sweep: %d of %d tasks not written; the next sweep sends them",
                            len(exc.task_ids), len(tasks))
        return len(tasks)

    async def _scheduled(self, tasks: list[Task], now: datetime) -> None:
        if self.on_scheduled is not None:
            await self.on_scheduled(tasks)
        if self.lifecycle.wants("on_task_scheduled"):
            for task in tasks:
                max_retries = self.registry.max_retries(task.retries, task.queue_id, task.type)
                await self.lifecycle.task("on_task_scheduled",
                                          self.lifecycle.scheduled_event(task, max_retries, now))


def _scope(task: Task) -> str:
    """What a dedup key is unique within: its queue and type."""
    return "\x1f".join((task.queue_id, task.type, task.dedup_key or ""))


def as_sent(rows: Sequence[Task]) -> list[Task]:
    """Claimed rows as their records carry them: `scheduled`, with no time from the row."""
    return [t.model_copy(update={"status": TaskStatus.SCHEDULED, "processing_started_at": None,
                                 "lease_until": None}) for t in rows]


def waiting(task: Task) -> Task:
    """A stored task's next attempt as its row waits for it: `scheduled`, so the sweeper sends
    it when due (a copy of a record that carried `processing`, as a re-driven one may, would
    otherwise wait for stale recovery)."""
    return task.model_copy(update={"status": TaskStatus.SCHEDULED})


class RowSender:
    """Publishes tasks that have a `processing` row (force_store, re-drives, swept rows). Of a
    partial write, exactly the rows not written go back to `scheduled` (the sweeper sends them)
    and the error is raised; the ones that can never be written are recorded as failed. Any
    other error resets them all (a reset never touches a row a run has leased since)."""

    def __init__(self, queue: MessageQueue, storage: TaskStorage, clock: Clock) -> None:
        self.queue = queue
        self.storage = storage
        self.clock = clock

    async def publish(self, tasks: list[Task]) -> Rejected:
        try:
            await self.queue.publish(tasks)
            return {}
        except QueueWriteError as exc:
            unwritten = set(exc.task_ids)
            await self._reset([t for t in tasks if t.key in unwritten])
            if exc.rejected:
                await self.fail_rejected([t for t in tasks if t.key in exc.rejected], exc.rejected)
            if unwritten:
                raise
            return exc.rejected
        except Exception:
            await self._reset(tasks)
            raise

    async def _reset(self, tasks: list[Task]) -> None:
        if not tasks:
            return
        try:
            await self.storage.reset_to_scheduled(tasks)
        except Exception:
            log.exception("could not reset %d tasks to scheduled; stale recovery will", len(tasks))

    async def fail_rejected(self, tasks: list[Task], rejected: Rejected) -> None:
        rows = [t.model_copy(update={"execution_stats": t.execution_stats.model_copy(update={
            "last_error": rejected[t.key], "last_error_type": "TaskRejectedError"})}) for t in tasks]
        await self.storage.mark_failed(rows, self.clock.now())
        log.error("%d tasks can never be written to the queue; recorded as failed: %s", len(rows),
                  ", ".join(t.key for t in rows))
