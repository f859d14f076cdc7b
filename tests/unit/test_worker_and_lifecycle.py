"""Consumption loops, graceful shutdown, stale recovery and lifecycle events."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest

from tests.helpers import EventLog
from tq_cloud import (
    ExecutorActions,
    HandlerSettings,
    LifecycleConfig,
    SystemClock,
    Task,
    TaskHandler,
    TaskLifecycleProvider,
    TaskStatus,
)
from tq_cloud.backends.memory import InMemoryAdapter, InMemoryLockProvider, InMemoryQueue
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.domain.events import TaskCompleted
from tq_cloud.testing import InMemoryStack


def live_handler(registry: TaskQueuesManager, **kw: object) -> tuple[TaskHandler, InMemoryQueue]:
    clock = SystemClock()
    queue = InMemoryQueue(clock)
    handler = TaskHandler(queue=queue, registry=registry, storage=InMemoryAdapter(),
                          locks=InMemoryLockProvider(clock), clock=clock,
                          settings=HandlerSettings(poll_interval=0.01), **kw)  # type: ignore[arg-type]
    return handler, queue


async def test_start_consuming_processes_until_stopped(registry: TaskQueuesManager) -> None:
    done = asyncio.Event()
    seen: list[int] = []

    @registry.task("q", "t")
    async def ex(task: Task, actions: ExecutorActions) -> None:
        seen.append(task.payload)
        actions.success(task)
        if len(seen) == 3:
            done.set()

    handler, queue = live_handler(registry)
    stop = asyncio.Event()
    consumer = asyncio.create_task(handler.start_consuming("q", stop))
    await handler.add_tasks([Task(type="t", queue_id="q", payload=i) for i in range(3)], allow_unknown=True)
    await asyncio.wait_for(done.wait(), 5)
    stop.set()
    await asyncio.wait_for(consumer, 5)
    assert sorted(seen) == [0, 1, 2] and queue.depth() == 0


async def test_graceful_stop_finishes_the_batch_in_hand(registry: TaskQueuesManager) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[int] = []

    @registry.task("q", "t")
    async def slow(task: Task, actions: ExecutorActions) -> None:
        started.set()
        await release.wait()
        finished.append(task.payload)
        actions.success(task)

    handler, queue = live_handler(registry)
    stop = asyncio.Event()
    await handler.add_tasks([Task(type="t", queue_id="q", payload=i) for i in range(2)], allow_unknown=True)
    consumer = asyncio.create_task(handler.start_consuming("q", stop))
    await asyncio.wait_for(started.wait(), 5)
    stop.set()
    release.set()
    await asyncio.wait_for(consumer, 5)
    assert finished == [0, 1] and queue.depth() == 0


async def test_cancelled_consumer_returns_its_batch_to_the_queue(registry: TaskQueuesManager) -> None:
    started = asyncio.Event()

    @registry.task("q", "t")
    async def hangs(task: Task, actions: ExecutorActions) -> None:
        started.set()
        await asyncio.Event().wait()

    handler, queue = live_handler(registry)
    await handler.add_tasks([Task(type="t", queue_id="q", payload=i) for i in range(3)], allow_unknown=True)
    consumer = asyncio.create_task(handler.start_consuming("q", asyncio.Event()))
    await asyncio.wait_for(started.wait(), 5)
    consumer.cancel()
    await asyncio.gather(consumer, return_exceptions=True)
    assert queue.depth("q") == 3, "nothing received is lost"


async def test_task_process_server_emits_worker_events_and_stops(registry: TaskQueuesManager) -> None:
    events = EventLog()
    done = asyncio.Event()

    @registry.task("a", "t")
    async def ex(task: Task, actions: ExecutorActions) -> None:
        actions.success(task)
        done.set()

    handler, _ = live_handler(registry, worker_lifecycle=events, task_lifecycle=events,
                              lifecycle_config=LifecycleConfig(mode="sync", heartbeat_interval=0.01))
    stop = asyncio.Event()
    server = asyncio.create_task(handler.task_process_server(stop))
    await events.seen("on_worker_started")
    await handler.add_tasks([Task(type="t", queue_id="a", payload=None)], allow_unknown=True)
    await asyncio.wait_for(done.wait(), 5)
    await events.seen("on_batch_completed")
    events._signals["on_worker_heartbeat"].clear()
    await events.seen("on_worker_heartbeat")
    stop.set()
    await asyncio.wait_for(server, 5)
    hooks = [h for h, _ in events.events]
    assert hooks[0] == "on_worker_started" and hooks[-1] == "on_worker_stopped"
    for hook in ("on_consumer_started", "on_batch_started", "on_task_started", "on_task_completed",
                 "on_batch_completed", "on_consumer_stopped"):
        assert hook in hooks
    beat = events.of("on_worker_heartbeat")[-1]
    assert beat.stats.tasks_processed == 1 and beat.memory_usage_mb > 0
    [stopped] = events.of("on_worker_stopped")
    assert stopped.reason == "shutdown" and stopped.final_stats.tasks_succeeded == 1
    assert events.of("on_worker_started")[0].enabled_queues == ("a",)


async def test_stale_processing_rows_are_recovered(stack: InMemoryStack) -> None:
    @stack.registry.task("q", "t")
    async def ok(task: Task, actions: ExecutorActions) -> None:
        actions.success(task)

    await stack.handler.add_tasks([Task(id="lost", type="t", queue_id="q", payload={}, force_store=True)], allow_unknown=True)
    await stack.queue.receive("q", 10)  # the worker that took it died
    await stack.clock.advance(29 * 60)
    assert await stack.handler.process_mature_tasks() == 0  # the sweeper stamps the row on first sight
    await stack.clock.advance(29 * 60)
    assert await stack.handler.process_mature_tasks() == 0
    await stack.clock.advance(2 * 60)
    assert await stack.handler.process_mature_tasks() == 1, "30 minutes after the sweeper first saw it"
    await stack.run_until_idle()
    assert stack.storage.snapshot()["lost"].status is TaskStatus.EXECUTED


class Exploding(TaskLifecycleProvider):
    def on_task_started(self, event: object) -> None:
        raise RuntimeError("listener bug")

    async def on_task_completed(self, event: object) -> None:
        raise RuntimeError("async listener bug")


async def test_listener_errors_never_break_processing() -> None:
    for mode in ("sync", "async"):
        stack = InMemoryStack.create(task_lifecycle=Exploding(),
                                     lifecycle_config=LifecycleConfig(mode=mode))  # type: ignore[arg-type]

        @stack.registry.task("q", "t", store_on_failure=True)
        async def ok(task: Task, actions: ExecutorActions) -> None:
            actions.success(task)

        await stack.handler.add_tasks([Task(id="x", type="t", queue_id="q", payload={}, force_store=True)], allow_unknown=True)
        await stack.run_until_idle()
        await stack.handler.lifecycle.drain()
        assert stack.storage.snapshot()["x"].status is TaskStatus.EXECUTED


async def test_sync_mode_awaits_listeners_and_async_mode_does_not() -> None:
    gate = asyncio.Event()
    seen: list[str] = []

    class Slow(TaskLifecycleProvider):
        async def on_task_completed(self, event: TaskCompleted) -> None:
            await gate.wait()
            seen.append(event.task_id)

    for mode, expected_before in (("async", []), ("sync", ["s"])):
        seen.clear()
        gate.clear()
        stack = InMemoryStack.create(task_lifecycle=Slow(),
                                     lifecycle_config=LifecycleConfig(mode=mode))  # type: ignore[arg-type]

        @stack.registry.task("q", "t")
        async def ok(task: Task, actions: ExecutorActions) -> None:
            actions.success(task)

        if mode == "sync":
            gate.set()
        await stack.handler.process_batch([Task(id="s", type="t", queue_id="q", payload={})])
        assert seen == expected_before
        gate.set()
        await stack.handler.lifecycle.drain()
        assert seen == ["s"]


async def test_task_events_carry_context_and_payload_only_when_asked() -> None:
    for include in (False, True):
        events = EventLog()
        stack = InMemoryStack.create(task_lifecycle=events, lifecycle_config=LifecycleConfig(
            mode="sync", include_payload=include))

        @stack.registry.task("q", "t", retries=4)
        async def ok(task: Task, actions: ExecutorActions) -> None:
            actions.success(task, "r")

        await stack.handler.add_tasks([Task(type="t", queue_id="q", payload={"secret": 1})], allow_unknown=True)
        await stack.clock.advance(3)
        await stack.run_until_idle()
        [scheduled] = events.of("on_task_scheduled")
        [started] = events.of("on_task_started")
        [completed] = events.of("on_task_completed")
        assert started.queued_duration_ms == 3000 and started.max_retries == 4 and started.attempt == 1
        assert completed.result == "r" and completed.timing.total_duration_ms == 3000
        assert scheduled.payload == ({"secret": 1} if include else {})
        assert completed.consumer_id == "memory:q"


async def test_stale_after_guards_running_tasks(stack: InMemoryStack) -> None:
    assert stack.handler.settings.stale_after >= stack.handler.settings.lock_ttl
    assert stack.handler.settings.stale_after == timedelta(minutes=30)


async def test_console_health_provider_logs_every_event(caplog: pytest.LogCaptureFixture) -> None:
    from tq_cloud import ConsoleHealthProvider

    provider = ConsoleHealthProvider()
    stack = InMemoryStack.create(task_lifecycle=provider, worker_lifecycle=provider,
                                 lifecycle_config=LifecycleConfig(mode="sync"))

    @stack.registry.task("q", "t", retries=1)
    async def flaky(task: Task, actions: ExecutorActions) -> None:
        actions.fail(task, "x")

    with caplog.at_level(logging.DEBUG, logger="tq_cloud.health"):
        await stack.handler.add_tasks([Task(type="t", queue_id="q", payload={})], allow_unknown=True)
        await stack.run_until_idle()
    text = caplog.text
    for word in ("scheduled t", "started t", "failed t", "will_retry=True", "exhausted t", "batch of 1"):
        assert word in text
