"""Recurring schedules in memory: declaration errors, occurrences as EventBridge Scheduler
computes them (across daylight-saving changes), each occurrence run once whatever fires it
(duplicate, late, or the sweeper catching up a lost firing), overlap, pause. The safety checks
are shown to fail with their bugs put back."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from tq_cloud import ExecutorActions, ManualClock, Task, TaskStatus
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.errors import ConfigurationError, InvalidPayloadError, UnknownTaskTypeError
from tq_cloud.schedules import firing as firing_module
from tq_cloud.schedules.firing import firing, occurrence_id
from tq_cloud.testing import InMemoryStack

START = datetime(2026, 3, 27, 0, 0, tzinfo=UTC)


class Report(BaseModel):
    kind: str


def app_with(runs: list[Task], **options: Any) -> tuple[TaskQueuesManager, Any]:
    app = TaskQueuesManager()

    @app.task("ops", "report", **options)
    async def report(task: Task[Report], actions: ExecutorActions) -> None:
        runs.append(task)

    return app, report


def test_what_eventbridge_cannot_express_is_refused_at_declaration() -> None:
    app, report = app_with([])
    bad: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({}, ConfigurationError, "exactly one"),
        ({"cron": "0 2 * * *", "every": timedelta(hours=1)}, ConfigurationError, "exactly one"),
        ({"cron": "0 2 * * * *"}, ConfigurationError, "five cron fields"),
        ({"cron": "61 2 * * *"}, ConfigurationError, "five cron fields"),
        ({"cron": "0 2 1 * 1"}, ConfigurationError, "both the day of the month and the day of the week"),
        ({"cron": "0 2 * * */2"}, ConfigurationError, "no step"),
        ({"every": timedelta(seconds=30)}, ConfigurationError, "whole minutes"),
        ({"every": timedelta(seconds=90)}, ConfigurationError, "whole minutes"),
        ({"cron": "0 2 * * *", "timezone": "Mars/Olympus"}, ConfigurationError, "no IANA time zone"),
        ({"cron": "0 2 * * *", "payload": {"kind": 3}}, InvalidPayloadError, "kind"),
    ]
    for options, error, words in bad:
        with pytest.raises(error, match=words):
            app.schedule("s", task=report, **{"payload": {"kind": "daily"}, **options})
    with pytest.raises(UnknownTaskTypeError):
        app.schedule("s", task=("ops", "reprot"), cron="0 2 * * *")
    with pytest.raises(ConfigurationError, match="1 to 48"):
        app.schedule("no spaces", task=report, cron="0 2 * * *", payload={"kind": "x"})
    app.schedule("s", task=report, cron="0 2 * * *", payload={"kind": "daily"})
    with pytest.raises(ConfigurationError, match="declared already"):
        app.schedule("s", task=report, cron="0 3 * * *", payload={"kind": "daily"})
    assert app.schedules["s"].expression == "cron(0 2 * * ? *)"
    assert app.schedule("w", task=report, cron="30 9 * * mon-fri", payload={"kind": "x"}).expression == \
        "cron(30 9 ? * 2-6 *)"
    assert app.schedule("r", task=report, every=timedelta(hours=2), payload={"kind": "x"}).expression == \
        "rate(2 hours)"


async def test_each_occurrence_runs_once_at_its_time_in_order() -> None:
    runs: list[Task] = []
    app, report = app_with(runs)
    app.schedule("hourly", task=report, every=timedelta(hours=1), payload={"kind": "hourly"})
    stack = InMemoryStack.create(app, clock=ManualClock(START))
    await stack.run_until(START + timedelta(days=1))
    times = [t.metadata.schedule.scheduled_at for t in runs if t.metadata.schedule]
    assert times == [START + timedelta(hours=h) for h in range(1, 25)]
    assert all(t.payload.kind == "hourly" for t in runs)
    assert stack.clock.now() == START + timedelta(days=1)
    await stack.run_until_idle()
    assert len(runs) == 24, "run_until_idle fired a future occurrence"


async def test_duplicate_and_late_firings_run_each_occurrence_once() -> None:
    runs: list[Task] = []
    app, report = app_with(runs)
    schedule = app.schedule("every5", task=report, every=timedelta(minutes=5), payload={"kind": "x"})
    stack = InMemoryStack.create(app, clock=ManualClock(START))
    await stack.run_until(START + timedelta(minutes=10))
    first = START + timedelta(minutes=5)
    await stack.queue.publish([firing(schedule, first), firing(schedule, first)])  # duplicates, late
    await stack.run_until(START + timedelta(minutes=20))
    counts = Counter(t.metadata.schedule.scheduled_at for t in runs if t.metadata.schedule)
    assert counts == {START + timedelta(minutes=m): 1 for m in range(5, 25, 5)}, counts


async def test_an_occurrence_whose_firing_is_lost_is_caught_up_once() -> None:
    runs: list[Task] = []
    app, report = app_with(runs)
    app.schedule("every5", task=report, every=timedelta(minutes=5), payload={"kind": "x"})
    stack = InMemoryStack.create(app, clock=ManualClock(START))
    await stack.run_until(START + timedelta(minutes=10))
    stack.fired_until = START + timedelta(minutes=20)  # the firings of 15 and 20 are lost
    await stack.run_until(START + timedelta(minutes=40))
    counts = Counter(t.metadata.schedule.scheduled_at for t in runs if t.metadata.schedule)
    assert counts == {START + timedelta(minutes=m): 1 for m in range(5, 45, 5)}, counts


async def test_mutation_an_occurrence_without_a_derived_id_runs_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bug put back: each firing makes a task of its own (a fresh id)."""
    import itertools

    fresh, made = itertools.count(), firing_module.occurrence

    def occurrence(schedule: Any, at: datetime, now: datetime) -> Task:
        return made(schedule, at, now).model_copy(update={"id": f"{schedule.name}-{next(fresh)}"})

    async def nothing(*args: Any) -> list[Task]:
        return []

    monkeypatch.setattr(firing_module, "occurrence", occurrence)
    monkeypatch.setattr("tq_cloud.assembly.handler.catch_up", nothing)  # it would look for the rows by their ids
    with pytest.raises(AssertionError):
        await test_duplicate_and_late_firings_run_each_occurrence_once()


async def test_mutation_no_catch_up_loses_occurrences(monkeypatch: pytest.MonkeyPatch) -> None:
    async def nothing(*args: Any) -> list[Task]:
        return []

    monkeypatch.setattr("tq_cloud.assembly.handler.catch_up", nothing)
    with pytest.raises(AssertionError):
        await test_an_occurrence_whose_firing_is_lost_is_caught_up_once()


async def test_cron_follows_the_zone_across_daylight_saving() -> None:
    """Paris skips 02:30 on 2026-03-29 (spring forward): that day has no occurrence, as on
    EventBridge Scheduler; the others are at 02:30 local, an hour apart in UTC across the change."""
    runs: list[Task] = []
    app, report = app_with(runs)
    app.schedule("night", task=report, cron="30 2 * * *", timezone="Europe/Paris", payload={"kind": "n"})
    stack = InMemoryStack.create(app, clock=ManualClock(START))
    await stack.run_until(START + timedelta(days=4))
    assert [t.metadata.schedule.scheduled_at for t in runs if t.metadata.schedule] == [
        datetime(2026, 3, 27, 1, 30, tzinfo=UTC), datetime(2026, 3, 28, 1, 30, tzinfo=UTC),
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC)]


async def test_overlap_skip_records_the_skipped_occurrence() -> None:
    runs: list[Task] = []
    app = TaskQueuesManager()

    @app.task("ops", "slow")
    async def slow(task: Task, actions: ExecutorActions) -> None:
        runs.append(task)
        if len(runs) == 1:
            actions.defer(task, 90 * 60, "still working")  # not finished when the next one fires

    app.schedule("hourly", task=slow, every=timedelta(hours=1), overlap="skip")
    stack = InMemoryStack.create(app, clock=ManualClock(START))
    await stack.run_until(START + timedelta(hours=4))
    second = await stack.handler.find(occurrence_id("hourly", START + timedelta(hours=2)))
    assert second is not None and second.status is TaskStatus.CANCELLED
    assert (second.execution_stats.cancel_reason or "").startswith("skipped:")
    ran = [t.metadata.schedule.scheduled_at for t in runs if t.metadata.schedule]
    assert START + timedelta(hours=2) not in ran and START + timedelta(hours=3) in ran


async def test_a_paused_schedule_runs_nothing_and_resumes_from_now() -> None:
    runs: list[Task] = []
    app, report = app_with(runs)
    app.schedule("hourly", task=report, every=timedelta(hours=1), payload={"kind": "x"})
    stack = InMemoryStack.create(app, clock=ManualClock(START))
    await stack.handler.pause_schedule("hourly")
    await stack.run_until(START + timedelta(hours=3))
    assert runs == []
    await stack.handler.pause_schedule("hourly", paused=False)
    await stack.run_until(START + timedelta(hours=5, minutes=30))
    assert [t.metadata.schedule.scheduled_at for t in runs if t.metadata.schedule] == [
        START + timedelta(hours=4), START + timedelta(hours=5)], "an occurrence of the pause was caught up"
    with pytest.raises(KeyError):
        await stack.handler.pause_schedule("nope")
