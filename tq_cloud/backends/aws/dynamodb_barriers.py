"""Flow barriers in DynamoDB: one `meta` item per flow and one item per recorded step.

A step result is recorded with a conditional put (first write wins) in the same transaction
as the decrement of `remaining`, so a step can never be recorded without being counted or
counted twice. Closing (complete, aborted, timed out) is a conditional update from `active`,
so exactly one caller closes a flow. A transaction holds at most 100 items, so a batch with
more new steps is committed in several transactions, each atomic.

Retention follows the flow's life: an active flow's meta item never expires; once closed, it
expires `ttl` after the close. Step items expire `ttl` after the later of the flow's start and
its deadline (its timeout), so a flow with a 30-day timeout keeps its steps 30 days + `ttl`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from tq_cloud.backends.aws.dynamo import Item, error_code, is_condition_failure, n, s
from tq_cloud.flows.models import FlowStepResult
from tq_cloud.ports.barrier import BarrierDecrementResult, BarrierSnapshot, BarrierState

_META = "meta"
_TRANSACTION_STEPS = 99


def _flow_key(flow_id: str) -> dict[str, str]:
    return s(f"flow#{flow_id}")


def _step_key(index: int) -> dict[str, str]:
    return s(f"step#{index:07d}")


class DynamoDbFlowBarrierProvider:
    def __init__(self, client: Any, table: str, *, ttl: timedelta = timedelta(days=14)) -> None:
        self.client = client
        self.table = table
        self.ttl = ttl
        self.calls = 0

    async def init_barrier(self, flow_id: str, total_steps: int, started_at: datetime,
                           deadline: datetime | None = None) -> None:
        self.calls += 1
        steps_expire = int((max(started_at, deadline or started_at) + self.ttl).timestamp())
        try:
            await self.client.put_item(
                TableName=self.table, ConditionExpression="attribute_not_exists(pk)",
                Item={"pk": _flow_key(flow_id), "sk": s(_META), "total": n(total_steps),
                      "remaining": n(total_steps), "state": s(BarrierState.ACTIVE.value),
                      "started_at": s(started_at.isoformat()), "join_dispatched": {"BOOL": False},
                      "steps_expire_at": n(steps_expire)})
        except Exception as exc:
            if not is_condition_failure(exc):
                raise

    async def _recorded(self, flow_id: str) -> dict[int, FlowStepResult]:
        return {r.step_index: r for r in await self.get_step_results(flow_id)}

    async def batch_decrement_and_check(
        self, flow_id: str, results: Sequence[FlowStepResult], *, abort_on_failure: bool = False
    ) -> BarrierDecrementResult:
        self.calls += 1
        for _ in range(5):
            item = await self._meta(flow_id)
            snapshot = _snapshot(flow_id, item) if item is not None else None
            if item is None or snapshot is None or snapshot.state is not BarrierState.ACTIVE:
                return _closed_before(snapshot)
            expires = item.get("steps_expire_at") or n(int((snapshot.started_at + self.ttl).timestamp()))
            known = await self._recorded(flow_id)
            fresh = [r for r in {r.step_index: r for r in results}.values()
                     if r.step_index not in known and 0 <= r.step_index < snapshot.total_steps]
            try:
                for start in range(0, len(fresh), _TRANSACTION_STEPS):
                    await self._record(flow_id, fresh[start:start + _TRANSACTION_STEPS], expires)
            except Exception as exc:
                if error_code(exc) == "TransactionCanceledException":
                    continue  # a concurrent duplicate won a step or closed the flow: look again
                raise
            recorded = {**known, **{r.step_index: r for r in fresh}}
            # a replay after a crash between recording and closing must still abort
            failed = any(recorded[r.step_index].status == "fail" for r in results if r.step_index in recorded)
            return await self._settle(flow_id, abort_on_failure and failed)
        raise RuntimeError(f"flow {flow_id}: barrier update kept conflicting; the batch will be redelivered")

    async def _record(self, flow_id: str, fresh: list[FlowStepResult], expires: dict[str, str]) -> None:
        items: list[dict[str, Any]] = [{"Put": {
            "TableName": self.table, "ConditionExpression": "attribute_not_exists(pk)",
            "Item": {"pk": _flow_key(flow_id), "sk": _step_key(r.step_index), "result": s(r.model_dump_json()),
                     "expires_at": expires},
        }} for r in fresh]
        items.append({"Update": {
            "TableName": self.table, "Key": {"pk": _flow_key(flow_id), "sk": s(_META)},
            "UpdateExpression": "SET remaining = remaining - :n",
            "ConditionExpression": "#st = :active",
            "ExpressionAttributeNames": {"#st": "state"},
            "ExpressionAttributeValues": {":n": n(len(fresh)), ":active": s(BarrierState.ACTIVE.value)},
        }})
        await self.client.transact_write_items(TransactItems=items)

    async def _settle(self, flow_id: str, failed: bool) -> BarrierDecrementResult:
        """After recording: close the flow if it is met, or aborted by a failure."""
        snapshot = await self.get(flow_id)
        if snapshot is None or snapshot.state is not BarrierState.ACTIVE:
            return _closed_before(snapshot)
        target = BarrierState.ABORTED if failed else (
            BarrierState.COMPLETE if snapshot.remaining <= 0 else None)
        if target is None:
            return BarrierDecrementResult(snapshot.remaining, BarrierState.ACTIVE)
        closed = await self.close(flow_id, target)
        return BarrierDecrementResult(max(snapshot.remaining, 0), target if closed else None, closed=closed)

    async def get_step_results(self, flow_id: str) -> list[FlowStepResult]:
        results: list[FlowStepResult] = []
        request: dict[str, Any] = {
            "TableName": self.table, "ConsistentRead": True,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :step)",
            "ExpressionAttributeValues": {":pk": _flow_key(flow_id), ":step": s("step#")}}
        while True:
            response = await self.client.query(**request)
            results += [FlowStepResult.model_validate_json(i["result"]["S"]) for i in response["Items"]]
            if "LastEvaluatedKey" not in response:
                return sorted(results, key=lambda r: r.step_index)
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    async def close(self, flow_id: str, state: BarrierState) -> bool:
        self.calls += 1
        try:
            await self.client.update_item(
                TableName=self.table, Key={"pk": _flow_key(flow_id), "sk": s(_META)},
                UpdateExpression="SET #st = :to, expires_at = :exp", ConditionExpression="#st = :active",
                ExpressionAttributeNames={"#st": "state"},
                ExpressionAttributeValues={":to": s(state.value), ":active": s(BarrierState.ACTIVE.value),
                                           ":exp": n(int((datetime.now(UTC) + self.ttl).timestamp()))})
        except Exception as exc:
            if is_condition_failure(exc):
                return False
            raise
        return True

    async def _meta(self, flow_id: str) -> Item | None:
        response = await self.client.get_item(
            TableName=self.table, Key={"pk": _flow_key(flow_id), "sk": s(_META)}, ConsistentRead=True)
        item: Item | None = response.get("Item")
        return item

    async def get(self, flow_id: str) -> BarrierSnapshot | None:
        item = await self._meta(flow_id)
        return _snapshot(flow_id, item) if item is not None else None

    async def mark_join_dispatched(self, flow_id: str) -> None:
        try:
            await self.client.update_item(
                TableName=self.table, Key={"pk": _flow_key(flow_id), "sk": s(_META)},
                UpdateExpression="SET join_dispatched = :t", ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":t": {"BOOL": True}})
        except Exception as exc:
            if not is_condition_failure(exc):
                raise


def _snapshot(flow_id: str, item: Item) -> BarrierSnapshot:
    return BarrierSnapshot(
        flow_id=flow_id, total_steps=int(item["total"]["N"]), remaining=int(item["remaining"]["N"]),
        state=BarrierState(item["state"]["S"]), started_at=datetime.fromisoformat(item["started_at"]["S"]),
        join_dispatched=bool(item["join_dispatched"]["BOOL"]))


def _closed_before(snapshot: BarrierSnapshot | None) -> BarrierDecrementResult:
    if snapshot is None:
        return BarrierDecrementResult(-1)
    return BarrierDecrementResult(-1, snapshot.state, snapshot.join_dispatched)
