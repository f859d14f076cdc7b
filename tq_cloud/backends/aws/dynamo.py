"""Small helpers for DynamoDB's attribute-value format and its errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

log = logging.getLogger("tq_cloud.dynamodb")
T = TypeVar("T")
R = TypeVar("R")

Item = dict[str, dict[str, Any]]


def s(value: str) -> dict[str, str]:
    return {"S": value}


def n(value: int | float) -> dict[str, str]:
    return {"N": str(value)}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ms(when: datetime) -> int:
    """A time as the epoch milliseconds the tables store."""
    return int(when.timestamp() * 1000)


def due_ms(when: datetime) -> int:
    """A due time as the epoch milliseconds the due index sorts by, rounded up: a sweep at `now`
    claims rows with `execute_at_ms <= ms(now)`, and a task due later within that millisecond
    must not be among them (it would reach a worker early, and be held or deferred)."""
    micros = (when - _EPOCH) // timedelta(microseconds=1)
    return -(-micros // 1000)


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def is_condition_failure(exc: BaseException) -> bool:
    return error_code(exc) == "ConditionalCheckFailedException"


async def tolerant_gather(items: Iterable[T], work: Callable[[T], Awaitable[R]], what: str,
                          limit: int = 16) -> list[R | None]:
    """Like bounded_gather, but an item whose call fails yields None (logged) instead of
    failing the rest: for sweeps, where every item left over is retried by the next sweep."""
    async def guarded(item: T) -> R | None:
        try:
            return await work(item)
        except Exception as exc:  # noqa: BLE001 - one item's failure must not stop the sweep
            log.warning("%s failed for %r: %r; the next sweep retries it", what, item, exc)
            return None

    return await bounded_gather(items, guarded, limit)


async def bounded_gather(items: Iterable[T], work: Callable[[T], Awaitable[R]], limit: int = 16) -> list[R]:
    """Run `work` over items concurrently, at most `limit` at a time, in order."""
    gate = asyncio.Semaphore(limit)

    async def one(item: T) -> R:
        async with gate:
            return await work(item)

    return list(await asyncio.gather(*(one(i) for i in items)))


async def update_if(client: Any, **request: Any) -> Item | None:
    """One conditional UpdateItem returning the item after it, or None when its condition
    failed (the set-if-absent and move-forward-only writes every backend makes)."""
    try:
        response = await client.update_item(ReturnValues="ALL_NEW", **request)
    except Exception as exc:
        if is_condition_failure(exc):
            return None
        raise
    item: Item = response["Attributes"]
    return item


async def batch_get_items(client: Any, table: str, ids: Sequence[str], projection: str | None = None) -> list[Item]:
    """The items of `ids` in a table keyed by `id` (consistent reads, 100 keys a BatchGetItem,
    unprocessed keys asked again), with only `projection`'s attributes if given."""
    items: list[Item] = []
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), 100):
        batch: dict[str, Any] = {"Keys": [{"id": s(i)} for i in unique[start:start + 100]], "ConsistentRead": True}
        if projection:
            batch["ProjectionExpression"] = projection
        request: dict[str, Any] = {table: batch}
        while request:
            response = await client.batch_get_item(RequestItems=request)
            items += response["Responses"].get(table, [])
            request = response.get("UnprocessedKeys") or {}
    return items
