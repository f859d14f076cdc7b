"""The timer port against the in-memory timer and EventBridge Scheduler (moto, fired by the local
runtime's emulation of the scheduler, as EventBridge fires them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from tests.aws_support import aws_resources
from tq_cloud import Task
from tq_cloud.backends.aws.scheduler import EventBridgeTimer
from tq_cloud.backends.memory import InMemoryQueue, InMemoryTimer
from tq_cloud.clock import ManualClock
from tq_cloud.local.scheduler import EmulatedScheduler


class Delivered:
    def __init__(self, kind: str, clients: Any = None, stream: str = "", queue: Any = None) -> None:
        self.kind, self.clients, self.stream, self.queue = kind, clients, stream, queue

    async def ids(self) -> list[str]:
        if self.kind == "memory":
            return sorted(t.key for t in await self.queue.receive("q", 100))
        from tests.aws.test_kinesis import read_all

        return sorted(Task.model_validate_json(r["Data"]).key for r in await read_all(self.clients.kinesis, self.stream))


class FiredTimer:
    """EventBridgeTimer's schedules, fired as EventBridge Scheduler would (moto never fires them)."""

    def __init__(self, timer: EventBridgeTimer, scheduler: EmulatedScheduler) -> None:
        self.schedule, self.cancel, self.fire_due = timer.schedule, timer.cancel, scheduler.fire_due


@pytest.fixture(params=["memory", "eventbridge"])
async def timer(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[tuple[Any, Delivered]]:
    if request.param == "memory":
        queue = InMemoryQueue(clock)
        yield InMemoryTimer(queue), Delivered("memory", queue=queue)
        return
    settings = request.getfixturevalue("aws_target").settings()
    async with aws_resources(settings) as clients:
        arn = (await clients.kinesis.describe_stream_summary(StreamName=settings.stream_name))[
            "StreamDescriptionSummary"]["StreamARN"]
        timer = EventBridgeTimer(clients.scheduler, group=settings.schedule_group, stream_arn=arn,
                                 role_arn=settings.scheduler_role_arn)
        assert await timer.fire_due(clock.now()) == 0, "EventBridge fires its schedules itself"
        yield FiredTimer(timer, EmulatedScheduler(clients.scheduler, clients.kinesis, settings.schedule_group)), \
            Delivered("eventbridge", clients, settings.stream_name)


async def test_timers_fire_once_when_due_and_cancel(timer: tuple[Any, Delivered], clock: ManualClock) -> None:
    backend, delivered = timer
    soon = Task(id="soon", type="t", queue_id="q", payload={}, execute_at=clock.now() + timedelta(seconds=30))
    later = Task(id="later", type="t", queue_id="q", payload={}, execute_at=clock.now() + timedelta(minutes=5))
    gone = Task(id="gone", type="t", queue_id="q", payload={}, execute_at=clock.now() + timedelta(seconds=10))
    for name, task in (("a", soon), ("a", later), ("b", later), ("c", gone)):
        await backend.schedule(name, task)
    await backend.cancel("c")
    await backend.cancel("never-existed")
    assert await backend.fire_due(clock.now()) == 0
    await clock.advance(30)
    assert await backend.fire_due(clock.now()) == 1, "the first schedule of a name wins"
    assert await backend.fire_due(clock.now()) == 0
    await clock.advance(270)
    assert await backend.fire_due(clock.now()) == 1
    assert await delivered.ids() == ["later", "soon"]


async def test_every_due_timer_fires_however_many_are_pending(timer: tuple[Any, Delivered], clock: ManualClock) -> None:
    """ListSchedules answers a page at a time (2 here, under tests/aws_rules.py; up to 100 on
    AWS): timers past the first page fire too."""
    backend, delivered = timer
    for i in range(7):
        await backend.schedule(f"t{i}", Task(id=f"t{i}", type="t", queue_id="q", payload={},
                                             execute_at=clock.now() + timedelta(seconds=5)))
    await clock.advance(5)
    assert await backend.fire_due(clock.now()) == 7
    assert await delivered.ids() == [f"t{i}" for i in range(7)]


async def test_the_timer_pages_check_fails_with_a_one_page_listing(timer: tuple[Any, Delivered], clock: ManualClock,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    if isinstance(timer[0], InMemoryTimer):
        return  # the in-memory timer has no pages to lose
    async def one_page(client: Any, group: str) -> list[str]:
        return [s["Name"] for s in (await client.list_schedules(GroupName=group)).get("Schedules", [])]

    monkeypatch.setattr("tq_cloud.local.scheduler.schedule_names", one_page)
    with pytest.raises(AssertionError):
        await test_every_due_timer_fires_however_many_are_pending(timer, clock)
