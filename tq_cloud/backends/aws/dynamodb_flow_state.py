"""Flow-control items in the tasks table: `_tq#flow#<sha256 of the scope>`, with a version `v`
checked by every replacement (PutItem with a condition), the document as JSON in `doc`, the
concurrency slots as a map `slots` (holder: until, ms), and `expires_at` for the table's TTL.
Freeing slots is one UpdateItem (REMOVE, ADD v 1) that needs no read."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from tq_cloud.backends.aws.dynamo import Item, is_condition_failure, ms, n, s
from tq_cloud.domain.limits import RESERVED_ID_PREFIX
from tq_cloud.ports.storage import FlowState

FLOW_PREFIX = f"{RESERVED_ID_PREFIX}flow#"


class DynamoFlowState:
    """Mixed into DynamoDBTaskStorage (its client, table and batched reads)."""

    client: Any
    table: str

    _items: Callable[..., Awaitable[list[Item]]]

    async def read_flow(self, scopes: Sequence[str]) -> dict[str, FlowState]:
        ids = {_flow_id(scope): scope for scope in scopes}
        return {ids[item["id"]["S"]]: _state(item) for item in await self._items(list(ids))}

    async def write_flow(self, scope: str, state: FlowState, expires_at: datetime) -> bool:
        item: Item = {"id": s(_flow_id(scope)), "v": n(state.version + 1),
                      "doc": s(json.dumps(state.doc, separators=(",", ":"))),
                      "slots": {"M": {h: n(ms(until)) for h, until in state.slots.items()}},
                      "expires_at": n(int(expires_at.timestamp()) + 1)}
        condition: dict[str, Any] = ({"ConditionExpression": "attribute_not_exists(id)"} if state.version == 0 else
                                     {"ConditionExpression": "v = :v",
                                      "ExpressionAttributeValues": {":v": n(state.version)}})
        try:
            await self.client.put_item(TableName=self.table, Item=item, **condition)
        except Exception as exc:
            if is_condition_failure(exc):
                return False
            raise
        return True

    async def free_slots(self, scope: str, holders: Sequence[str]) -> None:
        if not holders:
            return
        names = {f"#h{i}": h for i, h in enumerate(dict.fromkeys(holders))}
        try:
            await self.client.update_item(
                TableName=self.table, Key={"id": s(_flow_id(scope))},
                UpdateExpression=f"REMOVE {', '.join(f'slots.{k}' for k in names)} ADD v :one",
                ConditionExpression="attribute_exists(id)",
                ExpressionAttributeNames=names, ExpressionAttributeValues={":one": n(1)})
        except Exception as exc:
            if not is_condition_failure(exc):  # no item: nothing held
                raise


def _flow_id(scope: str) -> str:
    return f"{FLOW_PREFIX}{hashlib.sha256(scope.encode()).hexdigest()}"



def _state(item: Item) -> FlowState:
    slots = {h: datetime.fromtimestamp(int(v["N"]) / 1000, UTC) for h, v in item.get("slots", {}).get("M", {}).items()}
    return FlowState(int(item["v"]["N"]), json.loads(item["doc"]["S"]), slots)
