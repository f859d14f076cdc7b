"""Every error tq-cloud raises on purpose, in one place.

Each message says what went wrong and how to fix it, because these errors surface at
configuration time or in a producer's call stack, far from the code that explains them.
"""

from __future__ import annotations


class TqError(Exception):
    """Base class: catch this to handle any tq-cloud error."""


class ConfigurationError(TqError):
    """An executor, handler or backend was set up with settings that cannot work."""


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


class PayloadTooLargeError(TqError):
    """A task does not fit the transport or the store it is routed to."""

    def __init__(self, task_id: str | None, size: int, limit: int, where: str) -> None:
        super().__init__(
            f"task {task_id!r} serialises to {size} bytes, over the {limit}-byte limit of {where}; "
            "store large data elsewhere (S3, a database) and put a reference in the payload"
        )
        self.task_id = task_id
        self.size = size
        self.limit = limit


class QueueWriteError(TqError):
    """Tasks could not be written to the message queue; the tasks named were not sent."""

    def __init__(self, message: str, task_ids: list[str]) -> None:
        super().__init__(f"{message}: tasks not written: {', '.join(task_ids) or '(none)'}")
        self.task_ids = task_ids


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


class InvalidTaskError(TqError):
    """A task whose payload does not match its executor's payload model."""


class InvalidFlowError(TqError):
    """A flow definition that cannot run (no steps, a non-positive timeout)."""
