"""The three kinds of executor, and the settings they share.

Settings are checked when the executor is built, so a bad configuration fails at import time
of the user's module, not on the first task at 3 AM.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from tq_cloud.domain.flow_control import Concurrency, Debounce, RateLimit
from tq_cloud.errors import ConfigurationError

if TYPE_CHECKING:
    from tq_cloud.core.actions import ExecutorActions
    from tq_cloud.domain.task import Task

SingleTaskFn = Callable[["Task[Any]", "ExecutorActions"], Awaitable[None]]
BatchTaskFn = Callable[[list["Task[Any]"], "ExecutorActions"], Awaitable[None]]
PartitionKeyFn = Callable[["Task[Any]"], "str | None"]


@dataclass(frozen=True, kw_only=True)
class ExecutorOptions:
    """`retries`: retries after the first attempt, unless the task sets its own.
    `store_on_failure`: keep final failures in the store instead of discarding them.
    `handoff_timeout`: seconds after which a long task is handed to the AsyncTaskManager.
    `keep_result`: how long an executed task's row and result are kept, for `handler.result`.
    `cancellable`: the executor's tasks can be cancelled wherever they wait (they get a row).
    `timeout`: seconds a run may take; a longer one is stopped and fails with TaskTimeoutError.
    `dedup_window`: how long a task's `dedup_key` keeps a second one of the same key from being sent.
    `concurrency`, `rate_limit`, `debounce`, `ordered`: flow control (see `tq_cloud.flow_control`).

    Example:
        @app.task("email", "send", retries=5, timeout=30, store_on_failure=True)   # the options, as keywords
    """

    retries: int = 0
    store_on_failure: bool = False
    payload_model: type[BaseModel] | None = None
    partition_key: PartitionKeyFn | None = None
    handoff_timeout: float | None = None
    keep_result: timedelta | None = None
    cancellable: bool = False
    timeout: float | None = None
    dedup_window: timedelta = timedelta(minutes=10)
    concurrency: Concurrency | None = None
    rate_limit: RateLimit | None = None
    debounce: Debounce | None = None
    ordered: bool = False

    @property
    def has_row(self) -> bool:
        """Whether every task of the executor gets a row when it is sent (results and cancel
        need one: a task without a row cannot be found)."""
        return self.keep_result is not None or self.cancellable

    def __post_init__(self) -> None:
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ConfigurationError(f"retries must be a whole number >= 0, got {self.retries!r}")
        if self.payload_model is not None and not (
            isinstance(self.payload_model, type) and issubclass(self.payload_model, BaseModel)
        ):
            raise ConfigurationError(
                f"payload_model must be a pydantic BaseModel subclass, got {self.payload_model!r}"
            )
        if self.partition_key is not None and not callable(self.partition_key):
            raise ConfigurationError("partition_key must be a callable taking the task")
        if self.handoff_timeout is not None and not self.handoff_timeout > 0:
            raise ConfigurationError(
                f"handoff_timeout must be a positive number of seconds, got {self.handoff_timeout!r}"
            )
        if self.keep_result is not None and not (
                isinstance(self.keep_result, timedelta) and timedelta(0) < self.keep_result <= MAX_KEEP):
            raise ConfigurationError(f"keep_result must be a timedelta from 1 second to {MAX_KEEP.days} days, "
                                     f"got {self.keep_result!r}")
        if not isinstance(self.dedup_window, timedelta) or not timedelta(seconds=1) <= self.dedup_window <= MAX_KEEP:
            raise ConfigurationError(f"dedup_window must be a timedelta from 1 second to {MAX_KEEP.days} days, "
                                     f"got {self.dedup_window!r}")
        for name, kind in (("concurrency", Concurrency), ("rate_limit", RateLimit), ("debounce", Debounce)):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), kind):
                raise ConfigurationError(f"{name} must be a {kind.__name__}(...), got {getattr(self, name)!r}")
        if not isinstance(self.ordered, bool):
            raise ConfigurationError(f"ordered must be True or False, got {self.ordered!r}")
        if self.handoff_timeout is not None and (self.concurrency or self.ordered):
            raise ConfigurationError("handoff_timeout cannot be combined with concurrency or ordered: a handed-off "
                                     "run outlives the batch that holds its slot or its key's turn")
        if self.timeout is not None and (isinstance(self.timeout, bool) or not isinstance(self.timeout, int | float)
                                         or not 0 < self.timeout <= MAX_TIMEOUT):
            raise ConfigurationError(f"timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT:.0f} "
                                     f"(a day), got {self.timeout!r}")


MAX_KEEP = timedelta(days=366)
MAX_TIMEOUT = 86_400.0


def _require_coroutine_function(fn: object, shape: str) -> None:
    if not inspect.iscoroutinefunction(fn):
        raise ConfigurationError(f"an executor must be an `async def {shape}`, got {fn!r}")


@dataclass(frozen=True, kw_only=True)
class SingleTaskExecutor:
    """One task per call; sequential, or `parallel` in chunks of `chunk_size`.

    Example:
        @app.task("media", "resize", parallel=True, chunk_size=5)   # builds a SingleTaskExecutor
        async def resize(task: Task, actions: ExecutorActions) -> None: ...
    """

    fn: SingleTaskFn
    options: ExecutorOptions = ExecutorOptions()
    parallel: bool = False
    chunk_size: int = 1

    def __post_init__(self) -> None:
        _require_coroutine_function(self.fn, "fn(task, actions)")
        if not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise ConfigurationError(f"chunk_size must be a whole number >= 1, got {self.chunk_size!r}")
        if not self.parallel and self.chunk_size != 1:
            raise ConfigurationError("chunk_size only applies to parallel executors; set parallel=True")
        if self.parallel and self.options.handoff_timeout is not None:
            raise ConfigurationError(
                "handoff_timeout applies to sequential single-task executors only; "
                "a parallel chunk cannot hand off one task and wait for the rest"
            )


@dataclass(frozen=True, kw_only=True)
class BatchTaskExecutor:
    """All tasks of one (queue, type) in a batch, in one call.

    Example:
        @app.batch_task("analytics", "track")       # builds a BatchTaskExecutor
        async def track(tasks: list[Task], actions: ExecutorActions) -> None:
            for task in tasks:
                actions.success(task)
    """

    fn: BatchTaskFn
    options: ExecutorOptions = ExecutorOptions()

    def __post_init__(self) -> None:
        _require_coroutine_function(self.fn, "fn(tasks, actions)")
        if self.options.ordered:
            raise ConfigurationError("ordered applies to single-task executors (@app.task): a batch executor "
                                     "gets all of a batch's tasks at once, in order")
        if self.options.handoff_timeout is not None:
            raise ConfigurationError("handoff_timeout applies to sequential single-task executors only")


Executor = SingleTaskExecutor | BatchTaskExecutor


def payload_model_from_annotation(fn: Callable[..., Any]) -> type[BaseModel] | None:
    """`async def f(task: Task[Email], actions)` declares Email as the payload model."""
    try:
        params = list(inspect.signature(fn).parameters.values())
        hints = inspect.get_annotations(fn, eval_str=True)
    except (NameError, TypeError, ValueError):
        return None
    if not params:
        return None
    annotation = hints.get(params[0].name)
    origin_args = getattr(annotation, "__pydantic_generic_metadata__", None)
    if origin_args is None and getattr(annotation, "__origin__", None) is list:
        inner = getattr(annotation, "__args__", (None,))[0]
        origin_args = getattr(inner, "__pydantic_generic_metadata__", None)
    if not origin_args or not origin_args.get("args"):
        return None
    arg = origin_args["args"][0]
    return arg if isinstance(arg, type) and issubclass(arg, BaseModel) else None


BuiltinExecutors = Mapping[str, Executor]
"""Executors a feature ships for its own task types (the flow-timeout sentinel, a closed
flow's retirement, a schedule's firing), handed to the runner by the assembly and looked up
after the app's own."""
