"""EventBridge Scheduler's firing, emulated: moto stores schedules but never fires them.

For each due `at()` schedule of the group, it does what the scheduler does with a Kinesis
target: PutRecord of the target's Input under the target's PartitionKey, then deletes the
schedule (ActionAfterCompletion DELETE). For each enabled recurring schedule (`cron(...)`,
`rate(...)`, as the sweeper's sync deploys them), it puts the target's Input once per occurrence
since it last looked, `<aws.scheduler.scheduled-time>` replaced by the occurrence's time. The
production code (EventBridgeTimer, ScheduleSync) only creates and deletes schedules; nothing in
it knows about this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from tq_cloud.backends.aws.dynamo import error_code
from tq_cloud.backends.aws.scheduler import schedule_names
from tq_cloud.domain.schedules import Schedule


class EmulatedScheduler:
    """Example:
        scheduler = EmulatedScheduler(clients.scheduler, clients.kinesis, settings.schedule_group)
        fired = await scheduler.fire_due(datetime.now(UTC))
    """

    def __init__(self, scheduler: Any, kinesis: Any, group: str,
                 announce: Callable[[str], Any] | None = None) -> None:
        self.scheduler = scheduler
        self.kinesis = kinesis
        self.group = group
        self.fired = 0
        self.announce = announce
        self.looked: dict[str, datetime] = {}
        """When each recurring schedule was last looked at: its occurrences since are due."""

    async def fire_due(self, now: datetime) -> int:
        fired = 0
        for name in sorted(await schedule_names(self.scheduler, self.group)):
            try:
                schedule = await self.scheduler.get_schedule(Name=name, GroupName=self.group)
            except Exception as exc:
                if error_code(exc) == "ResourceNotFoundException":  # cancelled since the listing
                    continue
                raise
            if not schedule["ScheduleExpression"].startswith("at("):
                fired += await self._recurring(name, schedule, now)
                continue
            due = datetime.strptime(schedule["ScheduleExpression"][3:-1], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
            if due > now:
                continue
            target = schedule["Target"]
            await self.kinesis.put_record(StreamName=target["Arn"].rsplit("/", 1)[-1], Data=target["Input"].encode(),
                                          PartitionKey=target["KinesisParameters"]["PartitionKey"])
            try:
                await self.scheduler.delete_schedule(Name=name, GroupName=self.group)
            except Exception as exc:
                if error_code(exc) != "ResourceNotFoundException":
                    raise
            fired += 1
        self.fired += fired
        return fired

    async def _recurring(self, name: str, schedule: dict[str, Any], now: datetime) -> int:
        since = self.looked.get(name)
        self.looked[name] = now
        if since is None or schedule.get("State") == "DISABLED":
            return 0
        target = schedule["Target"]
        fired = 0
        for at in deployed_schedule(name, schedule).occurrences(since, now):
            data = target["Input"].replace("<aws.scheduler.scheduled-time>", at.strftime("%Y-%m-%dT%H:%M:%SZ"))
            await self.kinesis.put_record(StreamName=target["Arn"].rsplit("/", 1)[-1], Data=data.encode(),
                                          PartitionKey=target["KinesisParameters"]["PartitionKey"])
            fired += 1
            if self.announce is not None:
                self.announce(f"schedule {name.removeprefix('schedule.')}: fired for {at.isoformat()}")
        return fired

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Fire due schedules every `interval` seconds until `stop`."""
        while not stop.is_set():
            await self.fire_due(datetime.now(UTC))
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass


def deployed_schedule(name: str, schedule: dict[str, Any]) -> Schedule:
    """A deployed `cron(...)`/`rate(...)` schedule read back as the Schedule that computes its
    occurrences (EventBridge's six cron fields as the usual five)."""
    expression, zone = schedule["ScheduleExpression"], schedule.get("ScheduleExpressionTimezone") or "UTC"
    body = expression[expression.index("(") + 1:-1]
    if expression.startswith("rate("):
        value, unit = body.split()
        every = timedelta(**{unit.rstrip("s") + "s": int(value)})
        return Schedule(name=name, queue_id="-", task_type="-", every=every, timezone=zone)
    minute, hour, dom, month, dow, _year = body.split()
    if dow == "?":
        dow = "*"
    else:
        dow = ",".join("-".join(str(int(d) - 1) if d.isdigit() else d for d in part.split("-"))
                       for part in dow.split(","))
    return Schedule(name=name, queue_id="-", task_type="-", timezone=zone,
                    cron=" ".join((minute, hour, "*" if dom == "?" else dom, month, dow)))
