"""Typed sending: the handle `@app.task` returns, and the task `handler.send` builds from it.

A handle is the executor's address (queue, type) and its payload model, so a producer names
the executor instead of spelling its strings, and a payload is checked against the model before
anything is sent. Calling the handle still calls the function: tests of executors keep working.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from tq_cloud.domain.limits import MAX_DELAY, checked_delay, describe_validation_error
from tq_cloud.domain.task import EntityRef, Task
from tq_cloud.errors import InvalidDelayError, InvalidPayloadError, UnknownTaskTypeError

if TYPE_CHECKING:
    from tq_cloud.core.executors import Executor

Params = ParamSpec("Params")
Result = TypeVar("Result")


class ExecutorHandle(Generic[Params, Result]):
    """What `@app.task(...)` and `@app.batch_task(...)` return: the function (calling the handle
    calls it), with the executor's `queue_id`, `task_type` and payload `model`.

    Example:
        @app.task("email", "send", retries=3)
        async def send_email(task: Task[Email], actions: ExecutorActions) -> dict[str, bool]:
            ...
            return {"sent": True}

        task = await handler.send(send_email, Email(to="a@example.com"))
        emails = send_email.bind(handler)                  # one producer: Celery's `.delay`
        await emails.delay(to="b@example.com")
    """

    def __init__(self, fn: Callable[Params, Result], queue_id: str, task_type: str, executor: Executor) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.queue_id = queue_id
        self.task_type = task_type
        self.executor = executor

    @property
    def model(self) -> type[BaseModel] | None:
        """The payload model (`payload_model=`, or the `Task[Model]` annotation), if any."""
        return self.executor.options.payload_model

    def __call__(self, *args: Params.args, **kwargs: Params.kwargs) -> Result:
        return self.fn(*args, **kwargs)

    def bind(self, sender: Sender) -> BoundExecutor:
        """This executor with a handler to send through (for code with one producer)."""
        return BoundExecutor(self, sender)

    def __repr__(self) -> str:
        return f"<executor {self.queue_id}/{self.task_type}: {getattr(self.fn, '__qualname__', self.fn)!r}>"


class Registry(Protocol):
    """What sending needs of the registry (declared here: the registry imports this module)."""

    def get_executor(self, queue_id: str, task_type: str) -> Executor | None: ...

    def get_task_types_for_queue(self, queue_id: str) -> list[str]: ...


class Sender(Protocol):
    async def send(self, executor: ExecutorRef, payload: Any, *, delay: timedelta | None = None,
                   at: datetime | None = None, partition_key: str | None = None,
                   entity: EntityRef | None = None, id: str | None = None, dedup_key: str | None = None) -> Task: ...


class BoundExecutor:
    """An executor handle bound to a handler: `delay(**fields)` sends a task at once.

    Example:
        emails = send_email.bind(handler)
        await emails.delay(to="a@example.com")
        await emails.send({"to": "b@example.com"}, delay=timedelta(minutes=5))
    """

    def __init__(self, handle: ExecutorHandle[Any, Any], sender: Sender) -> None:
        self.handle = handle
        self.sender = sender

    async def delay(self, **fields: Any) -> Task:
        """Send a task whose payload is `fields`, due now (Celery's `delay`)."""
        return await self.sender.send(self.handle, fields)

    async def send(self, payload: Any, **options: Any) -> Task:
        """`handler.send(this executor, payload, **options)`."""
        return await self.sender.send(self.handle, payload, **options)


ExecutorRef = ExecutorHandle[Any, Any] | BoundExecutor | tuple[str, str]
"""What `handler.send` takes as the executor: a handle, a bound handle, or a (queue, type) pair."""


def resolve(registry: Registry, executor: ExecutorRef) -> tuple[str, str, Executor]:
    """The (queue, type) and executor `executor` names, or UnknownTaskTypeError."""
    if isinstance(executor, BoundExecutor):
        executor = executor.handle
    if isinstance(executor, ExecutorHandle):
        queue_id, task_type = executor.queue_id, executor.task_type
    elif isinstance(executor, tuple) and len(executor) == 2 and all(isinstance(p, str) for p in executor):
        queue_id, task_type = executor
    else:
        raise TypeError(f"send takes an executor handle (what @app.task returns) or a (queue_id, task_type) "
                        f"pair, got {executor!r}")
    found = registry.get_executor(queue_id, task_type)
    if found is None:
        raise UnknownTaskTypeError(None, queue_id, task_type, registry.get_task_types_for_queue(queue_id))
    return queue_id, task_type, found


def build_task(registry: Registry, executor: ExecutorRef, payload: Any, now: datetime, *,
               delay: timedelta | None = None, at: datetime | None = None, partition_key: str | None = None,
               entity: EntityRef | None = None, id: str | None = None, dedup_key: str | None = None) -> Task:
    """The task `handler.send` sends: its payload validated into the executor's model (and sent
    as that model's JSON form), due after `delay` or at `at` (not both)."""
    queue_id, task_type, found = resolve(registry, executor)
    payload = validated_payload(found, payload, f"payload for {queue_id}/{task_type}", id)
    return Task(id=id, type=task_type, queue_id=queue_id, payload=payload, entity=entity,
                partition_key=partition_key, dedup_key=dedup_key, execute_at=_due(now, delay, at))


def validated_payload(executor: Executor, payload: Any, what: str, task_id: str | None = None) -> Any:
    """`payload` (a pydantic model or JSON values) as the JSON form of the executor's model, or
    InvalidPayloadError naming each wrong field (never its value)."""
    model = executor.options.payload_model
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json", by_alias=True)
    if model is not None:
        try:
            return model.model_validate(payload).model_dump(mode="json", by_alias=True)
        except ValidationError as exc:
            raise InvalidPayloadError(f"{what} does not match {model.__name__}: {describe_validation_error(exc)}",
                                      task_id) from exc
    if not isinstance(payload, Mapping | list | str | int | float | bool | type(None)):
        raise InvalidPayloadError(f"{what} must be a pydantic model or JSON values, got {type(payload).__name__}",
                                  task_id)
    return payload


def _due(now: datetime, delay: timedelta | None, at: datetime | None) -> datetime:
    if delay is not None and at is not None:
        raise InvalidDelayError("give delay= or at=, not both")
    if delay is not None:
        if not isinstance(delay, timedelta):
            raise InvalidDelayError(f"delay must be a timedelta, got {delay!r}")
        return now + timedelta(seconds=checked_delay(delay.total_seconds(), "send delay"))
    if at is not None:
        if not isinstance(at, datetime) or at.tzinfo is None:
            raise InvalidDelayError(f"at must be a timezone-aware datetime (datetime.now(UTC) + ...), got {at!r}")
        if at - now > MAX_DELAY:
            raise InvalidDelayError(f"at={at.isoformat()} is more than {MAX_DELAY.days} days away")
        return max(at, now)
    return now

