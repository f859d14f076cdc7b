"""Attempts, leases and re-drives under redelivery, through the engine in memory: a stale copy
never undoes newer work, a reset never wipes a live lease, a lease ends with its holder, a
re-driven task's retry is due when it should be, and the sweeper keeps to its deadline. Each
check is shown to fail with its bug put back."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from tq_cloud import ExecutorActions, Task, TaskQueuesManager, TaskStatus
from tq_cloud.backends.memory import InMemoryAdapter
from tq_cloud.core import routing
from tq_cloud.core.runner import TaskRunner
from tq_cloud.errors import NonRetryableError
from tq_cloud.testing import InMemoryStack


def app_with(runs: Counter[str], failing: set[str]) -> TaskQueuesManager:
    app = TaskQueuesManager()

    @app.task("q", "kept", retries=0, store_on_failure=True)
    async def kept(task: Task, actions: ExecutorActions) -> None:
        runs[task.key] += 1
        actions.fail(task, "down") if task.key in failing else actions.success(task, "ok")

    @app.task("q", "plain", retries=0)
    async def plain(task: Task, actions: ExecutorActions) -> None:
        runs[task.key] += 1
        if task.key in failing:
            raise NonRetryableError("refused")
        actions.success(task, "ok")

    @app.task("q", "retried", retries=2, store_on_failure=True)
    async def retried(task: Task, actions: ExecutorActions) -> None:
        runs[task.key] += 1
        actions.fail(task, "down") if task.key in failing else actions.success(task, "ok")

    @app.task("q", "stored", retries=1)
    async def stored(task: Task, actions: ExecutorActions) -> None:
        runs[task.key] += 1
        actions.success(task, "ok")

    return app


async def _row(stack: InMemoryStack, key: str) -> Task:
    [row] = await stack.storage.get([key])
    return row


async def _failed_then_redriven(stack: InMemoryStack, failing: set[str], key: str, type_: str) -> Task:
    """The task's first attempt as delivered; the task then failed for good and was re-driven
    (its new attempt queued, not yet run)."""
    [sent] = await stack.handler.add_tasks([Task(id=key, type=type_, queue_id="q", payload={})])
    await stack.run_until_idle()
    assert (await _row(stack, key)).status is TaskStatus.FAILED
    failing.discard(key)
    assert [t.key for t in await stack.handler.redrive([key])] == [key]
    return sent


async def test_a_stale_copy_of_an_old_attempt_never_runs_over_a_redrive() -> None:
    runs: Counter[str] = Counter()
    failing = {"k"}
    stack = InMemoryStack.create(app_with(runs, failing))
    old = await _failed_then_redriven(stack, failing, "k", "kept")
    report = await stack.handler.process_batch([old], "redelivery")  # Kinesis gives the old record again
    assert report.not_committed == [] and runs["k"] == 1, "the committed attempt does not run again"
    row = await _row(stack, "k")
    assert row.status is TaskStatus.PROCESSING and row.retry_count == 1, "the re-drive stands"
    await stack.run_until_idle()
    assert (await _row(stack, "k")).status is TaskStatus.EXECUTED and runs["k"] == 2


async def test_a_stale_outcome_never_lands_over_a_later_attempt() -> None:
    """A task with no row by design (failed for good, then re-driven): its old record runs
    again, as any unstored task may, but its outcome cannot overwrite the re-driven row."""
    runs: Counter[str] = Counter()
    failing = {"p"}
    stack = InMemoryStack.create(app_with(runs, failing))
    old = await _failed_then_redriven(stack, failing, "p", "plain")
    failing.add("p")
    await stack.handler.process_batch([old], "redelivery")
    row = await _row(stack, "p")
    assert row.status is TaskStatus.PROCESSING and row.retry_count == 1, "the old attempt's failure did not land"
    failing.discard("p")
    await stack.run_until_idle()
    assert (await _row(stack, "p")).status is TaskStatus.EXECUTED


async def test_the_stale_outcome_check_fails_when_terminal_writes_ignore_the_attempt(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def finish(self: InMemoryAdapter, rows: list[Task]) -> None:  # the bug: any non-final row
        for row in rows:
            current = self._rows.get(row.key)
            if current is None or not current.status.is_terminal:
                self._put(row)

    monkeypatch.setattr(InMemoryAdapter, "_finish", finish)
    with pytest.raises(AssertionError, match="did not land"):
        await test_a_stale_outcome_never_lands_over_a_later_attempt()


async def test_the_stale_copy_check_fails_when_unforced_rows_are_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TaskRunner, "has_row", lambda self, task: task.force_store)
    with pytest.raises(AssertionError, match="does not run again"):
        await test_a_stale_copy_of_an_old_attempt_never_runs_over_a_redrive()


class LostAnswerQueue:
    """Writes the records, lets a consumer lease the row, then loses the answer."""

    def __init__(self, stack: InMemoryStack) -> None:
        self.stack = stack
        self.inner = stack.handler.router.rows.queue

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    async def publish(self, tasks: list[Task]) -> None:
        await self.inner.publish(tasks)
        now = self.stack.clock.now()
        assert await self.stack.storage.take_leases(tasks, "consumer", now, now - timedelta(minutes=30)) \
            == {t.key for t in tasks}
        raise TimeoutError("the answer was lost")


async def test_a_reset_after_a_lost_answer_never_wipes_a_live_lease() -> None:
    runs: Counter[str] = Counter()
    stack = InMemoryStack.create(app_with(runs, set()))
    stack.handler.router.rows.queue = LostAnswerQueue(stack)  # type: ignore[assignment]
    with pytest.raises(TimeoutError):
        await stack.handler.add_tasks([Task(id="s", type="stored", queue_id="q", payload={}, force_store=True)])
    row = await _row(stack, "s")
    assert row.status is TaskStatus.PROCESSING, "the running task's row was put back for a second send"
    assert await stack.handler.process_mature_tasks() == 0
    stack.handler.router.rows.queue = stack.handler.router.queue
    await stack.run_until_idle()
    assert runs["s"] == 1 and (await _row(stack, "s")).status is TaskStatus.EXECUTED


async def test_the_reset_check_fails_when_a_reset_ignores_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    async def reset(self: InMemoryAdapter, tasks: list[Task]) -> None:
        for task in tasks:
            row = self._rows.get(task.key)
            if row is not None and row.status is TaskStatus.PROCESSING:
                self._put(row, status=TaskStatus.SCHEDULED)

    monkeypatch.setattr(InMemoryAdapter, "reset_to_scheduled", reset)
    with pytest.raises(AssertionError, match="second send"):
        await test_a_reset_after_a_lost_answer_never_wipes_a_live_lease()


async def test_a_handed_back_record_runs_at_once_on_redelivery() -> None:
    runs: Counter[str] = Counter()
    stack = InMemoryStack.create(app_with(runs, set()))
    [task] = await stack.handler.add_tasks([Task(id="h", type="stored", queue_id="q", payload={}, force_store=True)])
    records = await stack.queue.receive("q", 10)
    stack.storage.fail_next_writes = 10  # the commit fails: the batch is handed back
    report = await stack.handler.process_batch(records, "first")
    assert report.not_committed and runs["h"] == 1
    stack.storage.fail_next_writes = 0
    again = await stack.handler.process_batch(records, "second")  # redelivered to another invocation
    assert runs["h"] == 2, "the handed-back record waited for its lease"
    assert again.not_committed == [] and (await _row(stack, "h")).status is TaskStatus.EXECUTED
    assert task.key == "h"


async def test_the_hand_back_check_fails_when_leases_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    async def keep(self: InMemoryAdapter, tasks: list[Task], owner: str) -> None:
        return None

    monkeypatch.setattr(InMemoryAdapter, "release_leases", keep)
    with pytest.raises(AssertionError, match="waited for its lease"):
        await test_a_handed_back_record_runs_at_once_on_redelivery()


async def test_a_lease_ends_at_its_holders_deadline() -> None:
    """An invocation that died keeps its lease only until its deadline (its remaining time),
    not for the stale window."""
    runs: Counter[str] = Counter()
    stack = InMemoryStack.create(app_with(runs, set()))
    await stack.handler.add_tasks([Task(id="d", type="stored", queue_id="q", payload={}, force_store=True)])
    records = await stack.queue.receive("q", 10)
    now = stack.clock.now()
    assert await stack.storage.take_leases(records, "dead", now, now - timedelta(minutes=30),
                                           now + timedelta(minutes=1)) == {"d"}
    early = await stack.handler.process_batch(records, "second", timedelta(minutes=5))
    assert runs["d"] == 0 and early.not_committed == [], "a live lease defers the copy"
    row = await _row(stack, "d")
    assert row.execute_at is not None and row.execute_at <= now + timedelta(seconds=62), \
        "deferred until the lease ends, not for the stale window"
    await stack.run_until_idle()
    assert runs["d"] == 1 and (await _row(stack, "d")).status is TaskStatus.EXECUTED


async def test_the_deadline_check_fails_when_leases_last_the_stale_window(monkeypatch: pytest.MonkeyPatch) -> None:
    original = InMemoryAdapter.take_leases

    async def stale_window(self: InMemoryAdapter, tasks: Any, owner: str, now: Any, expired_before: Any,
                           until: Any = None) -> set[str]:
        return await original(self, tasks, owner, now, expired_before, None)

    monkeypatch.setattr(InMemoryAdapter, "take_leases", stale_window)
    with pytest.raises(AssertionError, match="not for the stale window"):
        await test_a_lease_ends_at_its_holders_deadline()


async def test_a_redriven_tasks_retry_is_due_on_time() -> None:
    runs: Counter[str] = Counter()
    failing = {"r"}
    stack = InMemoryStack.create(app_with(runs, failing), honours_execute_at=False)  # as Kinesis
    await stack.handler.add_tasks([Task(id="r", type="retried", queue_id="q", payload={}, retry_after=1000)])
    await stack.run_until_idle()
    assert runs["r"] == 3 and (await _row(stack, "r")).status is TaskStatus.FAILED
    await stack.handler.redrive(["r"])
    await stack.process_ready()
    row = await _row(stack, "r")
    assert runs["r"] == 4 and row.status is TaskStatus.SCHEDULED, "the retry waits as scheduled, for the sweeper"
    started = stack.clock.now()
    failing.discard("r")
    await stack.run_until_idle()
    assert runs["r"] == 5 and stack.clock.now() - started <= timedelta(seconds=2)


async def test_the_redriven_retry_check_fails_when_the_retry_keeps_processing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routing, "waiting", lambda task: task)
    monkeypatch.setattr("tq_cloud.core.redrive.as_sent", lambda rows: list(rows))
    with pytest.raises(AssertionError, match="waits as scheduled"):
        await test_a_redriven_tasks_retry_is_due_on_time()


async def test_the_sweeper_claims_nothing_past_its_deadline() -> None:
    runs: Counter[str] = Counter()
    stack = InMemoryStack.create(app_with(runs, set()))
    later = stack.clock.now() + timedelta(hours=1)
    await stack.handler.add_tasks([Task(id=f"w{i}", type="stored", queue_id="q", payload={}, execute_at=later)
                                   for i in range(5)])
    await stack.clock.advance(3601)
    assert await stack.handler.process_mature_tasks(deadline=stack.clock.now()) == 0
    assert not [r for r in stack.storage.open_rows() if r.status is TaskStatus.PROCESSING], \
        "nothing is claimed that cannot be sent"
    assert await stack.handler.process_mature_tasks(deadline=stack.clock.now() + timedelta(seconds=5)) == 5


async def test_the_sweeper_deadline_check_fails_when_the_deadline_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    from tq_cloud.assembly.handler import TaskHandler

    original = TaskHandler.process_mature_tasks

    async def ignoring(self: TaskHandler, deadline: Any = None) -> int:
        return await original(self, None)

    monkeypatch.setattr(TaskHandler, "process_mature_tasks", ignoring)
    with pytest.raises(AssertionError):
        await test_the_sweeper_claims_nothing_past_its_deadline()
