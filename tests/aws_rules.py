"""AWS's rules where moto forgives them, enforced on every call the backends make in a test.

moto stores a 3 KB index key, takes 600 records in one PutRecords and answers a Query with every
item at once; AWS refuses the first two and pages the third. Installed on every client made
while a test runs (through aiobotocore's session), this refuses what AWS documents it refuses,
with the error AWS gives (ValidationException and its kin), and pages what AWS pages:

- DynamoDB: item <= 400 KB; a partition key <= 2,048 bytes and a sort key <= 1,024 (of the
  table and of every index, as template.yaml declares them); BatchWriteItem <= 25 requests,
  BatchGetItem <= 100 keys, TransactWriteItems <= 100 items and 4 MB. Every Query and Scan is
  cut to `page` items, so a reader that takes one page for the whole answer misses items here
  as it would past 1 MB on AWS. With `index_lag`, a Query of an index does not see an item
  written less than that many seconds before (indexes are eventually consistent).
- Kinesis: PutRecords <= 500 records and 5 MiB, a record (data and key) <= 1 MiB, a partition
  key of 1 to 256 characters; GetRecords cut to `page` records.
- SQS: a body <= 1 MiB of the characters SQS accepts, <= 10 entries and 1 MiB a batch,
  DelaySeconds <= 900.
- EventBridge Scheduler: names of 1 to 64 of [0-9a-zA-Z-_.]; ListSchedules cut to 2 a page.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from tq_cloud.local.template import load_template

ROOT = Path(__file__).resolve().parents[1]
KB, MB, MIB = 1024, 1000 * 1000, 1024 * 1024
SQS_ALLOWED = re.compile("^[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*$")
SCHEDULE_NAME = re.compile(r"^[0-9a-zA-Z\-_.]{1,64}$")
ASSIGNMENT = re.compile(r"([A-Za-z_][\w]*)\s*=\s*(:\w+)")


def refuse(operation: str, message: str, code: str = "ValidationException") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def value_size(value: dict[str, Any]) -> int:
    """DynamoDB's size of an attribute value (as its documentation counts it, near enough)."""
    kind, inner = next(iter(value.items()))
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        return len(str(inner).lstrip("-").replace(".", "")) // 2 + 1
    if kind == "B":
        return len(inner)
    if kind in ("SS", "NS", "BS"):
        return sum(value_size({kind[0]: v}) for v in inner)
    if kind == "M":
        return 3 + sum(len(k.encode()) + value_size(v) for k, v in inner.items())
    if kind == "L":
        return 3 + sum(value_size(v) for v in inner)
    return 1


def key_limits(template: dict[str, Any]) -> dict[str, int]:
    """Each key attribute of any table or index, with its byte limit (the smaller where an
    attribute is a sort key somewhere)."""
    limits: dict[str, int] = {}
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") != "AWS::DynamoDB::Table":
            continue
        props = resource["Properties"]
        schemas = [props["KeySchema"]] + [i["KeySchema"] for i in props.get("GlobalSecondaryIndexes", [])]
        for schema in schemas:
            for key in schema:
                limit = 2048 if key["KeyType"] == "HASH" else 1024
                limits[key["AttributeName"]] = min(limits.get(key["AttributeName"], limit), limit)
    return limits


class AwsRules:
    def __init__(self, *, page: int = 3, index_lag: float = 0.0) -> None:
        self.page = page
        self.index_lag = index_lag
        self.keys = key_limits(load_template(ROOT / "template.yaml")) | {"mapping": 2048}
        self.written: dict[tuple[str, str], float] = {}
        self.refused: list[str] = []

    def install(self, client: Any) -> None:
        service = client.meta.service_model.service_name
        events = client.meta.events
        for operation, check in self._checks(service).items():
            events.register(f"before-parameter-build.{service}.{operation}", check)
        if service == "dynamodb":
            events.register("before-parameter-build.dynamodb", self._remember)
            for operation in ("PutItem", "UpdateItem", "DeleteItem"):
                events.register(f"after-call.dynamodb.{operation}", self._wrote)
            events.register("after-call.dynamodb.Query", self._lagging)

    def _checks(self, service: str) -> dict[str, Any]:
        return {
            "dynamodb": {"PutItem": self._put_item, "UpdateItem": self._update_item, "Query": self._paged,
                         "Scan": self._paged, "BatchWriteItem": self._batch_write, "BatchGetItem": self._batch_get,
                         "TransactWriteItems": self._transact},
            "kinesis": {"PutRecords": self._put_records, "PutRecord": self._put_record, "GetRecords": self._get_records},
            "sqs": {"SendMessage": self._send_message, "SendMessageBatch": self._send_batch},
            "scheduler": {"CreateSchedule": self._schedule_name, "ListSchedules": self._list_schedules},
        }.get(service, {})

    def _fail(self, operation: str, message: str, code: str = "ValidationException") -> None:
        self.refused.append(f"{operation}: {message}")
        raise refuse(operation, message, code)

    # -- DynamoDB ----------------------------------------------------------------------------
    def _keys(self, operation: str, attributes: dict[str, dict[str, Any]]) -> None:
        for name, value in attributes.items():
            limit = self.keys.get(name)
            if limit is not None and "S" in value and len(value["S"].encode()) > limit:
                self._fail(operation, f"One or more parameter values were invalid: Size of key {name} "
                                      f"({len(value['S'].encode())} bytes) exceeds the {limit}-byte limit")

    def _item(self, operation: str, item: dict[str, dict[str, Any]]) -> None:
        size = sum(len(k.encode()) + value_size(v) for k, v in item.items())
        if size > 400 * KB:
            self._fail(operation, f"Item size has exceeded the maximum allowed size ({size} bytes)")

    def _put_item(self, params: dict[str, Any], **_: Any) -> None:
        self._item("PutItem", params["Item"])
        self._keys("PutItem", params["Item"])

    def _update_item(self, params: dict[str, Any], **_: Any) -> None:
        values = params.get("ExpressionAttributeValues", {})
        assigned = {name: values[ref] for name, ref in ASSIGNMENT.findall(params.get("UpdateExpression", ""))
                    if ref in values}
        self._item("UpdateItem", {**params["Key"], **assigned})
        self._keys("UpdateItem", {**params["Key"], **assigned})

    def _paged(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        params["Limit"] = min(params.get("Limit", self.page), self.page)

    def _batch_write(self, params: dict[str, Any], **_: Any) -> None:
        if sum(len(v) for v in params["RequestItems"].values()) > 25:
            self._fail("BatchWriteItem", "Too many items requested for the BatchWriteItem call (over 25)")

    def _batch_get(self, params: dict[str, Any], **_: Any) -> None:
        if sum(len(v["Keys"]) for v in params["RequestItems"].values()) > 100:
            self._fail("BatchGetItem", "Too many items requested for the BatchGetItem call (over 100)")

    def _transact(self, params: dict[str, Any], **_: Any) -> None:
        items = params["TransactItems"]
        size = len(json.dumps(items).encode())
        if len(items) > 100 or size > 4 * MB:
            self._fail("TransactWriteItems", f"{len(items)} items of {size} bytes: at most 100 and 4 MB")

    @staticmethod
    def _remember(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["tq_params"] = dict(params)  # for the after-call hooks, which are not given them

    def _wrote(self, context: dict[str, Any], **_: Any) -> None:
        params = context.get("tq_params", {})
        if "Key" in params:
            self.written[(params["TableName"], json.dumps(params["Key"], sort_keys=True))] = time.monotonic()

    def _lagging(self, context: dict[str, Any], parsed: dict[str, Any], **_: Any) -> None:
        """An index read that misses what was written just before (its items stay in the table)."""
        params = context.get("tq_params", {})
        if not self.index_lag or "IndexName" not in params or "Items" not in parsed:
            return
        horizon = time.monotonic() - self.index_lag
        table = params["TableName"]

        def visible(item: dict[str, Any]) -> bool:
            for key in ({"id": item.get("id")}, {"pk": item.get("pk"), "sk": item.get("sk")},
                        {"task_id": item.get("task_id")}):
                if all(v is not None for v in key.values()):
                    return self.written.get((table, json.dumps(key, sort_keys=True)), 0.0) <= horizon
            return True

        parsed["Items"] = [i for i in parsed["Items"] if visible(i)]
        parsed["Count"] = len(parsed["Items"])

    # -- Kinesis -----------------------------------------------------------------------------
    def _record(self, operation: str, data: bytes, key: str) -> int:
        if not 1 <= len(key) <= 256:
            self._fail(operation, f"partition key of {len(key)} characters: 1 to 256")
        size = len(data) + len(key.encode())
        if size > MIB:
            self._fail(operation, f"a record of {size} bytes exceeds 1 MiB")
        return size

    def _put_records(self, params: dict[str, Any], **_: Any) -> None:
        records = params["Records"]
        total = sum(self._record("PutRecords", r["Data"], r["PartitionKey"]) for r in records)
        if len(records) > 500 or total > 5 * MIB:
            self._fail("PutRecords", f"{len(records)} records of {total} bytes: at most 500 and 5 MiB")

    def _put_record(self, params: dict[str, Any], **_: Any) -> None:
        self._record("PutRecord", params["Data"], params["PartitionKey"])

    def _get_records(self, params: dict[str, Any], **_: Any) -> None:
        params["Limit"] = min(params.get("Limit", 10_000), max(self.page, 25))

    # -- SQS and the scheduler ----------------------------------------------------------------
    def _body(self, operation: str, body: str, delay: int) -> int:
        if not SQS_ALLOWED.match(body):
            self._fail(operation, "Invalid characters found in the message body", "InvalidMessageContents")
        if delay > 900:
            self._fail(operation, f"DelaySeconds {delay}: at most 900", "InvalidParameterValue")
        return len(body.encode())

    def _send_message(self, params: dict[str, Any], **_: Any) -> None:
        if self._body("SendMessage", params["MessageBody"], params.get("DelaySeconds", 0)) > MIB:
            self._fail("SendMessage", "the message body exceeds 1 MiB", "InvalidParameterValue")

    def _send_batch(self, params: dict[str, Any], **_: Any) -> None:
        entries = params["Entries"]
        total = sum(self._body("SendMessageBatch", e["MessageBody"], e.get("DelaySeconds", 0)) for e in entries)
        if len(entries) > 10:
            self._fail("SendMessageBatch", f"{len(entries)} entries: at most 10", "TooManyEntriesInBatchRequest")
        if total > MIB:
            self._fail("SendMessageBatch", f"a batch of {total} bytes exceeds 1 MiB", "BatchRequestTooLong")

    def _schedule_name(self, params: dict[str, Any], **_: Any) -> None:
        for field in ("Name", "GroupName"):
            if field in params and not SCHEDULE_NAME.match(params[field]):
                self._fail("CreateSchedule", f"{field} {params[field][:80]!r}: 1 to 64 of [0-9a-zA-Z-_.]")

    def _list_schedules(self, params: dict[str, Any], **_: Any) -> None:
        params["MaxResults"] = min(params.get("MaxResults", 2), 2)


@contextmanager
def enforced(rules: AwsRules) -> Iterator[AwsRules]:
    """`rules` on every client created inside the block (aiobotocore's session makes them all)."""
    from aiobotocore.session import AioSession

    original = AioSession._create_client

    async def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = await original(self, *args, **kwargs)
        rules.install(client)
        return client

    AioSession._create_client = create  # type: ignore[method-assign]
    try:
        yield rules
    finally:
        AioSession._create_client = original  # type: ignore[method-assign]
