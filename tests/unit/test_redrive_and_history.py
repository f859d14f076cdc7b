"""Failing for good, history and re-driving, through the engine in memory: what an operator
relies on. Each safety check is shown to fail with its bug put back."""

from __future__ import annotations

from collections import Counter

import pytest

from tq_cloud import ExecutorActions, HandlerSettings, Task, TaskQueuesManager, TaskStatus
from tq_cloud.core.commit import Decider
from tq_cloud.core.redrive import Redriver
from tq_cloud.errors import NonRetryableError
from tq_cloud.ports.storage import TaskQuery
from tq_cloud.testing import InMemoryStack

FAILED = TaskQuery(status=TaskStatus.FAILED)


def app_with(runs: Counter[str], broken: set[str]) -> TaskQueuesManager:
    app = TaskQueuesManager()

    @app.task("q", "plain", retries=3)  # keeps no failures of its own
    async def plain(task: Task, actions: ExecutorActions) -> None:
        runs[task.key] += 1
        if task.payload.get("raise"):
            raise NonRetryableError("the account was deleted")
        if task.key in broken:
            actions.fail(task, "refused", retry=False)
        else:
            actions.success(task, {"ok": True})

    @app.task("q", "stored", retries=1, store_on_failure=True, )
    async def stored(task: Task, actions: ExecutorActions) -> None:
        runs[task.key] += 1
        actions.fail(task, "down") if task.key in broken else actions.success(task, "ok")

    return app


async def test_failing_for_good_stores_the_task_without_retries() -> None:
    runs: Counter[str] = Counter()
    stack = InMemoryStack.create(app_with(runs, {"a"}))
    await stack.handler.add_tasks([Task(id="a", type="plain", queue_id="q", payload={}),
                                   Task(id="b", type="plain", queue_id="q", payload={"raise": True})])
    await stack.run_until_idle()
    assert runs == Counter({"a": 1, "b": 1}), "no retry"
    failed = {t.key: t for t in (await stack.handler.list_tasks(FAILED)).tasks}
    assert failed["a"].execution_stats.last_error == "refused"
    assert failed["b"].execution_stats.last_error == "the account was deleted"
    assert failed["b"].execution_stats.last_error_type == "NonRetryableError"


async def test_the_for_good_check_fails_when_such_failures_are_discarded(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Decider.decide

    def forgetful(self: Decider, outcomes: list, now: object) -> None:  # type: ignore[type-arg]
        for outcome in outcomes:
            outcome.for_good = False
        original(self, outcomes, now)  # type: ignore[arg-type]

    monkeypatch.setattr(Decider, "decide", forgetful)
    with pytest.raises(KeyError):
        await test_failing_for_good_stores_the_task_without_retries()


@pytest.mark.parametrize("history", [True, False])
async def test_history_keeps_every_outcome_only_when_on(history: bool) -> None:
    runs: Counter[str] = Counter()
    stack = InMemoryStack.create(app_with(runs, {"s"}), settings=HandlerSettings(history=history))
    await stack.handler.add_tasks([Task(id="ok", type="plain", queue_id="q", payload={}),
                                   Task(id="s", type="stored", queue_id="q", payload={}, retries=0)])
    await stack.run_until_idle()
    found = await stack.handler.find("ok")
    if history:
        assert found is not None and found.status is TaskStatus.EXECUTED and found.execution_result == {"ok": True}
    else:
        assert found is None, "an immediate success leaves no row by design"


async def _failed_then_fixed(broken: set[str], fixed: bool = True) -> tuple[InMemoryStack, Counter[str]]:
    runs: Counter[str] = Counter()
    stack = InMemoryStack.create(app_with(runs, broken))
    await stack.handler.add_tasks([Task(id=f"s{i}", type="stored", queue_id="q", payload={}) for i in range(3)])
    await stack.run_until_idle()
    assert runs == Counter({f"s{i}": 2 for i in range(3)}) and len((await stack.handler.list_tasks(FAILED)).tasks) == 3
    if fixed:
        broken.clear()  # the bug is fixed and deployed
    return stack, runs


async def test_a_redrive_runs_each_failed_task_once_more_and_records_it() -> None:
    stack, runs = await _failed_then_fixed({"s0", "s1", "s2"})
    sent = await stack.handler.redrive_matching(FAILED)
    assert sorted(t.key for t in sent) == ["s0", "s1", "s2"]
    await stack.run_until_idle()
    assert runs == Counter({f"s{i}": 3 for i in range(3)})
    row = await stack.handler.find("s0")
    assert row is not None and row.status is TaskStatus.EXECUTED and row.execution_stats.redrives == 1
    assert row.execution_stats.redriven_at is not None and row.retry_count == 2
    assert await stack.handler.redrive(["s0", "s1", "s2"]) == [], "the same redrive again sends nothing"
    await stack.run_until_idle()
    assert runs == Counter({f"s{i}": 3 for i in range(3)})


async def test_a_redriven_task_gets_its_retry_budget_again() -> None:
    stack, runs = await _failed_then_fixed({"s0", "s1", "s2"}, fixed=False)
    await stack.handler.redrive(["s0"])
    await stack.run_until_idle()
    assert runs["s0"] == 2 + 2, "the re-driven attempt and its one retry"
    row = await stack.handler.find("s0")
    assert row is not None and row.status is TaskStatus.FAILED and row.retry_count == 3


async def test_a_stale_copy_of_the_old_attempt_never_runs_as_the_redriven_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """A record of the failed attempt redelivered after the redrive (at-least-once) must not run
    again: the re-driven attempt is numbered after it."""
    stack, runs = await _failed_then_fixed({"s0"} | {"s1", "s2"})
    [row] = await stack.storage.get(["s0"])
    stale = row.model_copy(update={"status": TaskStatus.SCHEDULED})
    await stack.handler.redrive(["s0"])
    await stack.queue.requeue([stale])
    await stack.run_until_idle()
    assert runs["s0"] == 3, "the re-driven attempt once; the stale copy not at all"


async def test_the_stale_copy_check_fails_when_a_redrive_restarts_the_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Redriver._next_attempt

    def restarting(self: Redriver, row: Task) -> Task:
        copy = original(self, row)
        return copy.model_copy(update={"execution_stats": copy.execution_stats.model_copy(
            update={"retry_count": row.retry_count, "redrive_base": row.retry_count})})

    monkeypatch.setattr(Redriver, "_next_attempt", restarting)
    monkeypatch.setattr("tq_cloud.backends.memory.storage._attempt",
                        lambda task: (task.execution_stats.retry_count, -task.execution_stats.redrives))
    with pytest.raises(AssertionError, match="the stale copy not at all"):
        await test_a_stale_copy_of_the_old_attempt_never_runs_as_the_redriven_one(monkeypatch)


async def test_counts_per_queue_and_type_with_the_last_minute() -> None:
    from tq_cloud import Operations

    runs: Counter[str] = Counter()
    stack = InMemoryStack.create(app_with(runs, {"s0"}), settings=HandlerSettings(history=True))
    await stack.handler.add_tasks([*(Task(id=f"p{i}", type="plain", queue_id="q", payload={}) for i in range(4)),
                                   Task(id="s0", type="stored", queue_id="q", payload={}, retries=0)])
    await stack.run_until_idle()
    ops = Operations.of(stack)
    counts = await ops.counts()
    assert counts["rows"] == [{"queue": "q", "type": "plain", "status": "executed", "count": 4, "last_minute": 4},
                              {"queue": "q", "type": "stored", "status": "failed", "count": 1, "last_minute": 1}]
    assert counts["total"] == 5 and counts["executed_last_minute"] == 4
    await stack.clock.advance(120)
    later = await ops.counts()
    assert later["total"] == 5 and later["executed_last_minute"] == 0
    await stack.clock.advance(900)
    assert (await ops.counts())["rows"] == []
