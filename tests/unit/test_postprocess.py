"""Retries, exhaustion, stored results and replay-safety of post-processing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.helpers import EventLog
from tq_cloud import ExecutorActions, LifecycleConfig, Task, TaskStatus
from tq_cloud.core.retry import retry_delay_ms
from tq_cloud.ports.notifications import QueueStats
from tq_cloud.testing import InMemoryStack


class Notes:
    def __init__(self) -> None:
        self.discarded: list[tuple[int, int]] = []
        self.errors: list[str] = []
        self.stats: list[QueueStats] = []
        self.final: list[list[QueueStats]] = []

    async def on_tasks_discarded(self, count: int, total: int) -> None:
        self.discarded.append((count, total))

    async def on_task_error(self, error: BaseException, context: str) -> None:
        self.errors.append(context)

    async def on_queue_stats(self, stats: QueueStats) -> None:
        self.stats.append(stats)

    async def on_final_stats(self, stats: list[QueueStats]) -> None:
        self.final.append(stats)


def test_backoff_is_quadratic_and_capped() -> None:
    assert [retry_delay_ms(None, n) for n in range(4)] == [2000, 8000, 18000, 32000]
    assert retry_delay_ms(None, 50) == 300_000
    assert retry_delay_ms(500, 1) == 2000
    assert retry_delay_ms(0, 3) == 0


async def test_failures_retry_with_backoff_then_succeed(stack: InMemoryStack) -> None:
    attempts: list[tuple[int, float]] = []
    start = stack.clock.now()

    @stack.registry.task("q", "t", retries=3)
    async def flaky(task: Task, actions: ExecutorActions) -> None:
        attempts.append((task.retry_count, (stack.clock.now() - start).total_seconds()))
        if task.retry_count < 2:
            actions.fail(task, "not yet", {"attempt": task.retry_count})
        else:
            actions.success(task, "done")

    await stack.handler.add_tasks([Task(type="t", queue_id="q", payload={})])
    await stack.run_until_idle()
    assert attempts == [(0, 0.0), (1, 2.0), (2, 10.0)]
    assert stack.storage.snapshot() == {}, "an unstored task leaves no row when it finally succeeds"


async def test_stored_task_retries_through_the_store_and_ends_executed(stack: InMemoryStack) -> None:
    @stack.registry.task("q", "t", retries=2, store_on_failure=True)
    async def flaky(task: Task, actions: ExecutorActions) -> None:
        if task.retry_count == 0:
            raise ConnectionError("upstream down")
        actions.success(task, {"ok": True})

    [added] = await stack.handler.add_tasks([Task(type="t", queue_id="q", payload={})])
    await stack.process_ready()
    row = stack.storage.snapshot()[added.key]
    assert row.status is TaskStatus.PROCESSING and row.retry_count == 1
    assert row.execution_stats.last_error == "upstream down"
    assert row.execute_at == stack.clock.now() + timedelta(seconds=2)
    assert await stack.handler.process_mature_tasks() == 0, "the retry row is not swept while queued"
    await stack.run_until_idle()
    row = stack.storage.snapshot()[added.key]
    assert row.status is TaskStatus.EXECUTED and row.execution_result == {"ok": True}


async def test_retry_on_a_queue_that_cannot_delay_waits_in_the_store() -> None:
    stack = InMemoryStack.create(honours_execute_at=False)
    runs: list[float] = []
    start = stack.clock.now()

    @stack.registry.task("q", "t", retries=1)
    async def flaky(task: Task, actions: ExecutorActions) -> None:
        runs.append((stack.clock.now() - start).total_seconds())
        actions.fail(task, "x") if task.retry_count == 0 else actions.success(task)

    await stack.handler.add_tasks([Task(type="t", queue_id="q", payload={})])
    await stack.process_ready()
    assert stack.queue.depth() == 0 and len(stack.storage.by_status(TaskStatus.SCHEDULED)) == 1
    await stack.run_until_idle()
    assert runs == [0.0, 2.0], "back-off is honoured even though the queue cannot delay"


async def test_exhausted_stored_task_is_failed_with_its_error_and_details() -> None:
    events = EventLog()
    stack = InMemoryStack.create(task_lifecycle=events, lifecycle_config=LifecycleConfig(mode="sync"))

    @stack.registry.task("q", "t", retries=1, store_on_failure=True)
    async def broken(task: Task, actions: ExecutorActions) -> None:
        actions.fail(task, KeyError("k"), {"endpoint": "/x"})

    [added] = await stack.handler.add_tasks([Task(type="t", queue_id="q", payload={})])
    await stack.run_until_idle()
    row = stack.storage.snapshot()[added.key]
    assert row.status is TaskStatus.FAILED and row.retry_count == 1
    assert row.execution_stats.last_error == "'k'" and row.execution_stats.last_error_type == "KeyError"
    assert row.execution_stats.details == {"endpoint": "/x"} and row.execution_stats.failed_at
    failed = events.of("on_task_failed")
    assert [e.will_retry for e in failed] == [True, False]
    assert failed[0].next_attempt_at is not None and failed[0].error == "'k'"
    [exhausted] = events.of("on_task_exhausted")
    assert exhausted.total_attempts == 2 and exhausted.stored


async def test_exhausted_unstored_task_is_discarded_counted_and_announced() -> None:
    notes, events = Notes(), EventLog()
    stack = InMemoryStack.create(notifications=notes, task_lifecycle=events,
                                 lifecycle_config=LifecycleConfig(mode="sync"))

    @stack.registry.task("q", "t")
    async def broken(task: Task, actions: ExecutorActions) -> None:
        actions.fail(task, "nope")

    await stack.handler.add_tasks([Task(type="t", queue_id="q", payload={}) for _ in range(3)])
    await stack.run_until_idle()
    assert stack.storage.snapshot() == {}
    assert notes.discarded == [(3, 3)]
    assert [e.stored for e in events.of("on_task_exhausted")] == [False] * 3


async def test_executor_retries_default_applies_to_future_tasks(stack: InMemoryStack) -> None:
    """The reference persisted `retries || 0`, so future tasks silently lost their retries."""
    runs = 0

    @stack.registry.task("q", "t", retries=2)
    async def flaky(task: Task, actions: ExecutorActions) -> None:
        nonlocal runs
        runs += 1
        actions.fail(task, "x")

    later = stack.clock.now() + timedelta(hours=1)
    await stack.handler.add_tasks([Task(type="t", queue_id="q", payload={}, execute_at=later)])
    await stack.run_until_idle()
    assert runs == 3


async def test_commit_failure_reports_the_batch_uncommitted_and_redelivery_converges(
    stack: InMemoryStack,
) -> None:
    runs = 0

    @stack.registry.task("q", "t", store_on_failure=True)
    async def ok(task: Task, actions: ExecutorActions) -> None:
        nonlocal runs
        runs += 1
        actions.add_tasks([Task(type="child", queue_id="q", payload={}, force_store=True)])
        actions.success(task)

    @stack.registry.task("q", "child")
    async def child(task: Task, actions: ExecutorActions) -> None:
        actions.success(task)

    await stack.handler.add_tasks([Task(id="p", type="t", queue_id="q", payload={}, force_store=True)])
    [parent] = await stack.queue.receive("q", 10)
    stack.storage.fail_next_writes = 1
    report = await stack.handler.process_batch([parent])
    assert [t.id for t in report.not_committed] == ["p"] and report.error is not None
    await stack.queue.requeue(report.not_committed)
    await stack.run_until_idle()
    rows = stack.storage.snapshot()
    assert runs == 2
    assert sorted((r.type, r.status) for r in rows.values()) == [
        ("child", TaskStatus.EXECUTED), ("t", TaskStatus.EXECUTED)]


async def test_replaying_a_committed_run_changes_nothing(stack: InMemoryStack) -> None:
    @stack.registry.task("q", "t", retries=3, store_on_failure=True)
    async def flaky(task: Task, actions: ExecutorActions) -> None:
        actions.fail(task, "x")

    await stack.handler.add_tasks([Task(id="r", type="t", queue_id="q", payload={}, force_store=True)])
    [delivered] = await stack.queue.receive("q", 10)
    result = await stack.handler.runner.run("c", [delivered])
    await stack.handler.post_process(result)
    depth = stack.queue.depth()
    await stack.handler.post_process(result)
    assert stack.queue.depth() == depth == 1, "the replayed retry is not enqueued twice"
    assert stack.storage.snapshot()["r"].retry_count == 1


async def test_queue_stats_are_reported_past_the_threshold() -> None:
    from tq_cloud import HandlerSettings

    notes = Notes()
    stack = InMemoryStack.create(notifications=notes, settings=HandlerSettings(stats_threshold=5))

    @stack.registry.task("q", "t")
    async def ok(task: Task, actions: ExecutorActions) -> None:
        actions.success(task)

    await stack.handler.add_tasks([Task(type="t", queue_id="q", payload={}) for _ in range(7)])
    await stack.run_until_idle(batch_size=5)
    assert [(s.queue_id, s.succeeded) for s in notes.stats] == [("q", 5)]


@pytest.mark.parametrize("kwargs", [{"stats_threshold": 0}, {"poll_interval": 0},
                                    {"stale_after": timedelta(minutes=1)}])
def test_invalid_handler_settings_fail_fast(kwargs: dict[str, object]) -> None:
    from tq_cloud import HandlerSettings
    from tq_cloud.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        HandlerSettings(**kwargs)  # type: ignore[arg-type]
