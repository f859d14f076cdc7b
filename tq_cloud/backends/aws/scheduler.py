"""Flow-timeout sentinels as one-time EventBridge Scheduler schedules.

Each sentinel becomes a schedule `at(deadline)` in a schedule group, targeting the stream with
the task as input and deleted after it fires. Cancelling deletes it. EventBridge fires the
schedules itself, so `fire_due` has nothing to do (the local runtime, on moto, brings its own
firing: tq_cloud/local/scheduler.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tq_cloud.backends.aws.dynamo import error_code
from tq_cloud.backends.aws.kinesis import partition_key
from tq_cloud.core.codec import encode_task
from tq_cloud.domain.task import Task


def _at(when: datetime) -> str:
    """`at()` takes whole seconds: round up, so a schedule never fires before its time."""
    when = when.astimezone(UTC)
    if when.microsecond:
        when = when.replace(microsecond=0) + timedelta(seconds=1)
    return f"at({when.strftime('%Y-%m-%dT%H:%M:%S')})"


class EventBridgeTimer:
    """Flow timeouts on EventBridge Scheduler: one `at()` schedule per flow that puts its
    sentinel on the stream (and deletes itself after).

    Example:
        timer = EventBridgeTimer(clients.scheduler, group=settings.schedule_group,
                                 stream_arn=stream_arn, role_arn=settings.scheduler_role_arn)
    """
    def __init__(self, client: Any, *, group: str, stream_arn: str, role_arn: str) -> None:
        self.client = client
        self.group = group
        self.stream_arn = stream_arn
        self.role_arn = role_arn

    async def schedule(self, name: str, task: Task) -> None:
        when = task.execute_at or datetime.now(UTC)
        try:
            await self.client.create_schedule(
                Name=name, GroupName=self.group, ScheduleExpression=_at(when),
                ScheduleExpressionTimezone="UTC", FlexibleTimeWindow={"Mode": "OFF"},
                ActionAfterCompletion="DELETE",
                Target={"Arn": self.stream_arn, "RoleArn": self.role_arn,
                        "Input": encode_task(task).decode(),
                        "KinesisParameters": {"PartitionKey": partition_key(task)}})
        except Exception as exc:
            if error_code(exc) != "ConflictException":
                raise

    async def cancel(self, name: str) -> None:
        try:
            await self.client.delete_schedule(Name=name, GroupName=self.group)
        except Exception as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise

    async def pending(self) -> list[str]:
        return sorted(await schedule_names(self.client, self.group))

    async def fire_due(self, now: datetime) -> int:
        return 0  # EventBridge Scheduler fires the schedules


async def schedule_names(client: Any, group: str) -> list[str]:
    """Every schedule of the group: ListSchedules answers a page at a time (NextToken)."""
    names: list[str] = []
    request: dict[str, Any] = {"GroupName": group}
    while True:
        response = await client.list_schedules(**request)
        names += [s["Name"] for s in response.get("Schedules", [])]
        if not response.get("NextToken"):
            return names
        request["NextToken"] = response["NextToken"]
