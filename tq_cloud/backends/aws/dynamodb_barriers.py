"""Flow barriers in DynamoDB: a `meta` item per flow, a `count` item per shard of 100 steps,
and a `pack` item per report and shard holding the results that report brought. No
transactions, and no report reads what others recorded.

- A report's results of one shard go in one pack item first (a put; its key is a hash of what
  it holds, so a replay writes the same item), so a counted step always has its result. Packs
  stay under DynamoDB's 400 KB item: a report of large results writes several.
- Then one update of the shard item counts them: it adds their indices to the `done` number
  set (idempotent: a step reported twice, or replayed after a crash, counts once) and sets,
  for each step, `o<index>` to the pack and the step's status only if it has none yet
  (`if_not_exists`: the first report of a step wins, set-if-absent as a conditional put
  would, and the join reads that pack's result). A shard item takes the reports of at most
  100 steps, so no single item is hot for a large flow; concurrent updates of one item are
  serialised by DynamoDB, never cancelled as transactions are.
- So a report of n steps of one shard costs one put of their results (about n times a result's size
  in write units, at least one) and one update, instead of a conditional put per step: a
  50-step flow reported in one batch writes about 0.1 unit per step rather than 2.
- Flows started before packs (their shard items have no `packed` attribute) go on as they
  began: a conditional put per step (`step#` items, first write wins) and its status in the
  shard's `failed` or `ignored` number set; readers take both shapes.
- The report that finds its shard full adds the shard's number to the meta item's `full` set
  (idempotent too); the one that finds every shard full closes the flow with a conditional
  update from `active`, which exactly one caller wins. A failure that aborts closes it the
  same way.
The join reads the results a page at a time (`step_results_page`: a shard item and its packs).

Retention follows the flow's life: an active flow's meta item never expires; once closed, it
expires `ttl` after the close. Pack, step and shard items expire `ttl` after the later of the
flow's start and its deadline (its timeout), so a flow with a 30-day timeout keeps its steps
30 days + `ttl`; a flow without a deadline keeps them until `retire` dates them after its close.
"""

from __future__ import annotations

import hashlib
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
PACK_BYTES = 300 * 1024
"""Results a pack item holds at most (DynamoDB items are at most 400 KB; a stored result is at
most 256 KB, so one always fits)."""
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


def _pack_key(shard: int, pack: str) -> dict[str, str]:
    return s(f"pack#{shard:05d}#{pack}")


def _owners(item: Item) -> dict[int, str]:
    """A packed shard item's first report of each step: `pack/status` by step index."""
    return {int(k[1:]): v["S"] for k, v in item.items() if k[0] == "o" and k[1:].isdigit()}


def _status_count(item: Item, status: str, attr: str) -> int:
    """Steps of a shard with `status`: its owners' (packed), or its number set `attr` (before packs)."""
    return _size(item, attr) + sum(1 for v in _owners(item).values() if v.endswith("/" + status))


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
            await self._put_if_absent({"pk": _flow_key(flow_id), "sk": _shard_key(k), **kept, "packed": {"BOOL": True},
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
        kept = self._kept(keep_until)
        by_shard: dict[int, list[FlowStepResult]] = defaultdict(list)
        for result in sorted(unique, key=lambda r: r.step_index):
            by_shard[result.step_index // SHARD_STEPS].append(result)
        reports = await bounded_gather(list(by_shard.items()), lambda kv: self._report(flow_id, *kv, kept))
        counted = [item for item, _, _ in reports]
        recorded = [r for _, shard_results, _ in reports for r in shard_results]
        if any(item is None for item in counted):
            return BarrierDecrementResult(-1)  # an unknown flow (never started, or expired)
        if not kept and any("expires_at" in item for item in counted if item):  # reported after `retire` began
            await self._date(flow_id, [key for _, _, keys in reports for key in keys])
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

    async def _report(self, flow_id: str, shard: int, results: list[FlowStepResult],
                      kept: Item) -> tuple[Item | None, list[FlowStepResult], list[dict[str, str]]]:
        """Record and count one shard's steps of a report: the shard item after (None for an
        unknown flow), the steps' first recorded results, and the keys of the items written."""
        packs = _packs(results)
        await bounded_gather(packs, lambda pack: self._put(flow_id, shard, *pack, kept))
        owner = {r.step_index: f"{pack_id}/{r.status}" for pack_id, part in packs for r in part}
        names = {f"#o{k}": f"o{index}" for k, index in enumerate(owner)}
        values: Item = {":done": _numbers(owner)} | {f":o{k}": s(value) for k, value in enumerate(owner.values())}
        self.calls += 1
        try:
            response = await self.client.update_item(
                TableName=self.table, Key={"pk": _flow_key(flow_id), "sk": _shard_key(shard)}, ReturnValues="ALL_NEW",
                UpdateExpression="ADD done :done SET " + ", ".join(
                    f"#o{k} = if_not_exists(#o{k}, :o{k})" for k in range(len(owner))),
                ConditionExpression="attribute_exists(pk) AND attribute_exists(packed)",
                ExpressionAttributeNames=names, ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except Exception as exc:
            if not is_condition_failure(exc):
                raise
            await self._date(flow_id, [_pack_key(shard, pack_id) for pack_id, _ in packs])  # not read: let them go
            if not getattr(exc, "response", {}).get("Item") and not await self._exists(flow_id, shard):
                return None, results, []
            old, recorded = await self._report_unpacked(flow_id, shard, results, kept)
            return old, recorded, [_step_key(r.step_index) for r in results]
        item: Item = response["Attributes"]
        recorded = [r if item[f"o{r.step_index}"]["S"] == owner[r.step_index]
                    else await self._first_result(flow_id, shard, r.step_index, item[f"o{r.step_index}"]["S"])
                    for r in results]
        return item, recorded, [_pack_key(shard, pack_id) for pack_id, _ in packs]

    async def _put(self, flow_id: str, shard: int, pack_id: str, results: list[FlowStepResult], kept: Item) -> None:
        self.calls += 1
        await self.client.put_item(TableName=self.table, Item={
            "pk": _flow_key(flow_id), "sk": _pack_key(shard, pack_id), **kept,
            "results": {"M": {str(r.step_index): s(r.model_dump_json(exclude_defaults=True)) for r in results}}})

    async def _exists(self, flow_id: str, shard: int) -> bool:
        self.calls += 1
        return "Item" in await self.client.get_item(
            TableName=self.table, Key={"pk": _flow_key(flow_id), "sk": _shard_key(shard)}, ConsistentRead=True,
            ProjectionExpression="pk")

    async def _first_result(self, flow_id: str, shard: int, index: int, owner: str) -> FlowStepResult:
        """The result of the report that counted step `index` first (another one's pack)."""
        self.calls += 1
        pack_id = owner.split("/", 1)[0]
        item = (await self.client.get_item(TableName=self.table, Key={"pk": _flow_key(flow_id), "sk": _pack_key(
            shard, pack_id)}, ConsistentRead=True)).get("Item", {})
        return FlowStepResult.model_validate_json(item["results"]["M"][str(index)]["S"])

    async def _report_unpacked(self, flow_id: str, shard: int, results: list[FlowStepResult],
                               kept: Item) -> tuple[Item | None, list[FlowStepResult]]:
        """A flow started before packs: a conditional put per step, then its shard's sets."""
        self.calls += len(results)

        async def record(result: FlowStepResult) -> FlowStepResult:
            old = await self._put_if_absent({"pk": _flow_key(flow_id), "sk": _step_key(result.step_index),
                                             "result": s(result.model_dump_json()), **kept})
            return FlowStepResult.model_validate_json(old["result"]["S"]) if old else result

        recorded = await bounded_gather(results, record)
        self.calls += 1
        adds = {":done": _numbers([r.step_index for r in recorded])}
        for status, attr in (("fail", "failed"), ("ignored", "ignored")):
            indices = [r.step_index for r in recorded if r.status == status]
            if indices:
                adds[f":{attr}"] = _numbers(indices)
        item = await self._update_existing({"pk": _flow_key(flow_id), "sk": _shard_key(shard)},
                                           "ADD " + ", ".join(f"{key[1:]} {key}" for key in adds), adds)
        return item, recorded

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
            {":k": _numbers([shard]), ":failed": n(_status_count(counted, "fail", "failed")),
             ":ignored": n(_status_count(counted, "ignored", "ignored"))},
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
        then a page of step items (flows started before packs) or of pack items from step
        `after`'s shard on, each update only where no expiry is set yet. Packs already dated
        are passed over by the query, so a page that stops inside a shard resumes there."""
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
        if len(steps) == limit:
            return int(steps[-1]["S"].removeprefix("step#"))
        first = (after + 1) // SHARD_STEPS
        packs = await self._keys({"TableName": self.table, "KeyConditionExpression": "pk = :pk AND sk BETWEEN "
                                  ":from AND :to", "FilterExpression": "attribute_not_exists(expires_at)",
                                  "ExpressionAttributeValues": {":pk": pk, ":from": s(f"pack#{first:05d}#"),
                                                                ":to": s("pack#99999#~")}}, limit - len(steps))
        await self._date(flow_id, packs)
        if len(steps) + len(packs) < limit:
            return None
        return max(int(packs[-1]["S"].split("#")[1]) * SHARD_STEPS - 1, 0) if packs else int(steps[-1]["S"][5:])

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
        """Up to `limit` step results after step `after`, fewer only at the end: a shard at a
        time, its item's first report of each step (`o<index>`) read from its packs (a query:
        at most 1 MB a page, so pages follow LastEvaluatedKey), or, for a flow started before
        packs, its step items."""
        results: list[FlowStepResult] = []
        shard = (after + 1) // SHARD_STEPS
        while len(results) < limit:
            self.calls += 1
            item = (await self.client.get_item(TableName=self.table, Key={"pk": _flow_key(flow_id), "sk": _shard_key(
                shard)}, ConsistentRead=True)).get("Item")
            if item is None:
                break
            low = max(after + 1, shard * SHARD_STEPS)
            if "packed" in item:
                owners = {i: o.split("/", 1)[0] for i, o in sorted(_owners(item).items()) if i >= low}
                packs = await self._pack_results(flow_id, shard) if owners else {}
                results += [FlowStepResult.model_validate_json(packs[pack][str(i)]["S"]) for i, pack in owners.items()]
            else:
                results += await self._step_items(flow_id, low, (shard + 1) * SHARD_STEPS - 1, limit - len(results))
            shard += 1
        return results[:limit]

    async def _pack_results(self, flow_id: str, shard: int) -> dict[str, Item]:
        """The results each pack of a shard holds, by pack."""
        request: dict[str, Any] = {
            "TableName": self.table, "ConsistentRead": True,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :p)",
            "ExpressionAttributeValues": {":pk": _flow_key(flow_id), ":p": s(f"pack#{shard:05d}#")}}
        packs: dict[str, Item] = {}
        while True:
            self.calls += 1
            response = await self.client.query(**request)
            packs |= {i["sk"]["S"].rsplit("#", 1)[1]: i["results"]["M"] for i in response["Items"]}
            if "LastEvaluatedKey" not in response:
                return packs
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    async def _step_items(self, flow_id: str, low: int, high: int, limit: int) -> list[FlowStepResult]:
        request: dict[str, Any] = {
            "TableName": self.table, "ConsistentRead": True,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :from AND :to",
            "ExpressionAttributeValues": {":pk": _flow_key(flow_id), ":from": _step_key(low), ":to": _step_key(high)}}
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
                failed, ignored = _status_count(item, "fail", "failed"), _status_count(item, "ignored", "ignored")
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


def _packs(results: list[FlowStepResult]) -> list[tuple[str, list[FlowStepResult]]]:
    """`results` in runs of at most PACK_BYTES, each with its id: a hash of what it holds."""
    packs: list[list[tuple[FlowStepResult, str]]] = [[]]
    size = 0
    for result in results:
        text = result.model_dump_json(exclude_defaults=True)
        if packs[-1] and size + len(text) > PACK_BYTES:
            packs.append([])
            size = 0
        packs[-1].append((result, text))
        size += len(text)
    return [(hashlib.blake2b("\n".join(f"{r.step_index}:{t}" for r, t in pack).encode(), digest_size=10).hexdigest(),
             [r for r, _ in pack]) for pack in packs]


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
