"""EventBridge Scheduler's firing, emulated: moto stores one-time schedules but never fires them.

For each due `at()` schedule of the group, it does what the scheduler does with a Kinesis
target: PutRecord of the target's Input under the target's PartitionKey, then deletes the
schedule (ActionAfterCompletion DELETE). The production timer (EventBridgeTimer) only creates
and deletes schedules; nothing in it knows about this.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from tq_cloud.backends.aws.dynamo import error_code
from tq_cloud.backends.aws.scheduler import schedule_names


class EmulatedScheduler:
    """Example:
        scheduler = EmulatedScheduler(clients.scheduler, clients.kinesis, settings.schedule_group)
        fired = await scheduler.fire_due(datetime.now(UTC))
    """

    def __init__(self, scheduler: Any, kinesis: Any, group: str) -> None:
        self.scheduler = scheduler
        self.kinesis = kinesis
        self.group = group
        self.fired = 0

    async def fire_due(self, now: datetime) -> int:
        fired = 0
        for name in sorted(await schedule_names(self.scheduler, self.group)):
            try:
                schedule = await self.scheduler.get_schedule(Name=name, GroupName=self.group)
            except Exception as exc:
                if error_code(exc) == "ResourceNotFoundException":  # cancelled since the listing
                    continue
                raise
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

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Fire due schedules every `interval` seconds until `stop`."""
        while not stop.is_set():
            await self.fire_due(datetime.now(UTC))
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass
