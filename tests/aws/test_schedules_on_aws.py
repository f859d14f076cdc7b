"""Recurring schedules on the AWS backends (moto's server): the sweeper's sync deploys them to
EventBridge Scheduler as the code declares them (and follows changes), the emulated scheduler
fires them onto the stream as EventBridge does, the worker runs each occurrence once (a
duplicate firing included), and a paused schedule fires nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.aws_support import aws_resources, fresh_settings
from tq_cloud import ExecutorActions, ManualClock, Task
from tq_cloud.aws_lambda.sweeper import SweeperHandler
from tq_cloud.backends.aws import build_stack
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.local.poller import KinesisShardPoller
from tq_cloud.local.scheduler import EmulatedScheduler
from tq_cloud.operations import Operations

START = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)


class Deployed:
    def __init__(self, stack: Any, clock: ManualClock, runs: list[Task]) -> None:
        self.stack, self.clock, self.runs = stack, clock, runs
        self.poller = KinesisShardPoller(stack.clients.kinesis, stack.settings.stream_name, stack.handler)
        self.scheduler = EmulatedScheduler(stack.clients.scheduler, stack.clients.kinesis,
                                           stack.settings.schedule_group)
        self.sweeper = SweeperHandler(_Runtime(stack))

    async def minutes(self, n: int) -> None:
        """Let `n` minutes pass, a minute at a time: the scheduler fires, the worker runs, the sweeper sweeps."""
        for _ in range(n):
            await self.clock.advance(60)
            await self.scheduler.fire_due(self.clock.now())
            while await self.poller.poll_once():
                pass
            await self.sweeper.handle()

    def occurrences(self) -> list[datetime]:
        return [t.metadata.schedule.scheduled_at for t in self.runs if t.metadata.schedule]


class _Runtime:
    def __init__(self, stack: Any) -> None:
        self.stack_ = stack

    async def stack(self) -> Any:
        return self.stack_


@pytest.fixture
async def deployed(moto_endpoint: str) -> AsyncIterator[Deployed]:
    runs: list[Task] = []
    app = TaskQueuesManager()

    @app.task("ops", "tick")
    async def tick(task: Task, actions: ExecutorActions) -> None:
        runs.append(task)

    app.schedule("every5", task=tick, every=timedelta(minutes=5))
    app.schedule("paris", task=tick, cron="30 * * * *", timezone="Europe/Paris")
    settings, clock = fresh_settings(moto_endpoint), ManualClock(START)
    async with aws_resources(settings) as clients:
        stack = await build_stack(app, settings, clients, clock=clock)
        world = Deployed(stack, clock, runs)
        await world.sweeper.handle()  # the first sweep deploys the schedules
        await world.scheduler.fire_due(clock.now())  # the emulated scheduler starts looking now
        yield world


async def test_deployed_schedules_fire_each_occurrence_once(deployed: Deployed) -> None:
    have = await deployed.stack.schedules.deployed()
    assert {n: (s["ScheduleExpression"], s["ScheduleExpressionTimezone"]) for n, s in have.items()} == {
        "every5": ("rate(5 minutes)", "UTC"), "paris": ("cron(30 * * * ? *)", "Europe/Paris")}
    target = have["every5"]["Target"]
    assert target["KinesisParameters"] == {"PartitionKey": "every5"} and "<aws.scheduler.scheduled-time>" in \
        target["Input"] and target["RetryPolicy"]["MaximumRetryAttempts"] == 185
    await deployed.minutes(31)
    duplicate = have["every5"]["Target"]["Input"].replace("<aws.scheduler.scheduled-time>", "2026-03-28T23:05:00Z")
    await deployed.stack.clients.kinesis.put_record(StreamName=deployed.stack.settings.stream_name,
                                                    Data=duplicate.encode(), PartitionKey="every5")
    await deployed.minutes(1)
    expected = [START + timedelta(minutes=m) for m in range(5, 35, 5)] + [datetime(2026, 3, 28, 23, 30, tzinfo=UTC)]
    assert sorted(deployed.occurrences()) == sorted(expected), "each occurrence once, the duplicate included"


async def test_a_paused_schedule_fires_nothing_and_the_code_is_followed(deployed: Deployed) -> None:
    ops = Operations.of(deployed.stack)
    assert (await ops.pause_schedule("every5"))["deployed"] is True
    assert (await deployed.stack.schedules.deployed())["every5"]["State"] == "DISABLED"
    await deployed.minutes(11)
    assert deployed.occurrences() == [], "a paused schedule ran"
    views = {v["name"]: v for v in await ops.schedules()}
    assert views["every5"]["paused"] and views["every5"]["deployed"] == "yes"
    registry = deployed.stack.handler.registry
    del registry.schedules["paris"]
    deployed.sweeper.synced_at = None  # a new deploy: a new container
    await deployed.sweeper.handle()
    assert set(await deployed.stack.schedules.deployed()) == {"every5"}, "a schedule dropped from the code stayed"
    assert (await deployed.stack.schedules.deployed())["every5"]["State"] == "DISABLED", "a sync resumed it"
