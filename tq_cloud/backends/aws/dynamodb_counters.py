"""Kept counters in the tasks table, under reserved ids: a row per (queue, type) in all, one
per minute (expiring after MINUTE_ROWS_KEPT through the table's TTL), and one that lists the
pairs (so the console, which may run without the app's code, knows what to read). A batch's tally is
one `UpdateItem` of `ADD`s per row it touches, so concurrent batches add up without a read
and without a condition; the console reads rows by id (`BatchGetItem`), a page of 100 a call."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from tq_cloud.backends.aws.dynamo import Item, batch_get_items, bounded_gather, n
from tq_cloud.domain.tally import LATENESS_BOUNDS_MS, OUTCOMES, BatchTally
from tq_cloud.ports.counters import (
    MINUTE_ROWS_KEPT,
    PAIRS_ID,
    CountsRow,
    CountsSeen,
    check_range,
    counter_id,
    minute_of,
    minutes_between,
)

_BUCKETS = len(LATENESS_BOUNDS_MS) + 1


class DynamoDbCounters:
    """The kept-counters port on the tasks table (needs dynamodb:UpdateItem and BatchGetItem).

    Example:
        counters = DynamoDbCounters(client, "tq-tasks")
        await counters.add(BatchTally.of(batch.outcomes), now)
    """
    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table
        self._listed: set[tuple[str, str]] = set()
        """Pairs this instance has put on the pairs row (a string set: adding one again is harmless)."""

    async def add(self, tally: BatchTally, at: datetime) -> None:
        unlisted = set(tally.pairs) - self._listed
        if unlisted:
            await self.client.update_item(
                TableName=self.table, Key={"id": {"S": PAIRS_ID}}, UpdateExpression="ADD pairs :p",
                ExpressionAttributeValues={":p": {"SS": sorted(json.dumps(p) for p in unlisted)}})
            self._listed |= unlisted
        minute = minute_of(at)
        writes: list[tuple[str, CountsRow, int | None]] = []
        for (queue, task_type), pair in tally.pairs.items():
            row = CountsRow()
            row.add(pair)
            expires = int((minute + MINUTE_ROWS_KEPT).timestamp())
            writes += [(counter_id(queue, task_type, None), row, None),
                       (counter_id(queue, task_type, minute), row, expires)]
        await bounded_gather(writes, self._add_row)

    async def _add_row(self, write: tuple[str, CountsRow, int | None]) -> None:
        item_id, row, expires = write
        values: dict[str, Any] = {f":{name}": n(row.counts[name]) for name in OUTCOMES if row.counts[name]}
        values.update({f":l{i}": n(c) for i, c in enumerate(row.lateness) if c})
        if row.run_ms:
            values[":run_ms"] = n(round(row.run_ms, 3))
        adds = ", ".join(f"{name[1:]} {name}" for name in values)
        request: dict[str, Any] = {"TableName": self.table, "Key": {"id": {"S": item_id}},
                                   "UpdateExpression": f"ADD {adds}", "ExpressionAttributeValues": values}
        if expires is not None:
            request["UpdateExpression"] += " SET expires_at = :expires"
            values[":expires"] = n(expires)
        await self.client.update_item(**request)

    async def read(self, pairs: Sequence[tuple[str, str]] | None, since: datetime, until: datetime) -> CountsSeen:
        check_range(since, until)
        if pairs is None:
            listed = (await self.client.get_item(TableName=self.table, Key={"id": {"S": PAIRS_ID}},
                                                 ConsistentRead=True)).get("Item", {})
            pairs = sorted(tuple(json.loads(p)) for p in listed.get("pairs", {}).get("SS", []))
        minutes = minutes_between(since, until)
        wanted = {counter_id(q, t, m): (q, t, m) for q, t in pairs for m in (None, *minutes)}
        seen = CountsSeen()
        for item in await batch_get_items(self.client, self.table, list(wanted)):
            queue, task_type, minute = wanted[item["id"]["S"]]
            row = _row(item)
            if minute is None:
                seen.totals[(queue, task_type)] = row
            else:
                seen.minutes.setdefault((queue, task_type), {})[minute] = row
        return seen


def _row(item: Item) -> CountsRow:
    row = CountsRow()
    for name in OUTCOMES:
        if name in item:
            row.counts[name] = int(item[name]["N"])
    row.lateness = [int(item[f"l{i}"]["N"]) if f"l{i}" in item else 0 for i in range(_BUCKETS)]
    row.run_ms = float(item["run_ms"]["N"]) if "run_ms" in item else 0.0
    return row
