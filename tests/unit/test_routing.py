"""add_tasks: the three routing paths, limits and the executor's partition key."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tq_cloud import ExecutorActions, Task, TaskStatus
from tq_cloud.domain.task import TaskMetadata
from tq_cloud.errors import InvalidTaskError, PayloadTooLargeError, QueueWriteError
from tq_cloud.testing import InMemoryStack


async def ok(task: Task, actions: ExecutorActions) -> None:
    actions.success(task)


def by_user(task: Task) -> str:
    return f"user-{task.payload['user']}"


async def test_immediate_task_goes_to_the_queue_only_with_an_id(stack: InMemoryStack) -> None:
    [routed] = await stack.handler.add_tasks([Task(type="t", queue_id="q", payload={})], allow_unknown=True)
    assert routed.id and routed.created_at == stack.clock.now() and routed.execute_at == stack.clock.now()
    assert stack.queue.depth("q") == 1
    assert stack.storage.snapshot() == {}


async def test_future_task_is_stored_as_scheduled_and_swept_when_due(stack: InMemoryStack) -> None:
    later = stack.clock.now() + timedelta(minutes=10)
    [routed] = await stack.handler.add_tasks([Task(type="t", queue_id="q", payload={}, execute_at=later,
                                                   force_store=True)], allow_unknown=True)
    row = stack.storage.snapshot()[routed.key]
    assert row.status is TaskStatus.SCHEDULED and row.force_store
    assert stack.queue.depth() == 0
    assert await stack.handler.process_mature_tasks() == 0
    await stack.clock.advance(600)
    assert await stack.handler.process_mature_tasks() == 1
    assert stack.storage.snapshot()[routed.key].status is TaskStatus.PROCESSING
    assert stack.queue.depth("q") == 1
    assert await stack.handler.process_mature_tasks() == 0, "a claimed task is never sent twice"


async def test_force_store_is_stored_processing_and_queued(stack: InMemoryStack) -> None:
    [routed] = await stack.handler.add_tasks([Task(type="t", queue_id="q", payload={}, force_store=True)], allow_unknown=True)
    assert stack.storage.snapshot()[routed.key].status is TaskStatus.PROCESSING
    [queued] = await stack.queue.receive("q", 10)
    assert queued.id == routed.id and queued.status is TaskStatus.SCHEDULED


async def test_force_store_queue_failure_resets_row_and_raises(stack: InMemoryStack) -> None:
    stack.queue.fail_next_publishes = 1
    with pytest.raises(QueueWriteError):
        await stack.handler.add_tasks([Task(id="f1", type="t", queue_id="q", payload={}, force_store=True)], allow_unknown=True)
    assert stack.storage.snapshot()["f1"].status is TaskStatus.SCHEDULED
    assert await stack.handler.process_mature_tasks() == 1, "the sweeper sends it instead"
    assert stack.queue.depth("q") == 1


async def test_store_failure_on_force_store_sends_nothing(stack: InMemoryStack) -> None:
    stack.storage.fail_next_writes = 1
    with pytest.raises(Exception, match="injected storage failure"):
        await stack.handler.add_tasks([Task(type="t", queue_id="q", payload={}, force_store=True)], allow_unknown=True)
    assert stack.queue.depth() == 0


async def test_redispatching_a_stored_task_with_the_same_id_is_a_no_op(stack: InMemoryStack) -> None:
    task = Task(id="same", type="t", queue_id="q", payload={}, force_store=True)
    await stack.handler.add_tasks([task], allow_unknown=True)
    await stack.handler.add_tasks([task], allow_unknown=True)
    assert stack.queue.depth("q") == 1


async def test_near_future_task_on_a_queue_that_cannot_delay_goes_to_the_store() -> None:
    stack = InMemoryStack.create(honours_execute_at=False)
    soon = stack.clock.now() + timedelta(seconds=30)
    [routed] = await stack.handler.add_tasks([Task(type="t", queue_id="q", payload={}, execute_at=soon)], allow_unknown=True)
    assert stack.queue.depth() == 0
    assert stack.storage.snapshot()[routed.key].status is TaskStatus.SCHEDULED


async def test_partition_key_from_the_executor_on_every_path(stack: InMemoryStack) -> None:
    stack.registry.task("q", "t", partition_key=by_user)(ok)
    now = stack.clock.now()
    routed = await stack.handler.add_tasks([
        Task(type="t", queue_id="q", payload={"user": 1}),
        Task(type="t", queue_id="q", payload={"user": 2}, force_store=True),
        Task(type="t", queue_id="q", payload={"user": 3}, execute_at=now + timedelta(hours=1)),
    ], allow_unknown=True)
    assert [t.partition_key for t in routed] == ["user-1", "user-2", "user-3"]
    assert stack.storage.snapshot()[routed[2].key].partition_key == "user-3"


async def test_log_context_is_limited_to_ten_keys_and_one_kilobyte(stack: InMemoryStack) -> None:
    many = {f"k{i:02d}": "v" for i in range(15)}
    big = {"blob": "x" * 2000}
    fine = {"request": "r1"}
    routed = await stack.handler.add_tasks([
        Task(type="t", queue_id="q", payload={}, metadata=TaskMetadata(log_context=ctx))
        for ctx in (many, big, fine)
    ], allow_unknown=True)
    assert list(routed[0].metadata.log_context or {}) == [f"k{i:02d}" for i in range(10)]
    assert routed[1].metadata.log_context is None
    assert routed[2].metadata.log_context == fine


async def test_oversized_payload_is_rejected_before_anything_is_sent(stack: InMemoryStack) -> None:
    with pytest.raises(PayloadTooLargeError, match="over the 1048576-byte limit"):
        await stack.handler.add_tasks([
            Task(type="t", queue_id="q", payload={}),
            Task(id="huge", type="t", queue_id="q", payload={"x": "y" * (1024 * 1024)}),
        ], allow_unknown=True)
    assert stack.queue.depth() == 0


async def test_payload_too_large_for_the_store(stack: InMemoryStack) -> None:
    with pytest.raises(PayloadTooLargeError, match="task store"):
        await stack.handler.add_tasks([
            Task(type="t", queue_id="q", payload={"x": "y" * (500 * 1024)}, force_store=True)], allow_unknown=True)


async def test_payload_not_matching_the_model_is_rejected_at_add(stack: InMemoryStack) -> None:
    from pydantic import BaseModel

    class Email(BaseModel):
        to: str

    stack.registry.task("q", "mail", payload_model=Email)(ok)
    with pytest.raises(InvalidTaskError, match="payload does not match Email"):
        await stack.handler.add_tasks([Task(type="mail", queue_id="q", payload={"bad": 1})], allow_unknown=True)


async def test_non_json_payload_fails_at_add(stack: InMemoryStack) -> None:
    with pytest.raises(Exception, match="serialize"):
        await stack.handler.add_tasks([Task(type="t", queue_id="q", payload={"f": object()})], allow_unknown=True)


async def test_the_in_memory_delay_lane_takes_what_sqs_would() -> None:
    """Due within 15 minutes, no row, fits a message: the lane (the queue holds it until due);
    due later, force_store or too large: a scheduled row for the sweeper."""
    from datetime import timedelta

    from tq_cloud import Task, TaskStatus
    from tq_cloud.testing import InMemoryStack

    stack = InMemoryStack.create(delay_lane=True)
    ran: list[tuple[str, float]] = []
    start = stack.clock.now()

    @stack.registry.task("q", "t")
    async def t(task: Task, actions: ExecutorActions) -> None:
        ran.append((task.key, (stack.clock.now() - start).total_seconds()))
        actions.success(task)

    def later(task_id: str, minutes: float, **extra: object) -> Task:
        return Task(id=task_id, type="t", queue_id="q", payload=extra.pop("payload", {}),
                    execute_at=start + timedelta(minutes=minutes), **extra)  # type: ignore[arg-type]

    await stack.handler.add_tasks([later("lane", 10), later("row", 20), later("stored", 5, force_store=True),
                                   later("large", 5, payload={"pad": "x" * 300_000})], allow_unknown=True)
    lane = stack.handler.router.delay_lane
    assert lane is not None and set(stack.storage.snapshot()) == {"row", "stored", "large"}
    assert {r.status for r in stack.storage.snapshot().values()} == {TaskStatus.SCHEDULED}
    await stack.run_until_idle()
    assert dict(ran)["lane"] == 600.0, "on time, to the second"
    assert sorted(k for k, _ in ran) == ["lane", "large", "row", "stored"]


def _count_encodings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from tq_cloud.domain.task import Task as TaskModel

    calls = [0]
    dump = TaskModel.model_dump_json

    def counted(self: TaskModel, **kwargs: Any) -> str:
        calls[0] += 1
        return dump(self, **kwargs)

    monkeypatch.setattr(TaskModel, "model_dump_json", counted)
    return calls


async def test_add_tasks_encodes_each_task_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Routing measures a task's size on the bytes its record is written from (issue #28:
    'encode once'); the in-memory queue round-trips records as JSON, as Kinesis would."""
    from tq_cloud import TaskQueuesManager

    app = TaskQueuesManager()

    @app.task("q", "t")
    async def noop(task: Task, actions: Any) -> None: ...

    stack = InMemoryStack.create(app)
    calls = _count_encodings(monkeypatch)
    await stack.handler.add_tasks([Task(type="t", queue_id="q", payload={"n": i}) for i in range(10)])
    assert calls[0] == 10, f"{calls[0]} encodings for 10 tasks"
    assert len(await stack.queue.receive("q", 100)) == 10


async def test_the_encode_once_check_fails_when_routing_encodes_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib

    monkeypatch.setattr("tq_cloud.core.routing.encoding_once", contextlib.nullcontext)
    with pytest.raises(AssertionError, match="20 encodings"):
        await test_add_tasks_encodes_each_task_once(monkeypatch)


def test_the_memo_never_serves_another_object_and_ends_with_its_block(monkeypatch: pytest.MonkeyPatch) -> None:
    from tq_cloud.core.codec import encode_task, encoding_once

    task = Task(id="a", type="t", queue_id="q", payload={"n": 1})
    calls = _count_encodings(monkeypatch)
    with encoding_once():
        first = encode_task(task)
        assert encode_task(task) is first and calls[0] == 1
        changed = task.model_copy(update={"payload": {"n": 2}})
        assert b'"n":2' in encode_task(changed), "a copy is a new object: encoded afresh"
    encode_task(task)
    assert calls[0] == 3, "outside the block nothing is kept"
