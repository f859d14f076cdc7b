"""Hand-off of long tasks to the AsyncTaskManager, and what happens to them afterwards."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from tq_cloud import (
    AsyncTaskManager,
    AsyncTaskManagerOptions,
    EntityRef,
    ExecutorActions,
    FlowConfig,
    JoinTarget,
    Task,
    TaskStatus,
)
from tq_cloud.assembly.handler import TaskHandler
from tq_cloud.backends.memory import InMemoryLockProvider
from tq_cloud.errors import ConfigurationError
from tq_cloud.testing import InMemoryStack


class Slow:
    """An executor that blocks until released, then succeeds or fails."""

    def __init__(self, stack: InMemoryStack, *, retries: int = 1, queue: str = "q", type_: str = "slow") -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.fail = False

        @stack.registry.task(queue, type_, handoff_timeout=0.01, retries=retries, store_on_failure=True)
        async def slow(task: Task, actions: ExecutorActions) -> None:
            self.started.set()
            await self.release.wait()
            if self.fail:
                actions.fail(task, "late failure")
            else:
                actions.add_tasks([Task(type="child", queue_id=queue, payload={})])
                actions.success(task, "late result")


def make(max_tasks: int = 10, **opts: object) -> tuple[InMemoryStack, AsyncTaskManager]:
    stack = InMemoryStack.create()
    manager = AsyncTaskManager(AsyncTaskManagerOptions(max_tasks=max_tasks, sweep_interval=0, **opts),
                               clock=stack.clock)  # type: ignore[arg-type]
    stack = InMemoryStack.create(stack.registry, clock=stack.clock, async_manager=manager)
    return stack, manager


async def test_long_task_is_handed_off_and_committed_later() -> None:
    stack, manager = make()
    slow = Slow(stack)
    ok_runs: list[str] = []

    @stack.registry.task("q", "fast")
    async def fast(task: Task, actions: ExecutorActions) -> None:
        ok_runs.append(task.key)
        actions.success(task)

    @stack.registry.task("q", "child")
    async def child(task: Task, actions: ExecutorActions) -> None:
        actions.success(task)

    await stack.handler.add_tasks([
        Task(id="s", type="slow", queue_id="q", payload={}, force_store=True, entity=EntityRef(id="e", type="x")),
        Task(id="f", type="fast", queue_id="q", payload={})])
    report = await stack.step("q")
    assert report.not_committed == [] and ok_runs == ["f"], "the batch went on without the slow task"
    assert manager.is_handed_off("s") and stack.locks.is_held("s")
    assert stack.storage.snapshot()["s"].status is TaskStatus.PROCESSING
    slow.release.set()
    await manager.wait_idle()
    row = stack.storage.snapshot()["s"]
    assert row.status is TaskStatus.EXECUTED and row.execution_result == "late result"
    assert stack.projections.get("s").status == "executed"  # type: ignore[union-attr]
    assert not stack.locks.is_held("s")
    assert stack.queue.depth("q") == 1, "children added after the hand-off are kept"
    metrics = manager.get_metrics()
    assert (metrics.total_handed_off, metrics.total_completed, metrics.active_task_count) == (1, 1, 0)


async def test_async_failure_goes_through_the_retry_pipeline() -> None:
    stack, manager = make()
    slow = Slow(stack, retries=2)
    slow.fail = True
    await stack.handler.add_tasks([Task(id="s", type="slow", queue_id="q", payload={}, force_store=True)])
    await stack.step("q")
    slow.release.set()
    await manager.wait_idle()
    row = stack.storage.snapshot()["s"]
    assert row.retry_count == 1 and row.execution_stats.last_error == "late failure"
    assert row.status in (TaskStatus.PROCESSING, TaskStatus.SCHEDULED)


async def test_async_flow_step_reaches_the_barrier_and_join() -> None:
    stack, manager = make()
    Slow(stack, queue="f", type_="slow").release.set()
    joins: list[object] = []

    @stack.registry.task("f", "parent")
    async def parent(task: Task, actions: ExecutorActions) -> None:
        actions.start_flow([{"type": "slow", "queue_id": "f"}], FlowConfig(join=JoinTarget(type="j", queue_id="f")))
        actions.success(task)

    @stack.registry.task("f", "j")
    async def join(task: Task, actions: ExecutorActions) -> None:
        joins.append(task.payload["flow_results"]["steps"])
        actions.success(task)

    @stack.registry.task("f", "child")
    async def child(task: Task, actions: ExecutorActions) -> None:
        actions.success(task)

    await stack.handler.add_tasks([Task(type="parent", queue_id="f", payload={})])
    await stack.run_until_idle()
    await manager.wait_idle()
    await stack.run_until_idle()
    assert len(joins) == 1


async def test_full_manager_reschedules_without_using_an_attempt() -> None:
    stack, manager = make(max_tasks=1)
    slow = Slow(stack)
    await stack.handler.add_tasks([Task(id=f"s{i}", type="slow", queue_id="q", payload={}, force_store=True)
                                   for i in range(2)])
    await stack.step("q")
    assert manager.get_metrics().total_rejected == 1
    rejected = stack.storage.snapshot()["s1"]
    assert rejected.retry_count == 0 and rejected.execution_stats.deferrals == 1
    assert rejected.execute_at == stack.clock.now() + timedelta(seconds=30)
    slow.release.set()
    await manager.wait_idle()


async def test_duplicate_handoff_is_rejected() -> None:
    manager = AsyncTaskManager(5)
    job = asyncio.ensure_future(asyncio.Event().wait())
    task = Task(id="d", type="t", queue_id="q", payload={})

    async def finish() -> None:
        return None

    assert manager.handoff(task, job, finish, 1)
    assert not manager.handoff(task, job, finish, 1)
    assert not manager.handoff(Task(type="t", queue_id="q", payload={}), job, finish, 1), "no id"
    assert manager.get_metrics().total_rejected == 2
    result = await manager.shutdown(grace=0)
    assert result.abandoned_task_ids == ["d"] and job.cancelled()
    assert not manager.handoff(Task(id="late", type="t", queue_id="q", payload={}), job, finish)


async def test_sweep_cancels_overdue_tasks_and_retries_them() -> None:
    timeouts: list[tuple[str, float]] = []
    stack, manager = make(on_task_timeout=lambda tid, task, ms: timeouts.append((tid, ms)))
    Slow(stack)
    await stack.handler.add_tasks([Task(id="s", type="slow", queue_id="q", payload={}, force_store=True)])
    await stack.step("q")
    await stack.clock.advance(0.01)
    assert manager.sweep() == 0, "within twice the hand-off timeout"
    await stack.clock.advance(0.02)
    assert manager.sweep() == 1
    await manager.wait_idle()
    assert timeouts and timeouts[0][0] == "s"
    row = stack.storage.snapshot()["s"]
    assert row.retry_count == 1 and "abandoned" in (row.execution_stats.last_error or "")
    m = manager.get_metrics()
    assert (m.total_timed_out, m.total_completed) == (1, 0), "an evicted task is not also counted completed"


async def test_shutdown_waits_for_grace_then_abandons_with_a_retry() -> None:
    stack, manager = make()
    quick, stuck = Slow(stack, type_="quick"), Slow(stack, type_="stuck")
    await stack.handler.add_tasks([Task(id="a", type="quick", queue_id="q", payload={}, force_store=True),
                                   Task(id="b", type="stuck", queue_id="q", payload={}, force_store=True)])
    await stack.step("q")
    assert manager.get_metrics().active_task_count == 2
    shutting = asyncio.ensure_future(manager.shutdown(grace=5))
    quick.release.set()
    quick_done = manager._entries["a"].settled
    assert quick_done is not None
    await quick_done
    await stack.clock.advance(5)
    result = await shutting
    assert result.completed_during_grace == 1 and result.abandoned_task_ids == ["b"]
    rows = stack.storage.snapshot()
    assert rows["a"].status is TaskStatus.EXECUTED
    assert rows["b"].retry_count == 1 and rows["b"].status is not TaskStatus.EXECUTED
    del stuck


async def test_hard_deadline_cancels_everything_past_it() -> None:
    stack, manager = make()
    Slow(stack)
    await stack.handler.add_tasks([Task(id="s", type="slow", queue_id="q", payload={}, force_store=True)])
    await stack.step("q")
    manager.set_deadline(stack.clock.now())
    assert manager.sweep() == 1
    await manager.wait_idle()
    assert stack.storage.snapshot()["s"].retry_count == 1


async def test_without_a_manager_the_batch_waits_for_the_task(stack: InMemoryStack) -> None:
    slow = Slow(stack)

    async def release_later() -> None:
        await slow.started.wait()
        slow.release.set()

    @stack.registry.task("q", "child")
    async def child(task: Task, actions: ExecutorActions) -> None:
        actions.success(task)

    releaser = asyncio.ensure_future(release_later())
    await stack.handler.add_tasks([Task(id="s", type="slow", queue_id="q", payload={}, force_store=True)])
    await stack.step("q")
    await releaser
    assert stack.storage.snapshot()["s"].status is TaskStatus.EXECUTED


def test_metrics_and_options() -> None:
    manager = AsyncTaskManager(4)
    m = manager.get_metrics()
    assert (m.max_tasks, m.utilization_percent, m.oldest_task_ms) == (4, 0.0, 0.0)
    assert AsyncTaskManager(0).get_metrics().utilization_percent == 0.0
    with pytest.raises(ConfigurationError):
        AsyncTaskManagerOptions(max_tasks=-1)
    manager.total_rejected = 3
    manager.reset_counters()
    assert manager.get_metrics().total_rejected == 0


async def test_the_sweeper_runs_on_the_clock() -> None:
    stack = InMemoryStack.create()
    manager = AsyncTaskManager(AsyncTaskManagerOptions(sweep_interval=1.0, default_max_duration=0.5),
                               clock=stack.clock)
    stack = InMemoryStack.create(stack.registry, clock=stack.clock, async_manager=manager)
    Slow(stack)
    await stack.handler.add_tasks([Task(id="s", type="slow", queue_id="q", payload={}, force_store=True)])
    await stack.step("q")
    assert manager.is_handed_off("s")
    await asyncio.wait_for(stack.clock.wait_for_sleepers(1), 5)
    await stack.clock.advance(1.0)
    await manager.wait_idle()
    assert not manager.is_handed_off("s") and manager.get_metrics().total_timed_out == 1


async def test_a_handed_off_task_is_retried_with_its_payload_exactly_as_sent() -> None:
    from pydantic import BaseModel, Field, SecretStr

    from tq_cloud.asynctasks.manager import AsyncTaskManager
    from tq_cloud.testing import InMemoryStack

    class Mail(BaseModel):
        address: str = Field(alias="emailAddress")
        token: SecretStr

    manager = AsyncTaskManager()
    stack = InMemoryStack.create(async_manager=manager)
    release = asyncio.Event()
    attempts: list[str] = []

    @stack.registry.task("q", "mail", retries=1, store_on_failure=True, handoff_timeout=0.01, payload_model=Mail)
    async def send(task: Task[Mail], actions: ExecutorActions) -> None:
        attempts.append(task.payload.token.get_secret_value())
        if len(attempts) == 1:
            await release.wait()
            actions.fail(task, "smtp down")
        else:
            actions.success(task)

    sent = {"emailAddress": "a@b.c", "token": "s3cret"}
    [added] = await stack.handler.add_tasks([Task(type="mail", queue_id="q", payload=sent, force_store=True)])
    await stack.process_ready()
    release.set()
    await manager.wait_idle()
    assert stack.storage.snapshot()[added.key].payload == sent, "aliases kept, secrets not masked"
    await stack.run_until_idle()
    assert attempts == ["s3cret", "s3cret"] and stack.storage.snapshot()[added.key].status is TaskStatus.EXECUTED


async def test_a_handed_off_task_keeps_its_lease_when_its_batch_is_handed_back() -> None:
    """The batch's commit fails after the slow task was handed off: the batch goes back, but the
    slow task still runs, so its redelivered record must not run beside it."""
    stack, manager = make()
    slow = Slow(stack)

    @stack.registry.task("q", "fast")
    async def fast(task: Task, actions: ExecutorActions) -> None:
        actions.success(task)

    await stack.handler.add_tasks([Task(id="s", type="slow", queue_id="q", payload={}, force_store=True),
                                   Task(id="f", type="fast", queue_id="q", payload={}, force_store=True)])
    records = await stack.queue.receive("q", 10)
    stack.storage.fail_next_writes = 20  # the batch's commit (f's executed row) fails
    report = await stack.handler.process_batch(records, "first", timedelta(minutes=5))
    assert report.not_committed and manager.is_handed_off("s")
    stack.storage.fail_next_writes = 0
    other = TaskHandler(queue=stack.queue, registry=stack.registry, storage=stack.storage, clock=stack.clock,
                        locks=InMemoryLockProvider(stack.clock),  # another container: its own claims
                        async_manager=AsyncTaskManager(AsyncTaskManagerOptions(max_tasks=10, sweep_interval=0),
                                                       clock=stack.clock))
    again = await other.process_batch(records, "second", timedelta(minutes=5))
    assert again.not_committed == []
    assert stack.storage.snapshot()["s"].execution_stats.deferrals == 1, "the redelivery waited for the live run"
    slow.release.set()
    await manager.wait_idle()
    assert stack.storage.snapshot()["s"].status is TaskStatus.EXECUTED


async def test_the_handed_off_lease_check_fails_when_every_lease_is_released(monkeypatch: pytest.MonkeyPatch) -> None:
    from tq_cloud.backends.memory import InMemoryAdapter
    from tq_cloud.core.runner import TaskRunner

    async def release_every_lease(self: TaskRunner, tasks: list[Task], owner: str) -> None:
        storage = self.storage._inner  # type: ignore[union-attr]
        assert isinstance(storage, InMemoryAdapter)
        await storage.release_leases([Task(id=k, type="t", queue_id="q", payload={}) for k, (holder, _)
                                      in list(storage._leases.items()) if holder == owner], owner)

    monkeypatch.setattr(TaskRunner, "release_leases", release_every_lease)
    with pytest.raises(AssertionError, match="waited for the live run"):
        await test_a_handed_off_task_keeps_its_lease_when_its_batch_is_handed_back()
