from __future__ import annotations

from datetime import datetime

import pytest
from pydantic import BaseModel, ValidationError

from tq_cloud import ExecutorActions, Task
from tq_cloud.core.executors import BatchTaskExecutor, ExecutorOptions, SingleTaskExecutor
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.errors import ConfigurationError, DuplicateExecutorError


class Email(BaseModel):
    to: str


async def noop(task: Task, actions: ExecutorActions) -> None:
    actions.success(task)


def test_task_rejects_unknown_fields_naive_dates_and_negative_retries() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Task(type="t", queue_id="q", payload={}, retry=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="timezone"):
        Task(type="t", queue_id="q", payload={}, execute_at=datetime(2026, 1, 1))
    with pytest.raises(ValidationError):
        Task(type="t", queue_id="q", payload={}, retries=-1)
    with pytest.raises(ValidationError):
        Task(type="", queue_id="q", payload={})


def test_task_round_trips_through_json() -> None:
    task = Task(id="1", type="t", queue_id="q", payload={"a": [1, 2]}, metadata={"log_context": {"k": "v"}})
    again = Task.model_validate_json(task.model_dump_json(exclude_defaults=True))
    assert again == task


def test_register_and_lookup(registry: TaskQueuesManager) -> None:
    registry.register("q1", "a", SingleTaskExecutor(fn=noop))
    registry.register("q1", "b", SingleTaskExecutor(fn=noop, parallel=True, chunk_size=3))
    registry.register("q2", "a", BatchTaskExecutor(fn=_batch))
    assert registry.get_queues() == ["q1", "q2"]
    assert registry.get_task_types_for_queue("q1") == ["a", "b"]
    assert isinstance(registry.get_executor("q2", "a"), BatchTaskExecutor)
    assert registry.get_executor("q2", "zzz") is None


async def _batch(tasks: list[Task], actions: ExecutorActions) -> None:
    for task in tasks:
        actions.success(task)


def test_duplicate_registration_fails_fast(registry: TaskQueuesManager) -> None:
    registry.register("q", "t", SingleTaskExecutor(fn=noop))
    with pytest.raises(DuplicateExecutorError, match=r"\('q', 't'\) is already registered"):
        registry.register("q", "t", SingleTaskExecutor(fn=noop))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: SingleTaskExecutor(fn=noop, parallel=True, chunk_size=0), "chunk_size"),
        (lambda: SingleTaskExecutor(fn=noop, chunk_size=4), "parallel=True"),
        (lambda: SingleTaskExecutor(fn=lambda t, a: None), "async def"),  # type: ignore[arg-type,return-value]
        (lambda: ExecutorOptions(retries=-1), "retries"),
        (lambda: ExecutorOptions(handoff_timeout=0), "handoff_timeout"),
        (lambda: ExecutorOptions(payload_model=dict), "payload_model"),  # type: ignore[arg-type]
        (lambda: SingleTaskExecutor(fn=noop, parallel=True, chunk_size=2,
                                    options=ExecutorOptions(handoff_timeout=1)), "sequential"),
        (lambda: BatchTaskExecutor(fn=_batch, options=ExecutorOptions(handoff_timeout=1)), "sequential"),
    ],
)
def test_invalid_executor_settings_fail_fast(build: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build()  # type: ignore[operator]


def test_decorator_forms_and_payload_model_inference(registry: TaskQueuesManager) -> None:
    @registry.task("mail", "send", retries=3, store_on_failure=True)
    async def send(task: Task[Email], actions: ExecutorActions) -> None:
        actions.success(task)

    @registry.batch_task("mail", "bulk")
    async def bulk(tasks: list[Task[Email]], actions: ExecutorActions) -> None:
        pass

    single = registry.get_executor("mail", "send")
    assert isinstance(single, SingleTaskExecutor)
    assert single.options.retries == 3 and single.options.store_on_failure
    assert single.options.payload_model is Email
    batch = registry.get_executor("mail", "bulk")
    assert isinstance(batch, BatchTaskExecutor) and batch.options.payload_model is Email
    with pytest.raises(ConfigurationError, match="chunk_size"):
        registry.task("mail", "x", parallel=True)(noop)
    with pytest.raises(DuplicateExecutorError):
        registry.task("mail", "send")(noop)


def test_max_retries_prefers_the_task_over_the_executor(registry: TaskQueuesManager) -> None:
    registry.register("q", "t", SingleTaskExecutor(fn=noop, options=ExecutorOptions(retries=4)))
    assert registry.max_retries(None, "q", "t") == 4
    assert registry.max_retries(1, "q", "t") == 1
    assert registry.max_retries(None, "q", "unknown") == 0
