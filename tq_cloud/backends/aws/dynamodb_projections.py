"""Entity projections in DynamoDB, keyed by task id, listed per entity through a GSI.

Each upsert is conditional on the stored status having a lower rank (or being the same status
and not newer), so an out-of-order update under at-least-once delivery never moves a status
back, exactly as in memory.
Writes of one batch are issued concurrently."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from tq_cloud.backends.aws.dynamo import bounded_gather, is_condition_failure, n, s
from tq_cloud.ports.projections import EntityTaskProjection

ENTITY_INDEX = "by_entity"


def entity_key(entity_type: str, entity_id: str) -> str:
    """The GSI key of an entity: a JSON pair, so no type or id containing the separator can
    make two entities share a key (`a#b` + `c` and `a` + `b#c` did)."""
    return json.dumps([entity_type, entity_id], separators=(",", ":"))


class DynamoDbProjectionProvider:
    """Entity projections on DynamoDB: one item per entity and task, newest attempt wins.

    Example:
        projections = DynamoDbProjectionProvider(clients.dynamodb, settings.projections_table)
        timeline = await projections.timeline("order", "o-1")
    """
    def __init__(self, client: Any, table: str, *, ttl: timedelta = timedelta(days=30)) -> None:
        """`ttl`: a projection expires this long after its last update (DynamoDB TTL)."""
        self.client = client
        self.table = table
        self.ttl = ttl

    async def upsert_projections(self, entries: Sequence[EntityTaskProjection]) -> None:
        """Tasks in parallel; one task's entries in order, so the first final status wins."""
        by_task: dict[str, list[EntityTaskProjection]] = {}
        for entry in entries:
            by_task.setdefault(entry.task_id, []).append(entry)

        async def in_order(group: list[EntityTaskProjection]) -> None:
            for entry in group:
                await self._upsert(entry)

        await bounded_gather(list(by_task.values()), in_order)

    async def _upsert(self, entry: EntityTaskProjection) -> None:
        try:
            await self.client.update_item(
                TableName=self.table, Key={"task_id": s(entry.task_id)},
                UpdateExpression=("SET entity_key = :e, created_sort = :c, #st = :st, #rk = :rk, "
                                  "body = :b, updated_at = :u, updated_ms = :ums, expires_at = :exp"),
                ConditionExpression=("attribute_not_exists(task_id) OR #rk < :rk OR "
                                     "(#st = :st AND (attribute_not_exists(updated_ms) OR updated_ms <= :ums))"),
                ExpressionAttributeNames={"#st": "status", "#rk": "rank"},
                ExpressionAttributeValues={
                    ":e": s(entity_key(entry.entity_type, entry.entity_id)),
                    ":c": s(f"{entry.created_at.isoformat()}#{entry.task_id}"),
                    ":st": s(entry.status.value), ":rk": n(entry.status.rank),
                    ":b": s(entry.model_dump_json()), ":u": s(entry.updated_at.isoformat()),
                    ":ums": n(int(entry.updated_at.timestamp() * 1000)),
                    ":exp": n(int((entry.updated_at + self.ttl).timestamp()))})
        except Exception as exc:
            if not is_condition_failure(exc):
                raise

    async def get_projection(self, task_id: str) -> EntityTaskProjection | None:
        response = await self.client.get_item(TableName=self.table, Key={"task_id": s(task_id)},
                                              ConsistentRead=True)
        item = response.get("Item")
        return EntityTaskProjection.model_validate_json(item["body"]["S"]) if item else None

    async def for_entity(self, entity_type: str, entity_id: str) -> list[EntityTaskProjection]:
        return await self.timeline(entity_type, entity_id, limit=10_000)

    async def timeline(self, entity_type: str, entity_id: str, limit: int = 100) -> list[EntityTaskProjection]:
        request: dict[str, Any] = {"Limit": limit,
            "TableName": self.table, "IndexName": ENTITY_INDEX,
            "KeyConditionExpression": "entity_key = :e",
            "ExpressionAttributeValues": {":e": s(entity_key(entity_type, entity_id))}}
        out: list[EntityTaskProjection] = []
        while True:
            response = await self.client.query(**request)
            out += [EntityTaskProjection.model_validate_json(i["body"]["S"]) for i in response["Items"]]
            if "LastEvaluatedKey" not in response or len(out) >= limit:
                return out[:limit]
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
