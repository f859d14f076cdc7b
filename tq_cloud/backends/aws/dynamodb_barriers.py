"""Flow barriers in DynamoDB: a `meta` item per flow, a `count` item per shard of 100 steps,
and an item per recorded step. No transactions, and no report reads what others recorded.

- A step's result is a conditional put (first write wins), before it is counted, so a counted
  step always has its result.
- It is counted by adding its index to its shard's number sets (`done`, and `failed` or
  `ignored`): adding to a set is idempotent, so a step reported twice, or replayed after a
  crash, counts once. A shard item takes the reports of at most 100 steps, so no single item
  is hot for a large flow; concurrent updates of one item are serialised by DynamoDB, never
  cancelled as transactions are.
- The report that finds its shard full adds the shard's number to the meta item's `full` set
  (idempotent too); the one that finds every shard full closes the flow with a conditional
  update from `active`, which exactly one caller wins. A failure that aborts closes it the
  same way.
A report therefore costs one put per step and one update per shard it touches (plus one meta
update per 100 steps), whatever the size of the flow; the join reads the results a page at a
time (`step_results_page`).

Retention follows the flow's life: an active flow's meta item never expires; once closed, it
expires `ttl` after the close. Step and shard items expire `ttl` after the later of the flow's
start and its deadline (its timeout), so a flow with a 30-day timeout keeps its steps 30 days + `ttl`.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from tq_cloud.backends.aws.bucket_pages import BucketIndex, IndexRow, read_page
from tq_cloud.backends.aws.dynamo import Item, bounded_gather, is_condition_failure, ms, n, s, update_if
from tq_cloud.domain.flows import FlowStepResult, StepCounts
from tq_cloud.ports.barrier import BarrierDecrementResult, BarrierSnapshot, BarrierState, FlowPage
from tq_cloud.ports.paging import MAX_PAGE

_META = "meta"
SHARD_STEPS = 100
FLOWS_INDEX = "flows"
FLOW_BUCKETS = 8
"""The flows index (meta items only: `flow_bucket`, `started_ms`) is split over this many
partition keys, so that no key is hot however many flows start at once."""


def _flow_key(flow_id: str) -> dict[str, str]:
    return s(f"flow#{flow_id}")


def _step_key(index: int) -> dict[str, str]:
    return s(f"step#{index:07d}")


def _shard_key(shard: int) -> dict[str, str]:
    return s(f"count#{shard:05d}")


def _numbers(values: Collection[int]) -> dict[str, list[str]]:
    return {"NS": [str(v) for v in values]}


def _size(item: Item, attr: str) -> int:
    return len(item.get(attr, {}).get("NS", []))


class DynamoDbFlowBarrierProvider:
    """Example:
        barriers = DynamoDbFlowBarrierProvider(clients.dynamodb, settings.barriers_table)
        await barriers.init_barrier(flow_id, 10_000, started_at)
        outcome = await barriers.batch_decrement_and_check(flow_id, results)
        if outcome.closed:
            ...  # this caller dispatches the join
    """

    def __init__(self, client: Any, table: str, *, ttl: timedelta = timedelta(days=14)) -> None:
        self.client = client
        self.table = table
        self.ttl = ttl
        self.calls = 0

    def _expiry(self, keep_until: datetime | None) -> dict[str, str]:
        return n(int(((keep_until or datetime.now(UTC)) + self.ttl).timestamp()))

    def _kept(self, keep_until: datetime | None) -> Item:
        """The expiry of an item kept until `keep_until`; none for a flow without a deadline (its
        items live while it is active, and `retire` dates them after its close)."""
        return {"expires_at": self._expiry(keep_until)} if keep_until is not None else {}

    async def init_barrier(self, flow_id: str, total_steps: int, started_at: datetime,
                           deadline: datetime | None = None) -> None:
        """The shard items first, then the meta item: a crash in between leaves a barrier that
        a second call completes (each put is set-if-absent, so it never resets a count)."""
        kept = self._kept(max(started_at, deadline) if deadline else None)
        shards = -(-total_steps // SHARD_STEPS)

        async def shard(k: int) -> None:
            await self._put_if_absent({"pk": _flow_key(flow_id), "sk": _shard_key(k), **kept,
                                       "size": n(min(SHARD_STEPS, total_steps - k * SHARD_STEPS))})

        self.calls += shards + 1
        await bounded_gather(range(shards), shard)
        await self._put_if_absent({
            "pk": _flow_key(flow_id), "sk": s(_META), "total": n(total_steps), "shards": n(shards),
            "state": s(BarrierState.ACTIVE.value), "started_at": s(started_at.isoformat()),
            "join_dispatched": {"BOOL": False}, **{f"steps_{k}": v for k, v in kept.items()}, "failed_in": {"M": {}},
            "ignored_in": {"M": {}}, "flow_bucket": s(_bucket(flow_id)), "started_ms": n(ms(started_at)),
            **({"deadline": s(deadline.isoformat())} if deadline else {})})

    async def _put_if_absent(self, item: Item) -> Item | None:
        """Put `item` unless its key exists; the existing item if it did (None if written)."""
        try:
            await self.client.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)",
                                       ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except Exception as exc:
            if not is_condition_failure(exc):
                raise
            old: Item | None = getattr(exc, "response", {}).get("Item")
            if old is None:  # an endpoint that does not return it (older moto): read it
                old = (await self.client.get_item(TableName=self.table, Key={"pk": item["pk"], "sk": item["sk"]},
                                                  ConsistentRead=True)).get("Item")
            return old or item
        return None

    async def batch_decrement_and_check(
        self, flow_id: str, results: Sequence[FlowStepResult], *, abort_on_failure: bool = False,
        abort_steps: Collection[int] = (), keep_until: datetime | None = None,
    ) -> BarrierDecrementResult:
        unique = list({r.step_index: r for r in reversed(results)}.values())
        self.calls += len(unique)
        kept = self._kept(keep_until)

        async def record(result: FlowStepResult) -> FlowStepResult:
            old = await self._put_if_absent({"pk": _flow_key(flow_id), "sk": _step_key(result.step_index),
                                             "result": s(result.model_dump_json()), **kept})
            return FlowStepResult.model_validate_json(old["result"]["S"]) if old else result

        recorded = await bounded_gather(unique, record)
        by_shard: dict[int, list[FlowStepResult]] = defaultdict(list)
        for result in recorded:
            by_shard[result.step_index // SHARD_STEPS].append(result)
        counted = await bounded_gather(list(by_shard.items()), lambda kv: self._count(flow_id, *kv))
        if any(item is None for item in counted):
            return BarrierDecrementResult(-1)  # an unknown flow (never started, or expired)
        if not kept and any("expires_at" in item for item in counted if item):  # reported after `retire` began
            await self._date(flow_id, [_step_key(r.step_index) for r in unique])
        meta = None
        for k, item in zip(by_shard, counted, strict=True):
            if item and _size(item, "done") >= int(item["size"]["N"]):
                meta = await self._mark_full(flow_id, k, item)
        complete = meta is not None and _size(meta, "full") >= int(meta["shards"]["N"])
        pending = 0 if complete else max(max(int(i["size"]["N"]) - _size(i, "done") for i in counted if i), 1)
        if any(r.status == "fail" and (abort_on_failure or r.step_index in abort_steps) for r in recorded):
            return await self._close_reporting(flow_id, BarrierState.ABORTED, pending)
        if meta is not None:
            state = BarrierState(meta["state"]["S"])
            if state is not BarrierState.ACTIVE:
                return BarrierDecrementResult(-1, state, bool(meta["join_dispatched"]["BOOL"]))
            if complete:
                return await self._close_reporting(flow_id, BarrierState.COMPLETE, 0)
        return BarrierDecrementResult(pending, BarrierState.ACTIVE)

    async def _count(self, flow_id: str, shard: int, results: list[FlowStepResult]) -> Item | None:
        """Add the steps to their shard's sets; the shard item after, None for an unknown flow."""
        self.calls += 1
        adds = {":done": _numbers([r.step_index for r in results])}
        for status, attr in (("fail", "failed"), ("ignored", "ignored")):
            indices = [r.step_index for r in results if r.status == status]
            if indices:
                adds[f":{attr}"] = _numbers(indices)
        return await self._update_existing({"pk": _flow_key(flow_id), "sk": _shard_key(shard)},
                                           "ADD " + ", ".join(f"{key[1:]} {key}" for key in adds), adds)

    async def _update_existing(self, key: Item, update: str, values: Item,
                               names: dict[str, str] | None = None) -> Item | None:
        """One update of an item that must exist; the item after, or None if it does not."""
        return await update_if(self.client, TableName=self.table, Key=key, UpdateExpression=update,
                               ConditionExpression="attribute_exists(pk)", ExpressionAttributeValues=values,
                               **({"ExpressionAttributeNames": names} if names else {}))

    async def _mark_full(self, flow_id: str, shard: int, counted: Item) -> Item | None:
        """Add a full shard to the meta item's `full` set, with its failure counts (setting a
        count is idempotent like the set), so a complete flow's counts need no other read."""
        self.calls += 1
        return await self._update_existing(
            {"pk": _flow_key(flow_id), "sk": s(_META)},
            "ADD #f :k SET failed_in.#s = :failed, ignored_in.#s = :ignored",
            {":k": _numbers([shard]), ":failed": n(_size(counted, "failed")), ":ignored": n(_size(counted, "ignored"))},
            {"#f": "full", "#s": str(shard)})

    async def _close_reporting(self, flow_id: str, state: BarrierState, pending: int) -> BarrierDecrementResult:
        if await self.close(flow_id, state):
            return BarrierDecrementResult(pending, state, closed=True)
        snapshot = await self.get(flow_id)
        if snapshot is None:
            return BarrierDecrementResult(-1)
        return BarrierDecrementResult(-1, snapshot.state, snapshot.join_dispatched)

    async def retire(self, flow_id: str, after: int = -1, limit: int = 100) -> int | None:
        """The shard items first (a step reported later sees its shard dated and dates itself),
        then a page of step items; each update only where no expiry is set yet."""
        pk = _flow_key(flow_id)
        if after < 0:
            shards = await self._keys({"TableName": self.table, "KeyConditionExpression": "pk = :pk AND "
                                       "begins_with(sk, :count)", "ExpressionAttributeValues": {
                                           ":pk": pk, ":count": s("count#")}})
            await self._date(flow_id, shards)
        steps = await self._keys({"TableName": self.table, "KeyConditionExpression": "pk = :pk AND sk BETWEEN "
                                  ":from AND :to", "ExpressionAttributeValues": {
                                      ":pk": pk, ":from": _step_key(after + 1), ":to": s("step#9999999")}}, limit)
        await self._date(flow_id, steps)
        return int(steps[-1]["S"].removeprefix("step#")) if len(steps) == limit else None

    async def _keys(self, request: dict[str, Any], limit: int | None = None) -> list[dict[str, str]]:
        """The sort keys a Query finds (every page, up to `limit`)."""
        keys: list[dict[str, str]] = []
        request = {**request, "ConsistentRead": True, "ProjectionExpression": "sk"}
        while limit is None or len(keys) < limit:
            self.calls += 1
            response = await self.client.query(**request, **({"Limit": limit - len(keys)} if limit else {}))
            keys += [item["sk"] for item in response["Items"]]
            if "LastEvaluatedKey" not in response:
                break
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return keys

    async def _date(self, flow_id: str, sort_keys: list[dict[str, str]]) -> None:
        expires = self._expiry(None)
        self.calls += len(sort_keys)
        await bounded_gather(sort_keys, lambda sk: update_if(
            self.client, TableName=self.table, Key={"pk": _flow_key(flow_id), "sk": sk},
            UpdateExpression="SET expires_at = :e", ConditionExpression="attribute_exists(pk) AND "
            "attribute_not_exists(expires_at)", ExpressionAttributeValues={":e": expires}))

    async def step_results_page(self, flow_id: str, after: int = -1, limit: int = 100) -> list[FlowStepResult]:
        """Up to `limit` step results after step `after`, fewer only at the end: a Query
        returns at most 1 MB, so pages of large results follow LastEvaluatedKey."""
        request: dict[str, Any] = {
            "TableName": self.table, "ConsistentRead": True,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :from AND :to",
            "ExpressionAttributeValues": {":pk": _flow_key(flow_id), ":from": _step_key(after + 1),
                                          ":to": s("step#9999999")}}
        results: list[FlowStepResult] = []
        while len(results) < limit:
            self.calls += 1
            response = await self.client.query(**request, Limit=limit - len(results))
            results += [FlowStepResult.model_validate_json(i["result"]["S"]) for i in response["Items"]]
            if "LastEvaluatedKey" not in response:
                break
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return results

    async def get_step_results(self, flow_id: str) -> list[FlowStepResult]:
        results: list[FlowStepResult] = []
        while page := await self.step_results_page(flow_id, results[-1].step_index if results else -1, 1000):
            results += page
        return results

    async def step_counts(self, flow_id: str) -> StepCounts:
        """From the meta item alone once every shard is full (a complete flow); else from the
        shard items (a flow closed early: one query of a hundredth of its steps)."""
        self.calls += 1
        meta = (await self.client.get_item(TableName=self.table, Key={"pk": _flow_key(flow_id), "sk": s(_META)},
                                           ConsistentRead=True)).get("Item")
        if meta is not None and _size(meta, "full") >= int(meta["shards"]["N"]):
            failed = sum(int(v["N"]) for v in meta["failed_in"]["M"].values())
            ignored = sum(int(v["N"]) for v in meta["ignored_in"]["M"].values())
            return StepCounts(succeeded=int(meta["total"]["N"]) - failed - ignored, failed=failed, ignored=ignored)
        counts = StepCounts()
        request: dict[str, Any] = {
            "TableName": self.table, "ConsistentRead": True,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :count)",
            "ExpressionAttributeValues": {":pk": _flow_key(flow_id), ":count": s("count#")}}
        while True:
            self.calls += 1
            response = await self.client.query(**request)
            for item in response["Items"]:
                failed, ignored = _size(item, "failed"), _size(item, "ignored")
                counts.failed += failed
                counts.ignored += ignored
                counts.succeeded += _size(item, "done") - failed - ignored
            if "LastEvaluatedKey" not in response:
                return counts
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    async def close(self, flow_id: str, state: BarrierState) -> bool:
        self.calls += 1
        try:
            await self.client.update_item(
                TableName=self.table, Key={"pk": _flow_key(flow_id), "sk": s(_META)},
                UpdateExpression="SET #st = :to, expires_at = :exp, join_dispatched = :joined",
                ConditionExpression="#st = :active", ExpressionAttributeNames={"#st": "state"},
                ExpressionAttributeValues={":to": s(state.value), ":active": s(BarrierState.ACTIVE.value),
                                           ":exp": self._expiry(None),
                                           ":joined": {"BOOL": state is BarrierState.CANCELLED}})
        except Exception as exc:
            if is_condition_failure(exc):
                return False
            raise
        return True

    async def get(self, flow_id: str) -> BarrierSnapshot | None:
        self.calls += 1
        response = await self.client.get_item(
            TableName=self.table, Key={"pk": _flow_key(flow_id), "sk": s(_META)}, ConsistentRead=True)
        item: Item | None = response.get("Item")
        return _snapshot(flow_id, item) if item is not None else None

    async def list_flows(self, limit: int = 50, cursor: str | None = None) -> FlowPage:
        """Each bucket of the flows index, newest first, read on from where the last page
        stopped in it (see bucket_pages.py)."""
        async def accept(run: list[IndexRow]) -> dict[str, BarrierSnapshot]:
            snapshots = [await self.get(row.item_id) for row in run]
            return {snap.flow_id: snap for snap in snapshots if snap is not None}

        self.calls += FLOW_BUCKETS
        flows, after = await read_page(self.client, self.table, _FLOWS, [f"b{k}" for k in range(FLOW_BUCKETS)],
                                       limit=min(max(limit, 1), MAX_PAGE), cursor=cursor, accept=accept)
        return FlowPage(flows, after)

    async def mark_join_dispatched(self, flow_id: str) -> None:
        self.calls += 1
        try:
            await self.client.update_item(
                TableName=self.table, Key={"pk": _flow_key(flow_id), "sk": s(_META)},
                UpdateExpression="SET join_dispatched = :t", ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":t": {"BOOL": True}})
        except Exception as exc:
            if not is_condition_failure(exc):
                raise


_FLOWS = BucketIndex(FLOWS_INDEX, "flow_bucket", "started_ms", ("pk", "sk"),
                     lambda item: item["pk"]["S"].removeprefix("flow#"))


def _bucket(flow_id: str) -> str:
    return f"b{zlib.crc32(flow_id.encode()) % FLOW_BUCKETS}"



def _snapshot(flow_id: str, item: Item) -> BarrierSnapshot:
    total = int(item["total"]["N"])
    full = [int(k) for k in item.get("full", {}).get("NS", [])]
    counted = sum(min(SHARD_STEPS, total - k * SHARD_STEPS) for k in full)
    return BarrierSnapshot(
        flow_id=flow_id, total_steps=total, remaining=total - counted,
        state=BarrierState(item["state"]["S"]), started_at=datetime.fromisoformat(item["started_at"]["S"]),
        join_dispatched=bool(item["join_dispatched"]["BOOL"]),
        deadline=datetime.fromisoformat(item["deadline"]["S"]) if "deadline" in item else None)
