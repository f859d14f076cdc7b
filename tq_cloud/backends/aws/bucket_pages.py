"""Newest-first pages over a sparse GSI split into buckets (the tasks table's `due`, `running`
and `finished` indexes, the barrier table's `flows` index).

Each bucket is read from where the last page stopped in it: the cursor keeps, per bucket, the
key of the last row examined (DynamoDB's own ExclusiveStartKey), never a sort value. Any number
of rows may share one sort value (one batch's failures share their finish millisecond), and a
page still steps past them exactly once. Rows are merged across buckets by sort value, down to
the highest last row of any bucket that has more: below it, that bucket's next rows could come
first, so the page stops there and the next one reads on.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import json
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tq_cloud.backends.aws.dynamo import Item, n, s

EXHAUSTED = "done"


@dataclass(frozen=True)
class IndexRow:
    bucket: str
    sort: int
    item_id: str
    key: Item
    """The row's ExclusiveStartKey: the table's key and the index's."""


@dataclass(frozen=True)
class BucketIndex:
    """One sparse GSI: its name, the attribute holding the bucket, the sort attribute, and the
    table's own key attributes (with the one naming the item)."""

    name: str
    bucket_attr: str
    sort_attr: str
    table_keys: tuple[str, ...]
    id_of: Callable[[Item], str]


def encode_cursor(positions: dict[str, Item | str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(positions, separators=(",", ":")).encode()).decode()


def decode_cursor(cursor: str | None) -> dict[str, Any]:
    if not cursor:
        return {}
    try:
        positions = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except ValueError:
        positions = None
    if not isinstance(positions, dict):
        raise ValueError(f"{cursor[:40]!r} is not a cursor this store gave out")
    return positions


async def read_page(client: Any, table: str, index: BucketIndex, buckets: Sequence[str], *, limit: int,
                    low: int = 0, high: int | None = None, cursor: str | None = None,
                    accept: Callable[[list[IndexRow]], Awaitable[dict[str, Any]]]) -> tuple[list[Any], str | None]:
    """Up to `limit` accepted rows sorted between `low` and `high`, newest first, and the cursor
    of the next page (None at the end). `accept` reads a run of index rows and returns, by item
    id, those that belong on the page (a filter may refuse some); the page ends at `limit`."""
    positions = decode_cursor(cursor)
    live = [b for b in buckets if positions.get(b) != EXHAUSTED]

    async def bucket(name: str) -> tuple[str, list[IndexRow], bool]:
        request: dict[str, Any] = {
            "TableName": table, "IndexName": index.name, "Limit": limit + 1, "ScanIndexForward": False,
            "KeyConditionExpression": f"{index.bucket_attr} = :b AND {index.sort_attr} >= :lo",
            "ExpressionAttributeValues": {":b": s(name), ":lo": n(low)}}
        if high is not None:
            request["KeyConditionExpression"] = f"{index.bucket_attr} = :b AND {index.sort_attr} BETWEEN :lo AND :hi"
            request["ExpressionAttributeValues"][":hi"] = n(high)
        if isinstance(positions.get(name), dict):
            request["ExclusiveStartKey"] = positions[name]
        response = await client.query(**request)
        rows = [IndexRow(name, int(item[index.sort_attr]["N"]), index.id_of(item),
                         {k: item[k] for k in (*index.table_keys, index.bucket_attr, index.sort_attr)})
                for item in response.get("Items", [])]
        return name, rows, bool(response.get("LastEvaluatedKey"))

    found = await asyncio.gather(*(bucket(name) for name in live))
    horizon = max((rows[-1].sort for _, rows, more in found if more and rows), default=None)
    page: list[Any] = []
    examined: dict[str, IndexRow] = {}
    candidates = [row for row in _merged([rows for _, rows, _ in found]) if horizon is None or row.sort >= horizon]
    for start in range(0, len(candidates), 100):
        run = candidates[start:start + 100]
        kept = await accept(run)
        for row in run:
            examined[row.bucket] = row
            if row.item_id in kept:
                page.append(kept[row.item_id])
            if len(page) == limit:
                return page, _next_cursor(positions, found, examined)
    return page, _next_cursor(positions, found, examined)


def _merged(runs: list[list[IndexRow]]) -> Iterator[IndexRow]:
    """The buckets' rows by sort value, newest first, each bucket's own order kept."""
    return heapq.merge(*runs, key=lambda row: -row.sort)


def _next_cursor(positions: dict[str, Any], found: list[tuple[str, list[IndexRow], bool]],
                 examined: dict[str, IndexRow]) -> str | None:
    after = dict(positions)
    for name, rows, more in found:
        last = examined.get(name)
        if last is not None:
            after[name] = last.key
        if not more and (not rows or (last is not None and last is rows[-1])):
            after[name] = EXHAUSTED
    if all(after.get(name) == EXHAUSTED for name, _, _ in found):
        return None
    return encode_cursor(after)
