"""Every error tq-cloud raises on purpose, in one place.

Each message says what went wrong and how to fix it, because these errors surface at
configuration time or in a producer's call stack, far from the code that explains them.
"""

from __future__ import annotations


class TqError(Exception):
    """Base class: catch this to handle any tq-cloud error."""


class TransientError(TqError):
    """A call that failed for now (throttled, timed out, its response lost): trying it again
    may work. Port calls that raise it are retried (core/resilience.py)."""


class NonRetryableError(TqError):
    """Raised by an executor, fails its task for good: no retry, and the task is stored as
    failed with this error (whatever its executor's `store_on_failure`), so that it shows in
    `tq-cloud tasks list --status failed` and can be re-driven. The same as
    `actions.fail(task, error, retry=False)`; BullMQ's UnrecoverableError, Celery's Reject.

    Example:
        if not account.exists:
            raise NonRetryableError(f"account {account.id} was deleted")
    """


class ConfigurationError(TqError):
    """An executor, handler or backend was set up with settings that cannot work."""


class EndpointUnreachableError(ConfigurationError):
    """The AWS endpoint given (moto, LocalStack) did not answer in time."""


class DuplicateExecutorError(ConfigurationError):
    def __init__(self, queue_id: str, task_type: str) -> None:
        super().__init__(
            f"an executor for ({queue_id!r}, {task_type!r}) is already registered; "
            "each (queue, task type) pair has exactly one executor"
        )


class UnknownExecutorError(TqError):
    def __init__(self, queue_id: str, task_type: str) -> None:
        super().__init__(f"no executor is registered for ({queue_id!r}, {task_type!r})")


class TaskNotInScopeError(TqError):
    """An executor reported an outcome for a task it was not given."""


class TaskRejectedError(TqError):
    """A write of one task that can never succeed, however often it is retried (too large, not
    JSON, an invalid key). Raised where the task is added when it can be known there; at commit
    time it fails that one task, never its batch."""

    def __init__(self, task_id: str | None, message: str) -> None:
        super().__init__(message)
        self.task_id = task_id


class PayloadTooLargeError(TaskRejectedError):
    """A task does not fit the transport or the store it is routed to."""

    def __init__(self, task_id: str | None, size: int, limit: int, where: str) -> None:
        super().__init__(
            task_id,
            f"task {task_id!r} serialises to {size} bytes, over the {limit}-byte limit of {where}; "
            "store large data elsewhere (S3, a database) and put a reference in the payload",
        )
        self.size = size
        self.limit = limit


class UnserialisableTaskError(TaskRejectedError):
    """A task whose payload (or log context) cannot be written as JSON."""

    def __init__(self, task_id: str | None, reason: str) -> None:
        super().__init__(
            task_id,
            f"task {task_id!r} cannot be serialised to JSON ({reason}); payloads must be JSON values "
            "or pydantic models",
        )


class QueueWriteError(TqError):
    """Tasks could not be written to the message queue. `task_ids` were not written this time
    (throttled: sending them again may work); `rejected` maps the ids of tasks that can never be
    written to why. Every other task of the call was written."""

    def __init__(self, message: str, task_ids: list[str], rejected: dict[str, str] | None = None) -> None:
        detail = f"tasks not written: {', '.join(task_ids) or '(none)'}"
        if rejected:
            detail += f"; rejected for good: {', '.join(rejected)}"
        super().__init__(f"{message}: {detail}")
        self.task_ids = task_ids
        self.rejected = rejected or {}


class MissingTaskIdError(TqError):
    """An entity-bound task reached a projection without an id."""

    def __init__(self, entity_type: str, entity_id: str) -> None:
        super().__init__(
            f"task bound to entity {entity_type}:{entity_id} has no id, so its projection cannot be "
            "keyed; add tasks through TaskHandler.add_tasks (which assigns ids) or set task.id yourself"
        )


class FlowsNotConfiguredError(ConfigurationError):
    def __init__(self) -> None:
        super().__init__(
            "start_flow needs a flow barrier provider: pass flows=FlowOrchestrator(...) "
            "(for example with InMemoryFlowBarrierProvider) to TaskHandler"
        )


class InvalidTaskError(TaskRejectedError):
    """A task that cannot run as given: its payload does not match its executor's model, its id
    or partition key is empty or over 256 characters, or its executor's partition_key raised."""

    def __init__(self, message: str, task_id: str | None = None) -> None:
        super().__init__(task_id, message)


class InvalidFlowError(TqError):
    """A flow definition that cannot run (no steps, a non-positive timeout)."""


class InvalidDelayError(TqError, ValueError):
    """A delay, deferral or timeout that is not a finite number of seconds from 0 to 366 days.

    Example:
        try:
            await handler.send(send, payload, delay=timedelta(days=-1))
        except InvalidDelayError as exc:
            print(exc)          # says which value, and what is allowed
    """


class UnknownTaskTypeError(InvalidTaskError):
    """`add_tasks` of a (queue, type) no executor of this registry takes: a typo, caught at the
    producer instead of as an `ignored` row at the consumer.

    Example:
        try:
            await handler.add_tasks([Task(type="typo", queue_id="email", payload={})])
        except UnknownTaskTypeError:
            ...                 # or allow_unknown=True to send to another app's executors
    """

    def __init__(self, task_id: str | None, queue_id: str, task_type: str, known: list[str]) -> None:
        hint = f"; this queue has {', '.join(known[:10])}" if known else ""
        super().__init__(
            f"task {task_id!r}: no executor takes ({queue_id!r}, {task_type!r}){hint}. Register one, or send "
            "to executors this process does not have with add_tasks(..., allow_unknown=True) "
            "(tq-cloud enqueue --allow-unknown)", task_id)


class InvalidPayloadError(InvalidTaskError, ValueError):
    """`handler.send` of a payload its executor's model refuses; the message names each field
    that is wrong (never its value: payloads may hold secrets). Nothing was sent.

    Example:
        try:
            await handler.send(send, {"to": 42})
        except InvalidPayloadError as exc:
            print(exc)          # names each field the model refused, never its value
    """


class TaskFailedError(TqError):
    """`handler.result` of a task that failed for good (or that no executor takes): `error`
    and `error_type` are what its last attempt recorded.

    Example:
        try:
            total = await handler.result(task.id, timeout=30)
        except TaskFailedError as exc:
            print("failed:", exc.error)
    """

    def __init__(self, task_id: str, error: str | None, error_type: str | None = None,
                 status: str = "failed") -> None:
        super().__init__(f"task {task_id!r} {status}: {error or 'no error recorded'}")
        self.task_id = task_id
        self.error = error
        self.error_type = error_type
        self.status = status


class TaskCancelledError(TqError):
    """`handler.result` of a task that was cancelled (`reason` as given to `handler.cancel`).
    An executor may raise it too, to stop a run it sees cancelled (`actions.is_cancelled`):
    the task then ends cancelled, not failed, and is not retried.

    Example:
        if actions.is_cancelled(task):
            raise TaskCancelledError("stopped at row 4,000")
    """

    def __init__(self, reason: str = "", task_id: str | None = None) -> None:
        super().__init__(f"task {task_id!r} was cancelled: {reason}" if task_id else reason or "cancelled")
        self.reason = reason
        self.task_id = task_id


class TaskTimeoutError(TqError):
    """A run that passed its executor's `timeout` was stopped; the task is retried like any
    failure, and fails with this error once its retries are used.

    Example:
        @app.task("reports", "build", timeout=300)     # a run past 300 s fails with TaskTimeoutError
        async def build(task: Task, actions: ExecutorActions) -> None: ...
    """


class ResultNotKeptError(KeyError):
    """`handler.result` of an id with no result to give: unknown, never stored (its executor has
    no `keep_result`), expired, or its result was dropped (not JSON, or too large to keep).

    Example:
        try:
            value = await handler.result("report-7")
        except ResultNotKeptError:
            ...                 # unknown id, or its executor has no keep_result
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no result kept"


class InvalidProgressError(TqError, ValueError):
    """`actions.progress` with a value that is not a fraction from 0.0 to 1.0 (raised in the
    executor's call, where the mistake is)."""
