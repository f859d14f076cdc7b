"""The runner: executor kinds, isolation of failures, bad input, claims."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
from pydantic import BaseModel

from tests.helpers import EventLog
from tq_cloud import ExecutorActions, LifecycleConfig, Task, TaskStatus
from tq_cloud.core.log_context import LogContextFilter, current_log_context
from tq_cloud.domain.limits import MAX_RESULT_BYTES
from tq_cloud.domain.task import TaskMetadata
from tq_cloud.errors import TaskNotInScopeError
from tq_cloud.testing import InMemoryStack


def task(n: int, type_: str = "t", queue: str = "q", **kw: object) -> Task:
    return Task(id=f"{type_}-{n}", type=type_, queue_id=queue, payload={"n": n}, **kw)  # type: ignore[arg-type]


async def test_sequential_executor_runs_one_at_a_time(stack: InMemoryStack) -> None:
    running, peak = 0, 0

    @stack.registry.task("q", "t")
    async def one(t: Task, actions: ExecutorActions) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0)
        running -= 1
        actions.success(t, t.payload["n"])

    result = await stack.handler.runner.run("c", [task(i) for i in range(5)])
    assert peak == 1
    assert sorted(o.result for o in result.successes) == [0, 1, 2, 3, 4]


async def test_parallel_executor_runs_chunks_concurrently(stack: InMemoryStack) -> None:
    gate = asyncio.Event()
    running, peak = 0, 0

    @stack.registry.task("q", "t", parallel=True, chunk_size=3)
    async def par(t: Task, actions: ExecutorActions) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 3:
            gate.set()
        await asyncio.wait_for(gate.wait(), 1) if t.payload["n"] < 3 else None
        running -= 1
        actions.success(t)

    result = await stack.handler.runner.run("c", [task(i) for i in range(7)])
    assert peak == 3
    assert len(result.successes) == 7


async def test_batch_executor_gets_all_tasks_of_its_type_at_once(stack: InMemoryStack) -> None:
    seen: list[list[str]] = []

    @stack.registry.batch_task("q", "b")
    async def batch(tasks: list[Task], actions: ExecutorActions) -> None:
        seen.append([t.key for t in tasks])
        for t in tasks:
            actions.success(t)

    @stack.registry.task("q", "s")
    async def single(t: Task, actions: ExecutorActions) -> None:
        actions.success(t)

    tasks = [task(1, "b"), task(1, "s"), task(2, "b"), task(3, "b")]
    result = await stack.handler.runner.run("c", tasks)
    assert seen == [["b-1", "b-2", "b-3"]]
    assert len(result.successes) == 4


async def test_groups_by_queue_and_type_not_by_type_alone(stack: InMemoryStack) -> None:
    calls: list[str] = []
    for queue in ("q1", "q2"):
        @stack.registry.task(queue, "t")
        async def ex(t: Task, actions: ExecutorActions, queue: str = queue) -> None:
            calls.append(f"{queue}:{t.queue_id}")
            actions.success(t)

    await stack.handler.runner.run("c", [task(1, queue="q1"), task(2, queue="q2")])
    assert sorted(calls) == ["q1:q1", "q2:q2"]


async def test_exception_fails_only_its_task(stack: InMemoryStack) -> None:
    @stack.registry.task("q", "t", parallel=True, chunk_size=4)
    async def flaky(t: Task, actions: ExecutorActions) -> None:
        if t.payload["n"] == 2:
            raise ValueError("boom")
        actions.success(t)

    result = await stack.handler.runner.run("c", [task(i) for i in range(4)])
    [failure] = result.failures
    assert failure.task.key == "t-2" and failure.error == "boom" and failure.error_type == "ValueError"
    assert len(result.successes) == 3


async def test_batch_executor_crash_fails_only_unreported_tasks(stack: InMemoryStack) -> None:
    @stack.registry.batch_task("q", "b")
    async def batch(tasks: list[Task], actions: ExecutorActions) -> None:
        actions.success(tasks[0])
        raise RuntimeError("half way")

    result = await stack.handler.runner.run("c", [task(1, "b"), task(2, "b")])
    assert [o.task.key for o in result.successes] == ["b-1"]
    assert [(o.task.key, o.error) for o in result.failures] == [("b-2", "half way")]


async def test_returning_is_reporting_for_one_task_and_a_batch_keeps_its_rule(stack: InMemoryStack) -> None:
    """A single-task executor that returns succeeds with what it returned (None included); a
    batch executor's task left without a report fails, retryably (not ignored)."""
    @stack.registry.task("q", "t")
    async def returns(t: Task, actions: ExecutorActions) -> dict[str, int]:
        return {"n": 1}

    @stack.registry.task("q", "none")
    async def returns_nothing(t: Task, actions: ExecutorActions) -> None:
        return None

    @stack.registry.batch_task("q", "b")
    async def forgetful_batch(tasks: list[Task], actions: ExecutorActions) -> None:
        return None

    result = await stack.handler.runner.run("c", [task(1), task(3, "none"), task(2, "b")])
    assert {o.task.key: o.result for o in result.successes} == {"t-1": {"n": 1}, "none-3": None}
    assert {o.task.key for o in result.failures} == {"b-2"}
    assert all("without calling success() or fail()" in (o.error or "") and o.retryable
               for o in result.failures)
    assert all(o.verdict is None for o in result.failures), "forgotten is a failure to decide, not an ignore"


async def test_first_outcome_wins(stack: InMemoryStack) -> None:
    @stack.registry.task("q", "t")
    async def both(t: Task, actions: ExecutorActions) -> None:
        actions.success(t, "first")
        actions.fail(t, "second")

    result = await stack.handler.runner.run("c", [task(1)])
    assert [o.result for o in result.successes] == ["first"]
    assert result.failures == []


async def test_reporting_on_a_task_not_given_is_an_error_for_that_task(stack: InMemoryStack) -> None:
    @stack.registry.task("q", "t")
    async def meddler(t: Task, actions: ExecutorActions) -> None:
        actions.success(task(99))

    result = await stack.handler.runner.run("c", [task(1)])
    [failure] = result.failures
    assert failure.error_type == TaskNotInScopeError.__name__


async def test_invalid_payload_is_a_final_failure_with_the_validation_error(stack: InMemoryStack) -> None:
    class Email(BaseModel):
        to: str

    received: list[Email] = []

    @stack.registry.task("q", "mail", retries=5, store_on_failure=True, payload_model=Email)
    async def send(t: Task[Email], actions: ExecutorActions) -> None:
        received.append(t.payload)
        actions.success(t)

    good = Task(id="good", type="mail", queue_id="q", payload={"to": "a@b"})
    bad = Task(id="bad", type="mail", queue_id="q", payload={"to": 5})
    await stack.queue.publish([good, bad])
    await stack.run_until_idle()
    assert received == [Email(to="a@b")]
    row = stack.storage.snapshot()["bad"]
    assert row.status is TaskStatus.FAILED and row.retry_count == 0
    assert "payload does not match Email" in (row.execution_stats.last_error or "")
    assert row.payload == {"to": 5}


async def test_oversized_and_non_json_results_are_dropped_and_recorded(stack: InMemoryStack) -> None:
    @stack.registry.task("q", "t", store_on_failure=True)
    async def big(t: Task, actions: ExecutorActions) -> None:
        actions.success(t, "x" * (MAX_RESULT_BYTES + 1) if t.payload["n"] == 1 else {1, object()})

    result = await stack.handler.runner.run("c", [task(1, force_store=True), task(2, force_store=True)])
    assert len(result.successes) == 2
    drops = {o.task.key: o.result_dropped for o in result.successes}
    assert "exceeds the 262144-byte limit" in (drops["t-1"] or "")
    assert "not JSON-serialisable" in (drops["t-2"] or "")
    assert all(o.result is None and o.task.execution_result is None for o in result.successes)


async def test_unknown_task_type_is_recorded_as_ignored(stack: InMemoryStack) -> None:
    events = EventLog()
    stack = InMemoryStack.create(stack.registry, task_lifecycle=events,
                                 lifecycle_config=LifecycleConfig(mode="sync"))
    await stack.queue.publish([task(1, "mystery")])
    await stack.run_until_idle()
    row = stack.storage.snapshot()["mystery-1"]
    assert row.status is TaskStatus.IGNORED
    assert row.execution_stats.ignored_reason == "no executor registered for ('q', 'mystery')"
    assert [e.reason for e in events.of("on_task_cancelled")] == [row.execution_stats.ignored_reason]


async def test_a_task_claimed_elsewhere_is_deferred_through_the_store_not_dropped(stack: InMemoryStack) -> None:
    ran: list[str] = []

    @stack.registry.task("q", "t")
    async def ex(t: Task, actions: ExecutorActions) -> None:
        ran.append(t.key)
        actions.success(t)

    await stack.locks.acquire(["t-1"], "someone-else", timedelta(minutes=5))
    report = await stack.handler.process_batch([task(1), task(2)])
    assert ran == ["t-2"] and report.not_committed == [], "no record goes back to burn the stream's retries"
    assert not stack.locks.is_held("t-2"), "claims are released after the run"
    started = stack.clock.now()
    await stack.run_until_idle()
    assert ran == ["t-2", "t-1"], "deferred until the other worker's claim expired, then run"
    assert stack.clock.now() - started >= timedelta(minutes=5)


async def test_log_context_is_bound_around_the_executor(stack: InMemoryStack, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[dict[str, str]] = []

    @stack.registry.task("q", "t")
    async def ex(t: Task, actions: ExecutorActions) -> None:
        seen.append(dict(current_log_context()))
        actions.log.info("working")
        actions.add_tasks([Task(type="child", queue_id="q", payload={},
                                metadata=TaskMetadata(log_context={"req": "child-wins"}))])
        actions.success(t)

    parent = task(1, metadata=TaskMetadata(log_context={"req": "r1", "task_id": "spoofed"}))
    logging.getLogger("tq_cloud.task").addFilter(LogContextFilter())
    with caplog.at_level(logging.INFO, logger="tq_cloud.task"):
        result = await stack.handler.runner.run("c", [parent])
    assert seen == [{"req": "r1", "task_id": "t-1", "task_type": "t", "worker_id": stack.handler.worker_id}]
    assert "[req:r1][task_id:t-1]" in caplog.records[0].tq_context_text  # type: ignore[attr-defined]
    [child] = result.new_tasks
    assert child.metadata.log_context == {"req": "child-wins", "task_id": "spoofed"}
    assert current_log_context() == {}


async def test_children_get_ids_derived_from_the_parent_attempt(stack: InMemoryStack) -> None:
    @stack.registry.task("q", "t")
    async def ex(t: Task, actions: ExecutorActions) -> None:
        actions.add_tasks([Task(type="c", queue_id="q", payload={}) for _ in range(2)])
        actions.success(t)

    first = await stack.handler.runner.run("c", [task(1)])
    replay = await stack.handler.runner.run("c", [task(1)])
    assert [t.id for t in first.new_tasks] == [t.id for t in replay.new_tasks]
    assert len({t.id for t in first.new_tasks}) == 2


async def test_oversized_child_fails_the_parent_with_a_clear_error(stack: InMemoryStack) -> None:
    @stack.registry.task("q", "t")
    async def ex(t: Task, actions: ExecutorActions) -> None:
        actions.add_tasks([Task(type="c", queue_id="q", payload="x" * (2 * 1024 * 1024))])
        actions.success(t)

    result = await stack.handler.runner.run("c", [task(1)])
    [failure] = result.failures
    assert failure.error_type == "PayloadTooLargeError" and result.new_tasks == []


async def test_payloads_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    secret = "4111-1111-1111-1111"
    stack = InMemoryStack.create(lifecycle_config=LifecycleConfig(mode="sync"))

    @stack.registry.task("q", "charge", retries=1)
    async def charge(t: Task, actions: ExecutorActions) -> None:
        raise ValueError("card declined")

    with caplog.at_level(logging.DEBUG):
        await stack.handler.add_tasks([Task(type="charge", queue_id="q", payload={"card": secret}),
                                       Task(type="unknown", queue_id="q", payload={"card": secret})], allow_unknown=True)
        await stack.run_until_idle()
    assert caplog.records, "the failures were logged"
    assert secret not in caplog.text


async def test_a_producer_log_context_can_neither_break_nor_forge_log_records(
        stack: InMemoryStack, caplog: pytest.LogCaptureFixture) -> None:
    @stack.registry.task("q", "t")
    async def ex(t: Task, actions: ExecutorActions) -> None:
        actions.log.info("working")
        actions.success(t)

    hostile = {"name": "x", "message": "forged", "process": "1", "evil\n[task_id:forged]": "v]\n[x:y"}
    logging.getLogger("tq_cloud.task").addFilter(LogContextFilter())
    with caplog.at_level(logging.INFO, logger="tq_cloud.task"):
        result = await stack.handler.runner.run("c", [task(1, metadata=TaskMetadata(log_context=hostile))])
    assert [o.succeeded for o in result.outcomes] == [True], "a key named like a record field breaks nothing"
    [record] = [r for r in caplog.records if r.getMessage() == "working"]
    assert record.name == "tq_cloud.task" and record.tq_context["task_id"] == "t-1"  # type: ignore[attr-defined]
    text = record.tq_context_text  # type: ignore[attr-defined]
    assert "\n" not in text and text.count("[task_id:") == 1 and "[task_id:t-1]" in text
