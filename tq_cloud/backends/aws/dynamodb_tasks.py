"""Tasks in DynamoDB, with every transition conditional.

Item: `id` (key), `status`, `body` (the task as JSON), `retry_count` and `deferrals` (for the
retry condition), `execute_at_ms`, and three sparse GSI keys: `due_bucket` while scheduled,
`running_bucket` while processing, `finished_key` (the status and a bucket) with `finished_ms`
once final (for listings: `tq-cloud tasks list`). Each GSI is partitioned by a bucket (a hash of
the id), so no partition key is hot however many tasks come due or finish at once; the sweeper
and listings query every bucket. Finished tasks get `expires_at` for DynamoDB's TTL.

pynamodb is synchronous, so using it here would block the event loop; the async client with
explicit condition expressions does the job instead.
"""

from __future__ import annotations

import hashlib
import logging
import random
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from tq_cloud.backends.aws.bucket_pages import BucketIndex, IndexRow, read_page
from tq_cloud.backends.aws.dynamo import (
    Item,
    batch_get_items,
    bounded_gather,
    due_ms,
    is_condition_failure,
    ms,
    n,
    s,
    tolerant_gather,
    update_if,
)
from tq_cloud.backends.aws.dynamodb_flow_state import DynamoFlowState
from tq_cloud.core.codec import UNDECODABLE_QUEUE, UNDECODABLE_TYPE, encode_task, usable_id
from tq_cloud.domain.limits import RESERVED_ID_PREFIX, failure_row
from tq_cloud.domain.task import ExecutionStats, Task, TaskProgress, TaskStatus
from tq_cloud.errors import PayloadTooLargeError
from tq_cloud.ports.paging import MAX_PAGE
from tq_cloud.ports.storage import NOT_STAMPED, CancelOutcome, TaskPage, TaskQuery

DYNAMODB_MAX_ITEM_BYTES = 400 * 1024
_ITEM_OVERHEAD = 1024
_TERMINAL = {":executed": s("executed"), ":failed": s("failed"), ":ignored": s("ignored"),
             ":cancelled": s("cancelled")}
_NOT_TERMINAL = "NOT (#s IN (:executed, :failed, :ignored, :cancelled))"
_NOT_AHEAD = "retry_count <= :rc"
"""A task's outcome lands only on a row at its attempt or an earlier one: never over a re-drive
or a retry written since (a deferral, which uses no attempt, is not ahead)."""
log = logging.getLogger("tq_cloud.dynamodb")
DUE_INDEX = "due"
BUCKETS_ITEM = f"{RESERVED_ID_PREFIX}meta#buckets"
"""A reserved id in the tasks table: the largest TQ_DUE_BUCKETS any writer used."""
MARK_PREFIX = f"{RESERVED_ID_PREFIX}mark#"
"""Reserved ids of the tasks table's marks (see TaskStorage.get_marks)."""
RUNNING_INDEX = "running"
FINISHED_INDEX = "finished"


def _index(name: str, bucket_attr: str, sort_attr: str) -> BucketIndex:
    return BucketIndex(name, bucket_attr, sort_attr, ("id",), lambda item: item["id"]["S"])


_INDEXES = {TaskStatus.SCHEDULED: _index(DUE_INDEX, "due_bucket", "execute_at_ms"),
            TaskStatus.PROCESSING: _index(RUNNING_INDEX, "running_bucket", "processing_ms")}
_FINISHED = _index(FINISHED_INDEX, "finished_key", "finished_ms")



def _at(value: dict[str, str]) -> datetime:
    return datetime.fromtimestamp(int(value["N"]) / 1000, UTC)


class DynamoDbAdapter(DynamoFlowState):
    """The task store on DynamoDB: scheduled, failed, stored and kept rows, with conditional
    writes for every transition and bucketed sparse indexes for due, running and finished rows.

    Example:
        storage = DynamoDbAdapter(clients.dynamodb, settings.tasks_table)
    """
    def __init__(self, client: Any, table: str, *, buckets: int = 8,
                 finished_ttl: timedelta = timedelta(days=7)) -> None:
        self.client = client
        self.table = table
        self.buckets = buckets
        self.finished_ttl = finished_ttl
        self._buckets_recorded = False

    @property
    def max_item_bytes(self) -> int:
        return DYNAMODB_MAX_ITEM_BYTES - _ITEM_OVERHEAD

    def _bucket(self, task_id: str) -> str:
        return f"b{zlib.crc32(task_id.encode()) % self.buckets}"

    async def _remember_buckets(self) -> None:
        """Record, once per process, the largest bucket count any writer used, so that a sweeper
        configured with fewer (TQ_DUE_BUCKETS lowered between deploys) still sweeps every bucket
        that holds rows."""
        if self._buckets_recorded:
            return
        try:
            await self.client.update_item(
                TableName=self.table, Key={"id": s(BUCKETS_ITEM)}, UpdateExpression="SET buckets = :b",
                ConditionExpression="attribute_not_exists(buckets) OR buckets < :b",
                ExpressionAttributeValues={":b": n(self.buckets)})
        except Exception as exc:
            if not is_condition_failure(exc):
                raise
        self._buckets_recorded = True

    async def _swept_buckets(self) -> list[str]:
        response = await self.client.get_item(TableName=self.table, Key={"id": s(BUCKETS_ITEM)}, ConsistentRead=True)
        recorded = int(response.get("Item", {}).get("buckets", {}).get("N", 0))
        return [f"b{i}" for i in range(max(self.buckets, recorded))]

    def _body(self, task: Task) -> str:
        body = encode_task(task)
        if len(body) > self.max_item_bytes:
            raise PayloadTooLargeError(task.id, len(body), self.max_item_bytes, "the DynamoDB task table")
        return body.decode()

    def _values(self, task: Task, status: TaskStatus, now: datetime | None = None,
                keep_for: timedelta | None = None) -> Item:
        """Attribute values for an item holding `task` in `status`."""
        stats = task.execution_stats
        values: Item = {
            ":status": s(status.value), ":body": s(self._body(task)),
            ":rc": n(stats.retry_count), ":d": n(stats.deferrals),
            ":at": n(due_ms(task.execute_at or task.created_at or datetime.now(UTC))),
        }
        if status is TaskStatus.SCHEDULED:
            values[":due"] = s(self._bucket(task.key))
        elif status is TaskStatus.PROCESSING:
            values[":run"] = s(self._bucket(task.key))
            values[":pms"] = n(ms(task.processing_started_at or now or datetime.now(UTC)))
        else:
            at = now or datetime.now(UTC)
            values.update(self._finished_values(task.key, status, at, keep_for))
        return values

    def _finished_values(self, task_id: str, status: TaskStatus, at: datetime,
                         keep_for: timedelta | None = None) -> Item:
        """A final row's TTL and `finished` index keys."""
        return {":exp": n(int((at + (keep_for or self.finished_ttl)).timestamp())),
                ":fin": s(f"{status.value}#{self._bucket(task_id)}"), ":fms": n(ms(at))}

    @staticmethod
    def _update_expression(values: Item, clear_cancel: bool = False) -> str:
        """A new state of the task: no run holds it yet, no progress; a cancel request made
        while it ran outlives it (its next attempt honours it) unless an operator re-drives it."""
        sets = ["#s = :status", "body = :body", "retry_count = :rc", "deferrals = :d", "execute_at_ms = :at"]
        removes: list[str] = ["lease_owner", "lease_until", "progress", "cancel_reason", "cancel_id"]
        if clear_cancel:
            removes.append("cancel_requested")
        for attr, key in (("due_bucket", ":due"), ("running_bucket", ":run"), ("expires_at", ":exp"),
                          ("finished_key", ":fin"), ("finished_ms", ":fms")):
            (sets if key in values else removes).append(f"{attr} = {key}" if key in values else attr)
        if ":pms" in values:
            sets.append("processing_ms = :pms")
        return "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")

    async def _update(self, task: Task, status: TaskStatus, condition: str, extra: Item | None = None,
                      now: datetime | None = None, keep_for: timedelta | None = None,
                      clear_cancel: bool = False) -> Item | None:
        """One conditional upsert; returns the new item, or None when the condition failed."""
        values = {**self._values(task, status, now, keep_for), **(extra or {})}
        return await self._conditional(task.key, self._update_expression(values, clear_cancel), condition, values)

    async def _conditional(self, task_id: str, update: str, condition: str, values: Item) -> Item | None:
        await self._remember_buckets()
        names = {"ExpressionAttributeNames": {"#s": "status"}} if "#s" in update + condition else {}
        return await update_if(self.client, TableName=self.table, Key={"id": s(task_id)}, UpdateExpression=update,
                               ConditionExpression=condition, ExpressionAttributeValues=values, **names)

    @staticmethod
    def _decode(item: Item) -> Task:
        task = Task.model_validate_json(item["body"]["S"])
        update: dict[str, Any] = {"status": TaskStatus(item["status"]["S"])}
        if "processing_ms" in item and update["status"] is TaskStatus.PROCESSING:
            update["processing_started_at"] = _at(item["processing_ms"])
        if "lease_until" in item:
            update["lease_until"] = _at(item["lease_until"])
        if "cancel_requested" in item:
            update["cancel_requested"] = item["cancel_requested"]["S"]
        if "progress" in item:
            update["progress"] = TaskProgress.model_validate_json(item["progress"]["S"])
        if "expires_at" in item:
            update["expires_at"] = datetime.fromtimestamp(int(item["expires_at"]["N"]), UTC)
        if "cancel_reason" in item:  # cancelled by `cancel`, which writes no body
            update["execution_stats"] = task.execution_stats.model_copy(update={
                "cancel_reason": item["cancel_reason"]["S"], "cancel_id": item.get("cancel_id", {}).get("S")})
        return task.model_copy(update=update)

    @classmethod
    def _decode_or_stand_in(cls, item: Item) -> Task:
        """A row as its task; one this version cannot decode (a newer producer in a rolling
        deploy) as a stand-in that says what it is: its id, status and attempt, the decode
        error, and why it cannot be re-driven. Listings and counts show it; nothing writes it."""
        try:
            return cls._decode(item)
        except ValueError as exc:
            reason = item.get("decode_error", {}).get("S") or \
                f"this version cannot decode the stored task: {str(exc)[:500]}"
            status = item.get("status", {}).get("S", "failed")
            return Task(
                id=item["id"]["S"], type=UNDECODABLE_TYPE, queue_id=UNDECODABLE_QUEUE, force_store=True,
                payload={"body": item["body"]["S"][:2000]},
                status=TaskStatus(status) if status in TaskStatus.__members__.values() else TaskStatus.FAILED,
                execution_stats=ExecutionStats(
                    retry_count=int(item.get("retry_count", {}).get("N", 0)),
                    deferrals=int(item.get("deferrals", {}).get("N", 0)), last_error=reason,
                    last_error_type="UndecodableRow", not_redrivable=reason))

    async def insert(self, tasks: Sequence[Task]) -> list[Task]:
        for task in tasks:
            self._body(task)

        async def put(task: Task) -> Task | None:
            item = await self._update(task, task.status, "attribute_not_exists(id)")
            return task if item is not None else None

        return [t for t in await bounded_gather(tasks, put) if t is not None]

    async def get(self, ids: Sequence[str]) -> list[Task]:
        found = {item["id"]["S"]: self._decode_or_stand_in(item) for item in await self._items(ids)
                 if "body" in item}  # not the table's own bookkeeping
        return [found[i] for i in ids if i in found]

    async def _items(self, ids: Sequence[str], projection: str | None = None) -> list[Item]:
        return await batch_get_items(self.client, self.table, ids, projection)

    async def schedule_retry(self, tasks: Sequence[Task]) -> list[Task]:
        condition = (f"attribute_not_exists(id) OR ({_NOT_TERMINAL} AND (retry_count < :rc "
                     "OR (retry_count = :rc AND deferrals < :d)))")

        async def retry(task: Task) -> Task | None:
            return task if await self._update(task, task.status, condition, _TERMINAL) else None

        return [t for t in await bounded_gather(tasks, retry) if t is not None]

    async def mark_executed(self, tasks: Sequence[Task], at: datetime, keep_for: timedelta | None = None) -> None:
        done = [t.model_copy(update={"status": TaskStatus.EXECUTED, "updated_at": at}) for t in tasks]
        await bounded_gather(done, lambda t: self._update(
            t, TaskStatus.EXECUTED, f"attribute_exists(id) AND {_NOT_TERMINAL} AND {_NOT_AHEAD}", _TERMINAL, at,
            keep_for))

    async def mark_cancelled(self, tasks: Sequence[Task], at: datetime) -> None:
        await self._finish([t.model_copy(update={"status": TaskStatus.CANCELLED, "updated_at": at,
                                                 "force_store": True}) for t in tasks], at)

    async def cancel(self, task_id: str, reason: str, now: datetime, cancel_id: str = "") -> CancelOutcome:
        """A waiting row (no live lease) becomes `cancelled` without a read; else one a live run
        holds keeps the request; else one read tells finished from unknown."""
        if not usable_id(task_id):
            return CancelOutcome.UNKNOWN
        waiting = {":scheduled": s("scheduled"), ":processing": s("processing")}
        cancelled = await self._conditional(
            task_id, "SET #s = :cancelled, cancel_reason = :r, cancel_id = :cid, expires_at = :exp, "
            "finished_key = :fin, finished_ms = :fms "
            "REMOVE due_bucket, running_bucket, processing_ms, lease_owner, lease_until, progress",
            "#s IN (:scheduled, :processing) AND (attribute_not_exists(lease_owner) OR lease_until < :now)",
            {**waiting, ":cancelled": s("cancelled"), ":r": s(reason), ":cid": s(cancel_id), ":now": n(ms(now)),
             **self._finished_values(task_id, TaskStatus.CANCELLED, now)})
        if cancelled is not None:
            return CancelOutcome.CANCELLED
        if await self._conditional(task_id, "SET cancel_requested = :r", "#s IN (:scheduled, :processing)",
                                   {**waiting, ":r": s(reason)}) is not None:
            return CancelOutcome.REQUESTED
        response = await self.client.get_item(TableName=self.table, Key={"id": s(task_id)}, ConsistentRead=True,
                                              ProjectionExpression="id, body")
        return CancelOutcome.FINISHED if "body" in response.get("Item", {}) else CancelOutcome.UNKNOWN

    async def claim_dedup(self, scope: str, task_id: str, now: datetime, window: timedelta) -> str:
        """An item `_tq#dedup#<sha256 of the scope>`: its holder and until when (its TTL after).
        One conditional UpdateItem; a refused one returns the holder with its failure
        (ReturnValuesOnConditionCheckFailure), so a duplicate costs no read."""
        until = now + window
        try:
            await self.client.update_item(
                TableName=self.table, Key=_dedup_key(scope),
                UpdateExpression="SET holder = :me, until_ms = :until, expires_at = :exp",
                ConditionExpression="attribute_not_exists(id) OR until_ms < :now OR holder = :me",
                ExpressionAttributeValues={":me": s(task_id), ":until": n(ms(until)), ":now": n(ms(now)),
                                           ":exp": n(int(until.timestamp()) + 3600)},
                ReturnValuesOnConditionCheckFailure="ALL_OLD")
            return task_id
        except Exception as exc:
            if not is_condition_failure(exc):
                raise
            old = getattr(exc, "response", {}).get("Item")
        if old is None:  # an emulator that does not return the item with the failure
            old = (await self.client.get_item(TableName=self.table, Key=_dedup_key(scope),
                                              ConsistentRead=True)).get("Item", {})
        holder: str = old.get("holder", {}).get("S", task_id)
        return holder

    async def release_dedup(self, scope: str, task_id: str) -> None:
        """Ends the claim now (an UpdateItem, as the claim: no other grant needed)."""
        await update_if(self.client, TableName=self.table, Key=_dedup_key(scope),
                        UpdateExpression="SET until_ms = :zero", ConditionExpression="holder = :me",
                        ExpressionAttributeValues={":zero": n(0), ":me": s(task_id)})

    async def get_marks(self, keys: Sequence[str]) -> dict[str, str]:
        ids = {f"{MARK_PREFIX}{k}": k for k in keys}
        return {ids[item["id"]["S"]]: item["mark"]["S"] for item in await self._items(list(ids))}

    async def set_mark(self, key: str, value: str | None) -> None:
        item_id = {"id": s(f"{MARK_PREFIX}{key}")}
        if value is None:
            await self.client.delete_item(TableName=self.table, Key=item_id)
        else:
            await self.client.put_item(TableName=self.table, Item={**item_id, "mark": s(value)})

    async def cancel_requests(self, ids: Sequence[str]) -> dict[str, str]:
        items = await self._items([i for i in ids if usable_id(i)], "id, cancel_requested")
        return {item["id"]["S"]: item["cancel_requested"]["S"] for item in items if "cancel_requested" in item}

    async def record_progress(self, task: Task, owner: str, progress: TaskProgress) -> bool:
        item = await self._conditional(
            task.key, "SET progress = :p", "#s = :processing AND lease_owner = :owner",
            {":p": s(progress.model_dump_json()), ":processing": s("processing"), ":owner": s(owner)})
        return item is not None and "cancel_requested" in item

    async def mark_failed(self, tasks: Sequence[Task], at: datetime) -> None:
        await self._finish([failure_row(t, TaskStatus.FAILED, at, None, self.max_item_bytes, failed_at=at)
                            for t in tasks], at)

    async def mark_ignored(self, tasks: Sequence[Task], reason: str, at: datetime) -> None:
        await self._finish([failure_row(t, TaskStatus.IGNORED, at, None, self.max_item_bytes,
                                         ignored_reason=reason) for t in tasks], at)

    async def keep_history(self, tasks: Sequence[Task], at: datetime, keep_for: timedelta | None = None) -> None:
        await self._finish([t.model_copy(update={"status": TaskStatus.EXECUTED, "updated_at": at}) for t in tasks],
                           at, keep_for)

    async def redrive(self, tasks: Sequence[Task], now: datetime) -> list[Task]:
        """(An operator's re-drive overrides an earlier cancel request: see `_update_expression`.)"""
        condition = "#s IN (:failed, :ignored) AND retry_count < :rc"
        values = {":failed": s("failed"), ":ignored": s("ignored")}

        async def back(task: Task) -> Task | None:
            return task if await self._update(task, TaskStatus.PROCESSING, condition, values, now,
                                              clear_cancel=True) else None

        return [t for t in await bounded_gather(tasks, back) if t is not None]

    async def list_tasks(self, query: TaskQuery) -> TaskPage:
        """Each bucket of the status's sparse index, newest first, read on from where the last
        page stopped in it (see bucket_pages.py); the rows read (BatchGetItem) and filtered by
        status and the query's other filters (`TaskQuery.matches`)."""
        status = query.status
        index = _INDEXES.get(status, _FINISHED)
        prefix = "" if status in _INDEXES else f"{status.value}#"

        async def accept(run: list[IndexRow]) -> dict[str, Task]:
            return {row.key: row for row in await self.get([r.item_id for r in run])
                    if row.status is status and query.matches(row)}

        tasks, cursor = await read_page(
            self.client, self.table, index, [prefix + b for b in await self._swept_buckets()],
            limit=min(max(query.limit, 1), MAX_PAGE), low=ms(query.since) if query.since else 0,
            high=ms(query.until) if query.until else None, cursor=query.cursor, accept=accept)
        return TaskPage(tasks, cursor)

    async def _finish(self, rows: list[Task], at: datetime, keep_for: timedelta | None = None) -> None:
        """Upsert final rows, except over a task that is already final or at a later attempt."""
        for row in rows:
            self._body(row)
        await bounded_gather(rows, lambda t: self._update(
            t, t.status, f"attribute_not_exists(id) OR ({_NOT_TERMINAL} AND {_NOT_AHEAD})", _TERMINAL, at,
            keep_for))

    async def _move(self, task_id: str, expect: TaskStatus, to: TaskStatus, now: datetime,
                    extra_condition: str = "", extra_values: Item | None = None) -> Item | None:
        """Move a stored task between scheduled and processing, keeping its body."""
        values: Item = {":expect": s(expect.value), ":to": s(to.value), ":bucket": s(self._bucket(task_id)),
                        **(extra_values or {})}
        if to is TaskStatus.PROCESSING:
            values[":pms"] = n(ms(now))
            update = ("SET #s = :to, running_bucket = :bucket, processing_ms = :pms "
                      "REMOVE due_bucket, lease_owner, lease_until")
        else:
            update = "SET #s = :to, due_bucket = :bucket REMOVE running_bucket, processing_ms, lease_owner, lease_until"
        return await self._conditional(task_id, update, "#s = :expect" + extra_condition, values)

    async def take_leases(self, tasks: Sequence[Task], owner: str, now: datetime,
                          expired_before: datetime, until: datetime | None = None) -> set[str]:
        """Each stored task's run lease: its row moves to (or stays) `processing` with
        `processing_ms` now, so stale recovery counts from the start of the run, not from when
        the record was queued, and `lease_until` the holder's deadline. Refused while another
        owner's lease is live, when the row holds another attempt or is final, or holds a cancel
        request (one asked after the run read the row: its attempt must not start)."""
        condition = ("#s IN (:processing, :scheduled) AND retry_count = :rc AND deferrals = :d AND "
                     "attribute_not_exists(cancel_requested) AND "
                     "(attribute_not_exists(lease_owner) OR lease_owner = :owner OR lease_until < :pms OR "
                     "(attribute_not_exists(lease_until) AND processing_ms < :expired))")
        ends = until or now + (now - expired_before)

        async def lease(task: Task) -> str | None:
            stats = task.execution_stats
            values: Item = {":processing": s("processing"), ":scheduled": s("scheduled"), ":rc": n(stats.retry_count),
                            ":d": n(stats.deferrals), ":owner": s(owner), ":expired": n(ms(expired_before)),
                            ":pms": n(ms(now)), ":bucket": s(self._bucket(task.key)), ":until": n(ms(ends))}
            update = ("SET #s = :processing, processing_ms = :pms, running_bucket = :bucket, lease_owner = :owner, "
                      "lease_until = :until REMOVE due_bucket")
            return task.key if await self._conditional(task.key, update, condition, values) else None

        return {k for k in await bounded_gather(tasks, lease) if k is not None}

    async def release_leases(self, tasks: Sequence[Task], owner: str) -> None:
        await bounded_gather(tasks, lambda t: self._conditional(
            t.key, "REMOVE lease_owner, lease_until", "lease_owner = :owner", {":owner": s(owner)}))

    async def reset_to_scheduled(self, tasks: Sequence[Task]) -> None:
        now = datetime.now(UTC)
        await bounded_gather(tasks, lambda t: self._move(
            t.key, TaskStatus.PROCESSING, TaskStatus.SCHEDULED, now,
            " AND retry_count = :rc AND deferrals = :d AND attribute_not_exists(lease_owner)",
            {":rc": n(t.execution_stats.retry_count), ":d": n(t.execution_stats.deferrals)}))

    async def _query_index(self, index: str, bucket_attr: str, sort_attr: str, bucket: str,
                          before_ms: int, limit: int) -> list[tuple[str, int]]:
        """Up to `limit` ids in one bucket of a sparse index up to `before_ms`, each with its sort
        value (a page cut short, at 1 MB, is followed by the next)."""
        request: dict[str, Any] = {
            "TableName": self.table, "IndexName": index, "KeyConditionExpression": f"{bucket_attr} = :b AND "
            f"{sort_attr} <= :t", "ExpressionAttributeValues": {":b": s(bucket), ":t": n(before_ms)}}
        found: list[tuple[str, int]] = []
        while len(found) < limit:
            response = await self.client.query(**request, Limit=limit - len(found))
            found += [(item["id"]["S"], int(item[sort_attr]["N"])) for item in response.get("Items", [])]
            if "LastEvaluatedKey" not in response:
                break
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return found

    async def claim_mature(self, now: datetime, limit: int) -> list[Task]:
        """Query every bucket, then claim candidates in random order until `limit` are won, so
        concurrent sweepers spread over the due tasks instead of all fighting for the first."""
        buckets = await self._swept_buckets()
        found = await tolerant_gather(buckets, lambda b: self._query_index(
            DUE_INDEX, "due_bucket", "execute_at_ms", b, ms(now), limit), "due query")
        candidates = [i for batch in found if batch for i, _ in batch]
        random.shuffle(candidates)
        claimed: list[Task] = []
        while candidates and len(claimed) < limit:
            wave, candidates = candidates[:limit - len(claimed)], candidates[limit - len(claimed):]
            items = await tolerant_gather(wave, lambda i: self._move(
                i, TaskStatus.SCHEDULED, TaskStatus.PROCESSING, now, " AND execute_at_ms <= :now",
                {":now": n(ms(now))}), "claim")
            for item in items:
                if item is None:
                    continue
                task = await self._decoded_or_failed(item)
                if task is not None:
                    claimed.append(task)
        return claimed

    async def _decoded_or_failed(self, item: Item) -> Task | None:
        """A claimed row as a task; one this version cannot decode (written by a newer producer
        in a rolling deploy, or before a rollback) is recorded as failed with the reason, and
        the rest of the sweep goes on."""
        try:
            return self._decode(item)
        except ValueError as exc:
            reason = f"this version cannot decode the stored task: {str(exc)[:500]}"
            log.error("task %s: %s; recorded as failed", item["id"]["S"], reason)
            now = datetime.now(UTC)
            await self._conditional(
                item["id"]["S"], "SET #s = :failed, decode_error = :e, expires_at = :exp, finished_key = :fin, "
                "finished_ms = :fms REMOVE due_bucket, running_bucket", "#s = :processing",
                {":failed": s("failed"), ":processing": s("processing"), ":e": s(reason),
                 ":exp": n(int((now + self.finished_ttl).timestamp())),
                 ":fin": s(f"failed#{self._bucket(item['id']['S'])}"), ":fms": n(ms(now))})
            return None

    async def recover_stale(self, processing_before: datetime, now: datetime) -> int:
        buckets = await self._swept_buckets()
        cutoff = ms(processing_before)
        found = await tolerant_gather(buckets, lambda b: self._query_index(
            RUNNING_INDEX, "running_bucket", "processing_ms", b, cutoff, 1000), "stale query")
        rows = [row for batch in found if batch for row in batch]
        unstamped = [i for i, at in rows if at == ms(NOT_STAMPED)]
        await tolerant_gather(unstamped, lambda i: self._conditional(
            i, "SET processing_ms = :now", "#s = :processing AND processing_ms = :unstamped",
            {":now": n(ms(now)), ":processing": s("processing"), ":unstamped": n(ms(NOT_STAMPED))}), "stamp")
        moved = await tolerant_gather([i for i, at in rows if at != ms(NOT_STAMPED)], lambda i: self._move(
            i, TaskStatus.PROCESSING, TaskStatus.SCHEDULED, processing_before,
            " AND processing_ms <= :cut AND processing_ms > :unstamped",
            {":cut": n(cutoff), ":unstamped": n(ms(NOT_STAMPED))}), "stale recovery")
        return sum(1 for item in moved if item is not None)


def _dedup_key(scope: str) -> Item:
    return {"id": s(f"{RESERVED_ID_PREFIX}dedup#{hashlib.sha256(scope.encode()).hexdigest()}")}
