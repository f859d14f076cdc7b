"""Over time and across deploys: stale recovery never re-sends work that is running."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from tq_cloud import ExecutorActions, Task, TaskHandler, TaskStatus
from tq_cloud.backends.memory import InMemoryLockProvider, InMemoryQueue
from tq_cloud.clock import ManualClock
from tq_cloud.testing import InMemoryStack


class InvocationCrashed(Exception):
    pass


async def test_a_task_that_queued_29_minutes_is_not_recovered_two_minutes_into_its_run() -> None:
    stack = InMemoryStack.create()
    runs: list[str] = []
    recovered: list[int] = []

    @stack.registry.task("q", "long")
    async def long(task: Task, actions: ExecutorActions) -> None:
        runs.append(task.key)
        await stack.clock.advance(120)  # two minutes into the run, the sweeper comes by
        now = stack.clock.now()
        recovered.append(await stack.storage.recover_stale(now - stack.handler.settings.stale_after, now))
        actions.success(task)

    [added] = await stack.handler.add_tasks([Task(type="long", queue_id="q", payload={}, force_store=True)])
    await stack.clock.advance(29 * 60)  # the record waited in a backed-up shard
    await stack.run_until_idle()
    assert recovered == [0], "the run's lease counts from its start, not from when the record was queued"
    assert runs == [added.key] and stack.storage.snapshot()[added.key].status is TaskStatus.EXECUTED


async def test_a_duplicate_record_of_a_running_task_in_another_container_waits_for_the_run() -> None:
    stack = InMemoryStack.create()
    other = TaskHandler(queue=stack.queue, registry=stack.registry, storage=stack.storage, clock=stack.clock,
                        locks=InMemoryLockProvider(stack.clock))  # its own claims, as another container
    runs: list[str] = []

    @stack.registry.task("q", "t")
    async def t(task: Task, actions: ExecutorActions) -> None:
        runs.append(task.key)
        if len(runs) == 1:  # while this run holds its lease, a copy of the record arrives elsewhere
            report = await other.process_batch([task.model_copy()], "other-container")
            assert report.not_committed == []
        actions.success(task)

    [added] = await stack.handler.add_tasks([Task(type="t", queue_id="q", payload={}, force_store=True)])
    await stack.run_until_idle()
    await stack.clock.advance(3600)
    await stack.run_until_idle()
    assert runs == [added.key], "the copy was deferred past the run, which committed: it never ran"


def _producer(stack: InMemoryStack, clock: ManualClock, queue: object | None = None) -> TaskHandler:
    """A producer with a clock of its own, sharing the deployment's store and stream."""
    return TaskHandler(queue=queue or stack.queue, registry=stack.registry, storage=stack.storage, clock=clock,
                       locks=InMemoryLockProvider(clock))


async def test_a_producer_far_behind_does_not_get_its_tasks_recovered_at_once() -> None:
    """A force_store row carries no producer time: the sweeper stamps it on first sight, on its
    own clock. With the producer's clock in the row (the bug, reintroduced), a producer two hours
    behind has its task recovered by the first sweep and sent a second time."""
    stack = InMemoryStack.create()
    stack.registry.task("q", "t")(_succeed)
    behind = _producer(stack, ManualClock(stack.clock.now() - timedelta(hours=2)))
    [added] = await behind.add_tasks([Task(type="t", queue_id="q", payload={}, force_store=True)])
    sent = await stack.handler.process_mature_tasks()
    assert sent == 0 and stack.queue.depth("q") == 1, "the sweeper sent the task again"
    await stack.run_until_idle()
    assert stack.storage.snapshot()[added.key].status is TaskStatus.EXECUTED


async def test_the_check_sees_a_producer_stamp(monkeypatch: pytest.MonkeyPatch) -> None:
    from tq_cloud.core import routing

    monkeypatch.setattr(routing, "NOT_STAMPED", datetime(2025, 12, 31, 22, tzinfo=UTC))  # the producer's clock
    with pytest.raises(AssertionError, match="sent the task again"):
        await test_a_producer_far_behind_does_not_get_its_tasks_recovered_at_once()


async def test_a_row_whose_send_was_lost_is_recovered_a_stale_period_after_a_sweeper_saw_it() -> None:
    stack = InMemoryStack.create()
    stack.registry.task("q", "t")(_succeed)

    class Lost(InMemoryQueue):
        async def publish(self, tasks: Sequence[Task]) -> None:
            raise InvocationCrashed("the producer died between the row and the record")

    producer = _producer(stack, ManualClock(stack.clock.now() + timedelta(hours=2)), Lost(stack.clock))
    with pytest.raises(InvocationCrashed):
        await producer.add_tasks([Task(id="lost", type="t", queue_id="q", payload={}, force_store=True)])
    stack.storage._rows["lost"] = stack.storage._rows["lost"].model_copy(
        update={"status": TaskStatus.PROCESSING})  # and its reset never happened
    stale_after = stack.handler.settings.stale_after
    assert await stack.handler.process_mature_tasks() == 0 and stack.queue.depth("q") == 0
    assert stack.storage.snapshot()["lost"].processing_started_at == stack.clock.now(), "stamped by the sweeper"
    await stack.clock.advance(stale_after.total_seconds() + 1)
    await stack.handler.process_mature_tasks()
    await stack.run_until_idle()
    assert stack.storage.snapshot()["lost"].status is TaskStatus.EXECUTED


async def _succeed(task: Task, actions: ExecutorActions) -> None:
    actions.success(task)
