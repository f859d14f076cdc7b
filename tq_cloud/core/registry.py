"""The registry of executors by (queue, task type)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

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
from tq_cloud.errors import ConfigurationError, DuplicateExecutorError

SF = TypeVar("SF", bound=SingleTaskFn)
BF = TypeVar("BF", bound=BatchTaskFn)


class TaskQueuesManager:
    def __init__(self) -> None:
        self._executors: dict[tuple[str, str], Executor] = {}

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
    ) -> Callable[[SF], SF]:
        """Register `async def fn(task, actions)` as the executor of (queue_id, task_type)."""

        def decorate(fn: SF) -> SF:
            options = ExecutorOptions(
                retries=retries,
                store_on_failure=store_on_failure,
                payload_model=payload_model or payload_model_from_annotation(fn),
                partition_key=partition_key,
                handoff_timeout=handoff_timeout,
            )
            if parallel and chunk_size is None:
                raise ConfigurationError("a parallel executor needs chunk_size (tasks run at once)")
            executor = SingleTaskExecutor(
                fn=fn, options=options, parallel=parallel, chunk_size=chunk_size or 1
            )
            self.register(queue_id, task_type, executor)
            return fn

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
    ) -> Callable[[BF], BF]:
        """Register `async def fn(tasks, actions)` to receive all tasks of a batch at once."""

        def decorate(fn: BF) -> BF:
            options = ExecutorOptions(
                retries=retries,
                store_on_failure=store_on_failure,
                payload_model=payload_model or payload_model_from_annotation(fn),
                partition_key=partition_key,
            )
            self.register(queue_id, task_type, BatchTaskExecutor(fn=fn, options=options))
            return fn

        return decorate

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
