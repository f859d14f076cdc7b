"""The registry of executors by (queue, task type)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar, cast

from pydantic import BaseModel

from tq_cloud.core.executors import (
    BatchTaskExecutor,
    BatchTaskFn,
    Executor,
    ExecutorOptions,
    PartitionKeyFn,
    SingleTaskExecutor,
    SingleTaskFn,
    payload_model_from_annotation,
)
from tq_cloud.core.sending import ExecutorHandle, ExecutorRef, resolve, validated_payload
from tq_cloud.domain.flow_control import Concurrency, Debounce, RateLimit
from tq_cloud.domain.schedules import Overlap, Schedule
from tq_cloud.domain.task import Task
from tq_cloud.errors import ConfigurationError, DuplicateExecutorError

P = ParamSpec("P")
R = TypeVar("R")


class TaskQueuesManager:
    """The app: the registry of executors (by queue and task type) and schedules that every
    handler of the app is built from.

    Example:
        app = TaskQueuesManager()

        @app.task("email", "send", retries=3)
        async def send(task: Task, actions: ExecutorActions) -> None: ...

        app.schedule("digest", task=send, cron="0 8 * * *", payload={"to": "team@example.com"})
    """
    def __init__(self) -> None:
        self._executors: dict[tuple[str, str], Executor] = {}
        self.schedules: dict[str, Schedule] = {}

    def schedule(self, name: str, *, task: ExecutorRef, cron: str | None = None, every: timedelta | None = None,
                 timezone: str = "UTC", payload: Any = None, overlap: Overlap = "allow") -> Schedule:
        """Declare a recurring schedule: each occurrence sends one task to `task` (an executor
        handle, or a (queue_id, task_type) pair registered before), with `payload` (checked
        against the executor's model now). `cron`: five fields in `timezone` (an IANA name),
        across daylight-saving changes as EventBridge Scheduler does; or `every`: whole minutes,
        at least one. `overlap="skip"` skips (and records) an occurrence while the one before
        has not finished. Each occurrence's task id derives from the name and its time, so a
        duplicate or late firing runs it once; `task.metadata.schedule` says which occurrence.
        Raises ConfigurationError for what EventBridge cannot express, an unknown zone or a
        duplicate name.

        Example:
            app.schedule("nightly-report", task=build_report, cron="0 2 * * *", timezone="Europe/Paris",
                         payload={"kind": "daily"}, overlap="skip")
            app.schedule("heartbeat", task=("ops", "ping"), every=timedelta(minutes=5))
        """
        if name in self.schedules:
            raise ConfigurationError(f"a schedule named {name!r} is declared already; each name is one schedule")
        queue_id, task_type, executor = resolve(self, task)
        payload = validated_payload(executor, payload if payload is not None else {}, f"schedule {name!r}")
        declared = Schedule(name=name, queue_id=queue_id, task_type=task_type, cron=cron, every=every,
                            timezone=timezone, payload=payload, overlap=overlap)
        self.schedules[name] = declared
        return declared

    def register(self, queue_id: str, task_type: str, executor: Executor) -> None:
        if not queue_id or not task_type:
            raise ConfigurationError("queue_id and task_type must be non-empty strings")
        if not isinstance(executor, SingleTaskExecutor | BatchTaskExecutor):
            raise ConfigurationError(
                f"expected a SingleTaskExecutor or BatchTaskExecutor, got {type(executor).__name__}"
            )
        key = (queue_id, task_type)
        if key in self._executors:
            raise DuplicateExecutorError(queue_id, task_type)
        self._executors[key] = executor

    def task(
        self,
        queue_id: str,
        task_type: str,
        *,
        retries: int = 0,
        store_on_failure: bool = False,
        parallel: bool = False,
        chunk_size: int | None = None,
        payload_model: type[BaseModel] | None = None,
        partition_key: PartitionKeyFn | None = None,
        handoff_timeout: float | None = None,
        keep_result: timedelta | None = None,
        cancellable: bool = False,
        timeout: float | None = None,
        dedup_window: timedelta = timedelta(minutes=10),
        concurrency: Concurrency | None = None,
        rate_limit: RateLimit | None = None,
        debounce: Debounce | None = None,
        ordered: bool = False,
    ) -> Callable[[Callable[P, Awaitable[R]]], ExecutorHandle[P, Awaitable[R]]]:
        """Register `async def fn(task, actions)` as the executor of (queue_id, task_type); returns
        its handle (calling it calls `fn`), which `handler.send` takes.

        Returning is reporting: a run that returns without `actions.success`/`fail` succeeds with
        the returned value as its result; raising fails it (retried while `retries` last).
        `keep_result` keeps the executed task's result that long for `handler.result`;
        `cancellable` lets `handler.cancel` stop its tasks wherever they wait; `timeout` stops a
        run after that many seconds (TaskTimeoutError, retried like any failure).
        Flow control: `concurrency=Concurrency(...)`, `rate_limit=RateLimit(...)` per key,
        `debounce=Debounce(...)`, `ordered=True` (one task of a partition key at a time, in order).

        Example:
            @app.task("reports", "build", retries=2, keep_result=timedelta(days=1), timeout=300)
            async def build(task: Task[ReportRequest], actions: ExecutorActions) -> dict[str, str]:
                actions.progress(task, 0.5, "half the rows")
                return {"url": "s3://reports/17.pdf"}
        """

        def decorate(fn: Callable[P, Awaitable[R]]) -> ExecutorHandle[P, Awaitable[R]]:
            options = ExecutorOptions(
                retries=retries,
                store_on_failure=store_on_failure,
                payload_model=payload_model or payload_model_from_annotation(fn),
                partition_key=partition_key,
                handoff_timeout=handoff_timeout,
                keep_result=keep_result,
                cancellable=cancellable,
                timeout=timeout,
                dedup_window=dedup_window,
                concurrency=concurrency,
                rate_limit=rate_limit,
                debounce=debounce,
                ordered=ordered,
            )
            if parallel and chunk_size is None:
                raise ConfigurationError("a parallel executor needs chunk_size (tasks run at once)")
            executor = SingleTaskExecutor(
                fn=cast(SingleTaskFn, fn), options=options, parallel=parallel, chunk_size=chunk_size or 1
            )
            self.register(queue_id, task_type, executor)
            return ExecutorHandle(fn, queue_id, task_type, executor)

        return decorate

    def batch_task(
        self,
        queue_id: str,
        task_type: str,
        *,
        retries: int = 0,
        store_on_failure: bool = False,
        payload_model: type[BaseModel] | None = None,
        partition_key: PartitionKeyFn | None = None,
        keep_result: timedelta | None = None,
        cancellable: bool = False,
        timeout: float | None = None,
        dedup_window: timedelta = timedelta(minutes=10),
        concurrency: Concurrency | None = None,
        rate_limit: RateLimit | None = None,
        debounce: Debounce | None = None,
    ) -> Callable[[Callable[P, Awaitable[R]]], ExecutorHandle[P, Awaitable[R]]]:
        """Register `async def fn(tasks, actions)` to receive all tasks of a batch at once; returns
        its handle. Each task needs its report (`actions.success`/`fail`): one left without
        fails. `timeout` bounds the whole call; tasks it did not report fail with TaskTimeoutError.

        Example:
            @app.batch_task("metrics", "ingest", retries=1)
            async def ingest(tasks: list[Task[Point]], actions: ExecutorActions) -> None:
                await db.insert_many([t.payload for t in tasks])
                for task in tasks:
                    actions.success(task)
        """

        def decorate(fn: Callable[P, Awaitable[R]]) -> ExecutorHandle[P, Awaitable[R]]:
            options = ExecutorOptions(
                retries=retries,
                store_on_failure=store_on_failure,
                payload_model=payload_model or payload_model_from_annotation(fn),
                partition_key=partition_key,
                keep_result=keep_result,
                cancellable=cancellable,
                timeout=timeout,
                dedup_window=dedup_window,
                concurrency=concurrency,
                rate_limit=rate_limit,
                debounce=debounce,
            )
            executor = BatchTaskExecutor(fn=cast(BatchTaskFn, fn), options=options)
            self.register(queue_id, task_type, executor)
            return ExecutorHandle(fn, queue_id, task_type, executor)

        return decorate

    @property
    def has_ordered(self) -> bool:
        """Whether any executor has `ordered=True` (sends then keep each key's order)."""
        return any(e.options.ordered for e in self._executors.values())

    def is_ordered(self, task: Task) -> bool:
        """Whether `task`'s executor has `ordered=True`."""
        executor = self._executors.get((task.queue_id, task.type))
        return executor is not None and executor.options.ordered

    def has_row(self, task: Task, history: bool = False) -> bool:
        """Whether the task may have a row by design (so its runs read it and take its lease):
        stored (`force_store`), of an executor that stores failures or gives each task a row
        (keep_result, cancellable), or every task with `history`."""
        if task.force_store or history:
            return True
        executor = self._executors.get((task.queue_id, task.type))
        return bool(executor and (executor.options.store_on_failure or executor.options.has_row))

    def packs_alone(self, task: Task, history: bool = False) -> bool:
        """Whether `task`'s records must carry it alone, under its own key. Two copies of one
        task (a send retried after a lost answer, stale recovery) are never run at once because
        they share a partition key, so Kinesis gives them to one consumer in turn; a task that
        may have a row relies on that before its row exists (a first failure writes it). Packed
        under another task's key, its copies could run side by side in two lanes. Tasks with a
        partition key are packed under that key and keep it. And an `ordered=True` executor's
        tasks are never put back by a consumer (that would let later tasks of the key pass)."""
        return self.is_ordered(task) or (task.partition_key is None and self.has_row(task, history))

    def get_executor(self, queue_id: str, task_type: str) -> Executor | None:
        return self._executors.get((queue_id, task_type))

    def get_queues(self) -> list[str]:
        return sorted({queue for queue, _ in self._executors})

    def get_task_types_for_queue(self, queue_id: str) -> list[str]:
        return sorted(task_type for queue, task_type in self._executors if queue == queue_id)

    def max_retries(self, task_retries: int | None, queue_id: str, task_type: str) -> int:
        if task_retries is not None:
            return task_retries
        executor = self.get_executor(queue_id, task_type)
        return executor.options.retries if executor else 0

    def __contains__(self, key: Any) -> bool:
        return key in self._executors
