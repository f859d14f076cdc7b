"""From a firing to an occurrence, once.

A firing is a record of type SCHEDULE_FIRE_TYPE naming a schedule and the time it fires for:
EventBridge Scheduler puts it on the stream itself (its Kinesis target, with
`<aws.scheduler.scheduled-time>` in the input), the local runtime and the in-memory stack do
the same, and the sweeper puts one for an occurrence that no firing reached (`catch_up`). The
worker turns it into the occurrence's task, stored with an id derived from the schedule's name
and the occurrence's time (set-if-absent): a duplicate, late or caught-up firing of the same
occurrence finds the row and sends nothing, so each occurrence runs once. With
`overlap="skip"`, an occurrence whose predecessor's row is not final is recorded as cancelled
("skipped: ...") instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import TYPE_CHECKING, Any

from tq_cloud.domain.schedules import SCHEDULE_FIRE_TYPE, Schedule
from tq_cloud.domain.task import ScheduleMeta, Task, TaskMetadata, TaskStatus
from tq_cloud.ids import derived_id

if TYPE_CHECKING:
    from tq_cloud.clock import Clock
    from tq_cloud.core.actions import ExecutorActions
    from tq_cloud.core.executors import Executor
    from tq_cloud.ports.storage import TaskStorage

log = logging.getLogger("tq_cloud.schedules")

CATCH_UP_GRACE = timedelta(minutes=5)
"""An occurrence no firing reached this long after its time is fired by the sweeper (EventBridge
retries a failed delivery meanwhile; either way the occurrence runs once)."""
CATCH_UP_WINDOW = timedelta(minutes=30)
"""How far back each sweep looks for occurrences no firing reached (many sweeps see each one)."""
MAX_CATCH_UP = 50
FIRING_RETRIES = 5
"""A firing that meets a transient failure (the store throttled) is retried, like any task."""
"""At most this many occurrences of one schedule fired by one sweep."""


def occurrence_id(name: str, at: datetime) -> str:
    return derived_id("schedule", name, at.astimezone(UTC).isoformat())


def firing(schedule: Schedule, at: datetime) -> Task:
    """The record a firing of `schedule` for `at` puts on the stream."""
    return Task(id=derived_id("fire", schedule.name, at.astimezone(UTC).isoformat()), type=SCHEDULE_FIRE_TYPE,
                queue_id=schedule.queue_id, payload={"schedule": schedule.name, "at": _iso(at)},
                partition_key=schedule.name, retries=FIRING_RETRIES)


def firing_input(schedule: Schedule) -> str:
    """The input of the EventBridge Scheduler target: a firing record, its time templated."""
    return json.dumps({"type": SCHEDULE_FIRE_TYPE, "queue_id": schedule.queue_id, "retries": FIRING_RETRIES,
                       "payload": {"schedule": schedule.name, "at": "<aws.scheduler.scheduled-time>"}})


def occurrence(schedule: Schedule, at: datetime, now: datetime) -> Task:
    return Task(id=occurrence_id(schedule.name, at), type=schedule.task_type, queue_id=schedule.queue_id,
                payload=schedule.payload, execute_at=at, created_at=min(at, now), force_store=True,
                metadata=TaskMetadata(schedule=ScheduleMeta(name=schedule.name, scheduled_at=at)))


def pause_key(name: str) -> str:
    return f"schedule:{name}"


@dataclass(frozen=True)
class ScheduleState:
    """A schedule's mark: when the engine first saw it, and its last pause (an occurrence due
    during a pause does not run; one due before it does, however late its firing comes)."""

    seen: datetime
    paused_from: datetime | None = None
    paused_until: datetime | None = None
    """The end of the last pause; None while it lasts."""

    def runs(self, at: datetime) -> bool:
        return self.paused_from is None or at < self.paused_from or (
            self.paused_until is not None and at >= self.paused_until)

    @property
    def paused(self) -> bool:
        return self.paused_from is not None and self.paused_until is None

    def dump(self) -> str:
        return json.dumps({k: v.isoformat() if v else None for k, v in
                           (("seen", self.seen), ("paused_from", self.paused_from),
                            ("paused_until", self.paused_until))})

    @classmethod
    def load(cls, mark: str) -> ScheduleState:
        values = {k: datetime.fromisoformat(v) if v else None for k, v in json.loads(mark).items()}
        seen = values.pop("seen")
        assert seen is not None
        return cls(seen, **values)


def paused_mark(mark: str | None, paused: bool, now: datetime) -> str:
    """The mark after pausing (or resuming) at `now`."""
    state = ScheduleState.load(mark) if mark else ScheduleState(seen=now)
    if paused:
        return ScheduleState(state.seen, state.paused_from if state.paused else now).dump()
    return ScheduleState(state.seen, state.paused_from, now if state.paused else state.paused_until).dump()


async def fire(schedules: dict[str, Schedule], storage: TaskStorage, task: Task, actions: ExecutorActions,
               now: datetime) -> None:
    """The worker's part of a firing (a builtin executor of SCHEDULE_FIRE_TYPE)."""
    name, at_text = str(task.payload.get("schedule")), str(task.payload.get("at"))
    schedule = schedules.get(name)
    if schedule is None:
        actions.fail(task, f"no schedule {name!r} is declared in this app (removed, and still deployed until the "
                     "sweeper syncs the schedules)", retry=False)
        return
    try:
        at = schedule.occurrence_at(datetime.fromisoformat(at_text.replace("Z", "+00:00")))
    except ValueError:
        actions.fail(task, f"schedule {name!r} fired with a time that is not one: {at_text!r}", retry=False)
        return
    mark = (await storage.get_marks([pause_key(name)])).get(pause_key(name))
    if mark is not None and not ScheduleState.load(mark).runs(at):
        actions.success(task, {"occurrence": at.isoformat(), "paused": True})
        return
    previous = schedule.previous(at) if schedule.overlap == "skip" else None
    if previous is not None:
        rows = await storage.get([occurrence_id(name, previous)])
        if rows and not rows[0].status.is_terminal:
            skipped = occurrence(schedule, at, now)
            reason = f"skipped: the occurrence of {previous.isoformat()} had not finished (overlap='skip')"
            await storage.insert([skipped.model_copy(update={
                "status": TaskStatus.CANCELLED, "updated_at": now,
                "execution_stats": skipped.execution_stats.model_copy(update={"cancel_reason": reason})})])
            actions.success(task, {"occurrence": at.isoformat(), "skipped": True})
            return
    actions.add_tasks([occurrence(schedule, at, now)])
    actions.success(task, {"occurrence": at.isoformat()})


def schedule_executors(schedules: dict[str, Schedule], storage: TaskStorage | None,
                       clock: Clock) -> dict[str, Executor]:
    """The firing's executor, plugged into the runner by the assembly (firing needs the store)."""
    from tq_cloud.core.executors import SingleTaskExecutor

    if storage is None:
        return {}

    async def run_firing(task: Task, actions: ExecutorActions) -> None:
        await fire(schedules, storage, task, actions, clock.now())

    return {SCHEDULE_FIRE_TYPE: SingleTaskExecutor(fn=run_firing)}


async def catch_up(schedules: Sequence[Schedule], storage: TaskStorage, now: datetime) -> list[Task]:
    """Firings for the occurrences of the last CATCH_UP_WINDOW (older than CATCH_UP_GRACE) that
    no firing reached: their rows are missing (one batched read per schedule). Only since the
    schedule was first seen (its mark, written then) or resumed: never one from before it existed."""
    if not schedules:
        return []
    marks = await storage.get_marks([pause_key(s.name) for s in schedules])
    firings: list[Task] = []
    for schedule in schedules:
        mark = marks.get(pause_key(schedule.name))
        if mark is None:  # first seen now: nothing before this moment is its to catch up
            await storage.set_mark(pause_key(schedule.name), ScheduleState(seen=now).dump())
            continue
        state = ScheduleState.load(mark)
        start = max(now - CATCH_UP_GRACE - CATCH_UP_WINDOW, state.seen)
        due = [at for at in islice(schedule.occurrences(start, now - CATCH_UP_GRACE), MAX_CATCH_UP) if state.runs(at)]
        if not due:
            continue
        have = {row.key for row in await storage.get([occurrence_id(schedule.name, at) for at in due])}
        firings += [firing(schedule, at) for at in due if occurrence_id(schedule.name, at) not in have]
    if firings:
        log.warning("schedules: %d occurrences no firing reached; fired by the sweeper", len(firings))
    return firings


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(schedule: Schedule) -> dict[str, Any]:
    return {"name": schedule.name, "task": f"{schedule.queue_id}/{schedule.task_type}",
            "expression": schedule.expression, "timezone": schedule.timezone, "overlap": schedule.overlap}
