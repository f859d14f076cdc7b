"""What is in the tables right now: tasks by status, flows by state, projections. Used by the
local runtime's live view and by `tq-cloud status`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tq_cloud.backends.aws.settings import AwsSettings


async def scan_all(dynamodb: Any, table: str, *attributes: str) -> list[dict[str, Any]]:
    """All items of a table, with only `attributes` when given: the live view runs every second
    and must not pay for task bodies it does not read."""
    items: list[dict[str, Any]] = []
    request: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    if attributes:
        names = {f"#a{i}": name for i, name in enumerate(attributes)}
        request |= {"ProjectionExpression": ", ".join(names), "ExpressionAttributeNames": names}
    while True:
        response = await dynamodb.scan(**request)
        items += response["Items"]
        if "LastEvaluatedKey" not in response:
            return items
        request["ExclusiveStartKey"] = response["LastEvaluatedKey"]


@dataclass
class Snapshot:
    tasks: Counter[str] = field(default_factory=Counter)
    by_type: Counter[tuple[str, str]] = field(default_factory=Counter)
    flows: Counter[str] = field(default_factory=Counter)
    projections: Counter[str] = field(default_factory=Counter)
    next_due_ms: int | None = None
    """When the earliest scheduled row is due (ms since the epoch)."""

    @property
    def settled(self) -> bool:
        return not (self.tasks["scheduled"] or self.tasks["processing"] or self.flows["active"])

    def line(self) -> str:
        tasks = " ".join(f"{k}={v}" for k, v in sorted(self.tasks.items())) or "none"
        flows = " ".join(f"{k}={v}" for k, v in sorted(self.flows.items())) or "none"
        due = ""
        if self.next_due_ms is not None:
            due = f" (next due {datetime.fromtimestamp(self.next_due_ms / 1000, UTC):%H:%M:%S})"
        return f"stored tasks: {tasks}{due} | flows: {flows} | projections: {sum(self.projections.values())}"

    def table(self) -> str:
        rows = [f"  {t:<16} {s:<11} {n}" for (t, s), n in sorted(self.by_type.items())]
        return "\n".join(["stored tasks by type and status:", *rows] if rows else ["no stored tasks"])


async def snapshot(dynamodb: Any, settings: AwsSettings, *, by_type: bool = False) -> Snapshot:
    """Counts of what the tables hold; `by_type` also reads each task's body for its type."""
    import json

    view = Snapshot()
    for item in await scan_all(dynamodb, settings.tasks_table, *(() if by_type else ("status", "execute_at_ms"))):
        if "status" not in item:  # the table's own bookkeeping (the bucket count)
            continue
        status = item["status"]["S"]
        view.tasks[status] += 1
        if status == "scheduled" and "execute_at_ms" in item:
            due = int(item["execute_at_ms"]["N"])
            view.next_due_ms = due if view.next_due_ms is None else min(view.next_due_ms, due)
        if by_type:
            view.by_type[(json.loads(item["body"]["S"])["type"], status)] += 1
    for item in await scan_all(dynamodb, settings.barriers_table, "sk", "state"):
        if item["sk"]["S"] == "meta":
            view.flows[item["state"]["S"]] += 1
    for item in await scan_all(dynamodb, settings.projections_table, "status"):
        view.projections[item["status"]["S"]] += 1
    return view
