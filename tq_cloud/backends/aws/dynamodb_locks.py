"""Task claims in DynamoDB: a conditional put that succeeds when the key is free, expired, or
already the caller's (so a claim retried after its response was lost is still the caller's),
with `expires_at` as the table's TTL attribute so abandoned claims are cleaned up."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from tq_cloud.backends.aws.dynamo import bounded_gather, is_condition_failure, n, s
from tq_cloud.clock import Clock, SystemClock


class DynamoDbLockProvider:
    """Claims on DynamoDB (conditional puts with an expiry), for handlers that claim tasks
    across processes (`TQ_DISTRIBUTED_CLAIMS`).

    Example:
        locks = DynamoDbLockProvider(clients.dynamodb, settings.locks_table)
    """
    def __init__(self, client: Any, table: str, clock: Clock | None = None) -> None:
        self.client = client
        self.table = table
        self.clock = clock or SystemClock()

    async def acquire(self, keys: Sequence[str], owner: str, ttl: timedelta) -> set[str]:
        now = self.clock.now()
        now_ms, until = int(now.timestamp() * 1000), now + ttl

        async def claim(key: str) -> str | None:
            try:
                await self.client.put_item(
                    TableName=self.table,
                    ConditionExpression="attribute_not_exists(lock_key) OR expires_ms <= :now OR #o = :owner",
                    ExpressionAttributeNames={"#o": "owner"},
                    Item={"lock_key": s(key), "owner": s(owner), "expires_ms": n(int(until.timestamp() * 1000)),
                          "expires_at": n(int(until.timestamp()) + 1)},
                    ExpressionAttributeValues={":now": n(now_ms), ":owner": s(owner)})
            except Exception as exc:
                if is_condition_failure(exc):
                    return None
                raise
            return key

        return {k for k in await bounded_gather(list(dict.fromkeys(keys)), claim) if k is not None}

    async def release(self, keys: Sequence[str], owner: str) -> None:
        async def free(key: str) -> None:
            try:
                await self.client.delete_item(TableName=self.table, Key={"lock_key": s(key)},
                                              ConditionExpression="#o = :me",
                                              ExpressionAttributeNames={"#o": "owner"},
                                              ExpressionAttributeValues={":me": s(owner)})
            except Exception as exc:
                if not is_condition_failure(exc):
                    raise

        await bounded_gather(keys, free)
