"""The app's recurring schedules as EventBridge Scheduler schedules, kept in step with the code.

Each declared schedule is one schedule named `schedule.<name>` in the app's schedule group: its
`cron(...)`/`rate(...)` expression and zone, a Kinesis target on the tasks stream whose input is
a firing record with `<aws.scheduler.scheduled-time>` (no Lambda runs to enqueue), the schedule's
name as partition key, a retry policy (24 hours, 185 attempts: the most the scheduler allows)
and the dead-letter queue. A rate schedule starts on the epoch grid (StartDate), so its
occurrences are the ones every other backend computes.

`sync` makes the group match the code: creates what is missing, updates what differs (keeping a
schedule's paused state), deletes the schedules it deployed before that the code no longer
declares (their names kept in a mark of the tasks table: ListSchedules cannot be granted on the
group alone, and the sweeper is granted nothing on every resource). The sweeper
runs it on its first invocation in each container (a deploy starts new ones) and hourly after:
no custom resource to keep and no deploy step to forget, and drift (a schedule deleted by hand)
is mended within the hour. Why not a CloudFormation custom resource: it needs a Lambda of its
own, and a failure there leaves a stack stuck in UPDATE_ROLLBACK; the sweeper already loads the
app and retries every minute.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tq_cloud.backends.aws.dynamo import error_code
from tq_cloud.domain.schedules import Schedule
from tq_cloud.schedules.firing import firing_input

PREFIX = "schedule."
RETRY_POLICY = {"MaximumEventAgeInSeconds": 86_400, "MaximumRetryAttempts": 185}


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    deployed: list[str] = field(default_factory=list)
    """The names deployed after the sync (what the next sync may have to delete)."""

    def __bool__(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


class ScheduleSync:
    """Example:
        report = await ScheduleSync(clients.scheduler, group=..., stream_arn=..., role_arn=...).sync(
            list(app.schedules.values()), datetime.now(UTC))
    """

    def __init__(self, client: Any, *, group: str, stream_arn: str, role_arn: str, dead_letter_arn: str = "") -> None:
        self.client = client
        self.group = group
        self.stream_arn = stream_arn
        self.role_arn = role_arn
        self.dead_letter_arn = dead_letter_arn

    def desired(self, schedule: Schedule, now: datetime) -> dict[str, Any]:
        target: dict[str, Any] = {"Arn": self.stream_arn, "RoleArn": self.role_arn, "Input": firing_input(schedule),
                                  "KinesisParameters": {"PartitionKey": schedule.name}, "RetryPolicy": RETRY_POLICY}
        if self.dead_letter_arn:
            target["DeadLetterConfig"] = {"Arn": self.dead_letter_arn}
        request: dict[str, Any] = {
            "Name": PREFIX + schedule.name, "GroupName": self.group, "ScheduleExpression": schedule.expression,
            "ScheduleExpressionTimezone": schedule.timezone, "FlexibleTimeWindow": {"Mode": "OFF"},
            "Target": target, "Description": f"tq-cloud schedule {schedule.name}: {schedule.queue_id}/"
                                             f"{schedule.task_type}"}
        if schedule.every is not None:
            request["StartDate"] = next(schedule.occurrences(now, now + schedule.every))
        return request

    async def get(self, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = await self.client.get_schedule(Name=PREFIX + name, GroupName=self.group)
            return found
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return None
            raise

    async def deployed(self) -> dict[str, dict[str, Any]]:
        """The group's `schedule.*` schedules, by declared name (ListSchedules, then GetSchedule of
        each: for operators, whose role may list)."""
        names: list[str] = []
        request: dict[str, Any] = {"GroupName": self.group, "NamePrefix": PREFIX}
        while True:
            response = await self.client.list_schedules(**request)
            names += [s["Name"] for s in response.get("Schedules", []) if s["Name"].startswith(PREFIX)]
            if not response.get("NextToken"):
                break
            request["NextToken"] = response["NextToken"]
        found: dict[str, dict[str, Any]] = {}
        for name in names:
            if (schedule := await self.get(name[len(PREFIX):])) is not None:
                found[name[len(PREFIX):]] = schedule
        return found

    async def sync(self, schedules: Sequence[Schedule], now: datetime, known: Sequence[str] = ()) -> SyncReport:
        """Make the deployed schedules match `schedules`; `known`: the names deployed before."""
        report = SyncReport()
        declared = {s.name: s for s in schedules}
        for name, schedule in declared.items():
            want = self.desired(schedule, now)
            have = await self.get(name)
            if have is None:
                await self.client.create_schedule(**want, State="ENABLED")
                report.created.append(name)
            elif _differs(want, have):  # a rate's StartDate moves to its next grid instant: the same grid
                await self.client.update_schedule(**want, State=have.get("State", "ENABLED"))
                report.updated.append(name)
        for name in sorted(set(known) - set(declared)):
            try:
                await self.client.delete_schedule(Name=PREFIX + name, GroupName=self.group)
            except Exception as exc:
                if error_code(exc) != "ResourceNotFoundException":
                    raise
            report.deleted.append(name)
        report.deployed = sorted(declared)
        return report

    async def set_enabled(self, name: str, enabled: bool) -> bool:
        """Enable or disable the deployed schedule; False if it is not deployed."""
        have = await self.get(name)
        if have is None:
            return False
        keep = {k: have[k] for k in ("ScheduleExpression", "ScheduleExpressionTimezone", "FlexibleTimeWindow",
                                     "Target", "Description", "StartDate") if k in have}
        await self.client.update_schedule(Name=PREFIX + name, GroupName=self.group, **keep,
                                          State="ENABLED" if enabled else "DISABLED")
        return True


def _differs(want: dict[str, Any], have: dict[str, Any]) -> bool:
    keys = ("ScheduleExpression", "ScheduleExpressionTimezone", "Description")
    if any(want.get(k) != have.get(k) for k in keys):
        return True
    target = have.get("Target", {})
    return any(want["Target"].get(k) != target.get(k) for k in ("Arn", "RoleArn", "KinesisParameters",
                                                                 "DeadLetterConfig")) or \
        json.loads(want["Target"]["Input"]) != json.loads(target.get("Input") or "null")
