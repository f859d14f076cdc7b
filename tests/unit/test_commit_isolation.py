"""Nothing poisons a commit: one task's write that can never succeed fails that task, never its
batch; limits are checked where the caller sees them; partial publishes resend only what was
not written; redelivered batches replay into the same state. Each test reproduces a case that
used to send a batch back for ever (or lose a task) and checks the task's recorded outcome."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from tq_cloud import ExecutorActions, Task, TaskStatus
from tq_cloud.domain.flows import FlowConfig, FlowStep
from tq_cloud.domain.limits import MAX_ERROR_CHARS, ROW_HEADROOM_BYTES
from tq_cloud.domain.task import JoinTarget
from tq_cloud.errors import InvalidTaskError, PayloadTooLargeError, QueueWriteError, UnserialisableTaskError
from tq_cloud.ids import derived_id
from tq_cloud.testing import InMemoryStack

KB = 1024


def runs_of(runs: list[str], key: str) -> int:
    return sum(1 for r in runs if r == key)


async def test_executed_row_over_the_item_limit_keeps_the_success_and_drops_the_result(stack: InMemoryStack) -> None:
    runs: list[str] = []

    @stack.registry.task("q", "big")
    async def big(task: Task, actions: ExecutorActions) -> None:
        runs.append(task.key)
        actions.success(task, "r" * (230 * KB))

    [added] = await stack.handler.add_tasks([Task(type="big", queue_id="q", payload="p" * (200 * KB),
                                                  force_store=True)], allow_unknown=True)
    await stack.run_until_idle()
    row = stack.storage.snapshot()[added.key]
    assert row.status is TaskStatus.EXECUTED and row.execution_result is None
    assert "too large" in (row.execution_stats.result_dropped or "")
    assert runs == [added.key], "the batch committed at once: the executor ran once"
    assert all(not r.not_committed for r in stack.reports)


async def test_a_huge_error_text_is_truncated_and_the_retry_is_written(stack: InMemoryStack) -> None:
    runs: list[int] = []

    @stack.registry.task("q", "t", retries=1, store_on_failure=True)
    async def loud(task: Task, actions: ExecutorActions) -> None:
        runs.append(task.retry_count)
        raise RuntimeError("e" * (450 * KB))

    [added] = await stack.handler.add_tasks([Task(type="t", queue_id="q", payload={})], allow_unknown=True)
    await stack.run_until_idle()
    row = stack.storage.snapshot()[added.key]
    assert runs == [0, 1] and row.status is TaskStatus.FAILED
    error = row.execution_stats.last_error or ""
    assert error.startswith("eee") and "truncated, 460800 characters" in error
    assert len(error) < MAX_ERROR_CHARS + 100


async def test_details_that_are_not_json_are_recorded_as_text(stack: InMemoryStack) -> None:
    @stack.registry.task("q", "t", store_on_failure=True)
    async def odd(task: Task, actions: ExecutorActions) -> None:
        actions.fail(task, "bad", {"when": object(), "ok": 1, "many": {1, 2}})

    [added] = await stack.handler.add_tasks([Task(type="t", queue_id="q", payload={})], allow_unknown=True)
    await stack.run_until_idle()
    details = stack.storage.snapshot()[added.key].execution_stats.details
    assert details["ok"] == 1 and details["when"].startswith("<object object") and sorted(details["many"]) == [1, 2]


async def test_a_task_kept_on_failure_must_fit_the_store_at_add(stack: InMemoryStack) -> None:
    @stack.registry.task("q", "keep", store_on_failure=True)
    async def keep(task: Task, actions: ExecutorActions) -> None:
        actions.success(task)

    with pytest.raises(PayloadTooLargeError, match=r"'big'.*task store"):
        await stack.handler.add_tasks([Task(id="ok", type="keep", queue_id="q", payload={}),
                                       Task(id="big", type="keep", queue_id="q", payload="x" * (500 * KB))], allow_unknown=True)
    assert stack.queue.depth() == 0, "nothing of the call was written"
    limit = stack.storage.max_item_bytes - ROW_HEADROOM_BYTES
    await stack.handler.add_tasks([Task(type="keep", queue_id="q", payload="x" * (limit - 200))], allow_unknown=True)


async def test_non_json_payload_fails_at_add_naming_the_task(stack: InMemoryStack) -> None:
    with pytest.raises(UnserialisableTaskError, match="'odd'"):
        await stack.handler.add_tasks([Task(id="odd", type="t", queue_id="q", payload={"x": object()})], allow_unknown=True)


class Order(BaseModel):
    number: int


async def test_children_are_checked_in_the_executors_call(stack: InMemoryStack) -> None:
    errors: list[str] = []

    @stack.registry.task("q", "order")
    async def order(task: Task[Order], actions: ExecutorActions) -> None:
        actions.success(task)

    @stack.registry.task("q", "parent")
    async def parent(task: Task, actions: ExecutorActions) -> None:
        for child in (Task(type="order", queue_id="q", payload={"number": "secret-not-a-number"}),
                      Task(id="c" * 300, type="order", queue_id="q", payload={"number": 1})):
            try:
                actions.add_tasks([child])
            except InvalidTaskError as exc:
                errors.append(str(exc))
        actions.success(task)

    await stack.handler.add_tasks([Task(type="parent", queue_id="q", payload={})], allow_unknown=True)
    await stack.run_until_idle()
    assert len(errors) == 2
    assert "payload does not match Order" in errors[0] and "number" in errors[0]
    assert "secret-not-a-number" not in errors[0], "errors never quote payload values"
    assert "1 to 256 characters" in errors[1]


async def test_an_over_long_or_raising_partition_key_is_the_tasks_error_at_add(stack: InMemoryStack) -> None:
    @stack.registry.task("q", "long", partition_key=lambda t: "k" * 300)
    async def long(task: Task, actions: ExecutorActions) -> None: ...

    @stack.registry.task("q", "raising", partition_key=lambda t: t.payload["tenant"])
    async def raising(task: Task, actions: ExecutorActions) -> None: ...

    with pytest.raises(InvalidTaskError, match="partition key must have 1 to 256"):
        await stack.handler.add_tasks([Task(id="a", type="long", queue_id="q", payload={})], allow_unknown=True)
    with pytest.raises(InvalidTaskError, match=r"'b'.*partition_key raised KeyError"):
        await stack.handler.add_tasks([Task(id="b", type="raising", queue_id="q", payload={})], allow_unknown=True)


async def test_a_child_whose_partition_key_raises_fails_only_its_parent(stack: InMemoryStack) -> None:
    @stack.registry.task("q", "child", partition_key=lambda t: t.payload["tenant"])
    async def child(task: Task, actions: ExecutorActions) -> None:
        actions.success(task)

    @stack.registry.task("q", "parent", store_on_failure=True)
    async def parent(task: Task, actions: ExecutorActions) -> None:
        actions.add_tasks([Task(type="child", queue_id="q", payload={})])
        actions.success(task)

    @stack.registry.task("q", "other", store_on_failure=True)
    async def other(task: Task, actions: ExecutorActions) -> None:
        actions.success(task, "fine")

    [bad, good] = await stack.handler.add_tasks([Task(type="parent", queue_id="q", payload={}, force_store=True),
                                                 Task(type="other", queue_id="q", payload={}, force_store=True)], allow_unknown=True)
    await stack.run_until_idle()
    rows = stack.storage.snapshot()
    assert rows[bad.key].status is TaskStatus.FAILED and "partition_key raised" in (
        rows[bad.key].execution_stats.last_error or "")
    assert rows[good.key].status is TaskStatus.EXECUTED


async def test_a_join_whose_results_exceed_a_record_reads_them_by_reference(stack: InMemoryStack) -> None:
    """Six results of 200 KB add up past a queue record: the join's payload stays small and
    carries none inline, and the join reads every result, whole, through the barrier."""
    joined: list[tuple[int, list[Any]]] = []

    @stack.registry.task("q", "step")
    async def step(task: Task, actions: ExecutorActions) -> None:
        actions.success(task, "r" * (200 * KB))

    @stack.registry.task("q", "join")
    async def join(task: Task, actions: ExecutorActions) -> None:
        steps = await actions.flow_results(task).all()
        joined.append((len(task.model_dump_json()), steps))
        actions.success(task)

    @stack.registry.task("q", "start")
    async def start(task: Task, actions: ExecutorActions) -> None:
        actions.start_flow([FlowStep(type="step", queue_id="q", payload={}) for _ in range(6)],
                           FlowConfig(join=JoinTarget(type="join", queue_id="q")))
        actions.success(task)

    await stack.handler.add_tasks([Task(type="start", queue_id="q", payload={})], allow_unknown=True)
    await stack.run_until_idle()
    [(size, steps)] = joined
    assert size < 2 * KB, "the join's payload holds no results"
    assert [s.step_index for s in steps] == list(range(6))
    assert all(s.status == "success" and s.result == "r" * (200 * KB) for s in steps)


async def test_one_task_the_queue_always_rejects_does_not_hold_back_the_sweep() -> None:
    stack = InMemoryStack.create()
    stack.queue._max = 50 * KB  # a queue with smaller records than the store's items
    runs: list[str] = []

    @stack.registry.task("q", "t")
    async def t(task: Task, actions: ExecutorActions) -> None:
        runs.append(task.key)
        actions.success(task)

    later = stack.clock.now() + timedelta(minutes=10)
    await stack.storage.insert([Task(id=f"t{i}", type="t", queue_id="q", payload="x" * (100 * KB if i == 1 else 1),
                                     execute_at=later, force_store=True) for i in range(3)])
    await stack.clock.advance(600)
    await stack.run_until_idle()
    rows = stack.storage.snapshot()
    assert sorted(runs) == ["t0", "t2"]
    assert rows["t1"].status is TaskStatus.FAILED and "limit" in (rows["t1"].execution_stats.last_error or "")


class PartialQueue:
    """Wraps the in-memory queue: the first publish of `refuse` ids is throttled (not written),
    the rest of that call is written, as a partial PutRecords."""

    def __init__(self, stack: InMemoryStack, refuse: set[str]) -> None:
        self.inner = stack.queue
        self.refuse = set(refuse)
        self.original = stack.queue.publish

    async def publish(self, tasks: Sequence[Task]) -> None:
        refused = [t for t in tasks if t.key in self.refuse]
        await self.original([t for t in tasks if t.key not in self.refuse])
        if refused:
            self.refuse -= {t.key for t in refused}
            raise QueueWriteError("throttled", [t.key for t in refused])


async def test_a_partial_publish_resets_only_the_tasks_not_written(stack: InMemoryStack) -> None:
    runs: list[str] = []

    @stack.registry.task("q", "t")
    async def t(task: Task, actions: ExecutorActions) -> None:
        runs.append(task.key)
        actions.success(task)

    partial = PartialQueue(stack, {"b"})
    stack.queue.publish = partial.publish  # type: ignore[method-assign]
    with pytest.raises(QueueWriteError):
        await stack.handler.add_tasks([Task(id=i, type="t", queue_id="q", payload={}, force_store=True)
                                       for i in "abc"], allow_unknown=True)
    rows = stack.storage.snapshot()
    assert rows["b"].status is TaskStatus.SCHEDULED
    assert rows["a"].status is rows["c"].status is TaskStatus.PROCESSING, "written ones are not reset"
    await stack.run_until_idle()
    assert sorted(runs) == ["a", "b", "c"], "each task sent and run exactly once"


async def test_a_batch_holding_an_attempt_and_its_own_retry_runs_the_retry(stack: InMemoryStack) -> None:
    runs: list[int] = []

    @stack.registry.task("q", "t", retries=3)
    async def t(task: Task, actions: ExecutorActions) -> None:
        runs.append(task.retry_count)
        actions.success(task)

    first = Task(id="x", type="t", queue_id="q", payload={}, force_store=True)
    [first] = await stack.storage.insert([first.model_copy(update={"status": TaskStatus.PROCESSING})])
    retry = first.model_copy(update={"execution_stats": first.execution_stats.model_copy(update={"retry_count": 1})})
    await stack.storage.schedule_retry([retry.model_copy(update={"status": TaskStatus.PROCESSING})])
    report = await stack.handler.process_batch([first, retry])
    assert runs == [1] and report.not_committed == []
    assert stack.storage.snapshot()["x"].status is TaskStatus.EXECUTED


async def test_a_record_without_an_id_replays_into_the_same_task(stack: InMemoryStack) -> None:
    @stack.registry.task("q", "t", store_on_failure=True)
    async def t(task: Task, actions: ExecutorActions) -> None:
        actions.fail(task, "no")

    for _ in range(2):
        await stack.handler.process_batch([Task(type="t", queue_id="q", payload={"n": 1})])
        await stack.handler.process_batch([Task(id="", type="t", queue_id="q", payload={"n": 2})])
    rows = stack.storage.by_status(TaskStatus.FAILED)
    assert len(rows) == 2 and {r.payload["n"] for r in rows} == {1, 2}


async def test_a_committed_stored_attempt_is_not_run_again_on_redelivery(stack: InMemoryStack) -> None:
    runs: list[str] = []

    @stack.registry.task("q", "t")
    async def t(task: Task, actions: ExecutorActions) -> None:
        runs.append(task.key)
        actions.success(task)

    [added] = await stack.handler.add_tasks([Task(type="t", queue_id="q", payload={}, force_store=True)], allow_unknown=True)
    [record] = await stack.queue.receive("q", 10)
    for _ in range(3):
        report = await stack.handler.process_batch([record])
        assert report.not_committed == []
    assert runs == [added.key]


async def test_a_failed_late_async_commit_is_redelivered_not_lost() -> None:
    import asyncio

    from tq_cloud.asynctasks.manager import AsyncTaskManager

    manager = AsyncTaskManager()
    stack = InMemoryStack.create(async_manager=manager)
    release = asyncio.Event()
    runs: list[int] = []

    @stack.registry.task("q", "slow", handoff_timeout=0.01, store_on_failure=True)
    async def slow(task: Task, actions: ExecutorActions) -> None:
        runs.append(task.retry_count)
        if len(runs) == 1:
            await release.wait()
        actions.success(task, "late")

    [added] = await stack.handler.add_tasks([Task(type="slow", queue_id="q", payload={}, force_store=True)], allow_unknown=True)
    await stack.process_ready()
    assert manager.is_handed_off(added.key)
    stack.storage.fail_next_writes = 10  # every try of the late commit fails
    release.set()
    await manager.wait_idle()
    stack.storage.fail_next_writes = 0
    assert [t.key for t in stack.handler._async_uncommitted] == [added.key]
    await stack.run_until_idle()
    row = stack.storage.snapshot()[added.key]
    assert row.status is TaskStatus.EXECUTED and row.execution_result == "late" and len(runs) == 2


def test_derived_ids_of_different_parts_never_collide() -> None:
    assert derived_id("a/b", "c") != derived_id("a", "b/c")
    assert derived_id("a", 1) != derived_id("a", "1")
