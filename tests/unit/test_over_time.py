"""Over time and across deploys: stale recovery never re-sends work that is running."""

from __future__ import annotations

from tq_cloud import ExecutorActions, Task, TaskHandler, TaskStatus
from tq_cloud.backends.memory import InMemoryLockProvider
from tq_cloud.testing import InMemoryStack


async def test_a_task_that_queued_29_minutes_is_not_recovered_two_minutes_into_its_run() -> None:
    stack = InMemoryStack.create()
    runs: list[str] = []
    recovered: list[int] = []

    @stack.registry.task("q", "long")
    async def long(task: Task, actions: ExecutorActions) -> None:
        runs.append(task.key)
        await stack.clock.advance(120)  # two minutes into the run, the sweeper comes by
        recovered.append(await stack.storage.recover_stale(stack.clock.now() - stack.handler.settings.stale_after))
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
