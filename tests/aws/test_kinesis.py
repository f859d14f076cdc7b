"""KinesisQueue, the record decoders and the shard poller, on moto's server."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.aws_support import PutRecordsFaults, aws_resources, fresh_settings
from tq_cloud import ExecutorActions, Task
from tq_cloud.backends.aws import AwsSettings, KinesisQueue, build_stack
from tq_cloud.backends.aws.kinesis import decode_get_records, decode_lambda_record
from tq_cloud.core.codec import UndecodableRecord, encode_task
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.errors import QueueWriteError
from tq_cloud.local.poller import KinesisShardPoller


@pytest.fixture
async def env(moto_endpoint: str) -> AsyncIterator[tuple[Any, AwsSettings]]:
    settings = fresh_settings(moto_endpoint)
    async with aws_resources(settings) as clients:
        yield clients, settings


async def read_all(kinesis: Any, stream: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for shard in (await kinesis.list_shards(StreamName=stream))["Shards"]:
        it = (await kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                               ShardIteratorType="TRIM_HORIZON"))["ShardIterator"]
        while it:  # page after page, to the shard's tip
            response = await kinesis.get_records(ShardIterator=it, Limit=10000)
            records += response["Records"]
            if not response["Records"]:
                break
            it = response.get("NextShardIterator")
    return records


def stream_tasks(records: list[dict[str, Any]]) -> list[Task]:
    """The tasks of records read from the stream (plain or aggregated)."""
    return [t for _, t in decode_get_records(records) if isinstance(t, Task)]


def tasks(n: int, size: int = 0, **kw: Any) -> list[Task]:
    return [Task(id=f"t{i}", type="t", queue_id="q", payload={"pad": "x" * size}, **kw) for i in range(n)]


async def no_sleep(_: float) -> None:
    return None


async def test_publish_chunks_by_count_and_bytes(env: tuple[Any, AwsSettings]) -> None:
    clients, settings = env
    queue = KinesisQueue(clients.kinesis, settings.stream_name, aggregate_bytes=0)
    await queue.publish(tasks(1200))
    assert queue.put_calls == 3
    big = KinesisQueue(clients.kinesis, settings.stream_name)  # each too large to share a record
    await big.publish([t.model_copy(update={"id": f"b{i}"}) for i, t in enumerate(tasks(12, 600_000))])
    assert big.put_calls == 2, "12 records of ~600 KB do not fit one 5 MiB request"
    assert len(await read_all(clients.kinesis, settings.stream_name)) == 1212


async def test_partition_key_is_the_executors_else_the_task_id(env: tuple[Any, AwsSettings]) -> None:
    clients, settings = env
    queue = KinesisQueue(clients.kinesis, settings.stream_name)
    await queue.publish([Task(id="a", type="t", queue_id="q", payload={}, partition_key="user-7"),
                         Task(id="b", type="t", queue_id="q", payload={})])
    keys = sorted(r["PartitionKey"] for r in await read_all(clients.kinesis, settings.stream_name))
    assert keys == ["b", "user-7"]


async def test_oversized_record_is_rejected_and_does_not_hold_back_the_others(env: tuple[Any, AwsSettings]) -> None:
    clients, settings = env
    queue = KinesisQueue(clients.kinesis, settings.stream_name, aggregate_bytes=0)
    with pytest.raises(QueueWriteError) as raised:
        await queue.publish([*tasks(2), Task(id="huge", type="t", queue_id="q", payload="x" * 1_100_000)])
    assert raised.value.task_ids == [] and list(raised.value.rejected) == ["huge"]
    assert "Kinesis record" in raised.value.rejected["huge"]
    ids = sorted(Task.model_validate_json(r["Data"]).id for r in await read_all(clients.kinesis, settings.stream_name))
    assert ids == ["t0", "t1"] and queue.put_calls == 1


async def test_throttled_records_are_resent_until_written(env: tuple[Any, AwsSettings]) -> None:
    clients, settings = env
    faults = PutRecordsFaults(clients.kinesis, lambda record, call: call <= 2 and record["PartitionKey"] in {"t1", "t3"})
    queue = KinesisQueue(clients.kinesis, settings.stream_name, sleep=no_sleep, aggregate_bytes=0)
    await queue.publish(tasks(5))
    assert faults.failed == 4 and queue.put_calls == 3 and queue.resent == 4
    ids = sorted(Task.model_validate_json(r["Data"]).id for r in await read_all(clients.kinesis, settings.stream_name))
    assert ids == ["t0", "t1", "t2", "t3", "t4"], "each record written exactly once"


async def test_records_refused_past_the_deadline_are_named(env: tuple[Any, AwsSettings]) -> None:
    clients, settings = env
    PutRecordsFaults(clients.kinesis, lambda record, call: record["PartitionKey"] == "t2")
    queue = KinesisQueue(clients.kinesis, settings.stream_name, deadline=0.0, sleep=no_sleep, aggregate_bytes=0)
    with pytest.raises(QueueWriteError, match=r"tasks not written: t2$"):
        await queue.publish(tasks(4))


async def test_an_aggregated_record_is_written_or_refused_whole(env: tuple[Any, AwsSettings]) -> None:
    """PutRecords fails per record: a refused aggregated record names every task it carries,
    and the other records of the call are written."""
    clients, settings = env
    PutRecordsFaults(clients.kinesis, lambda record, call: record["PartitionKey"] == "k2")
    queue = KinesisQueue(clients.kinesis, settings.stream_name, deadline=0.0, sleep=no_sleep)
    with pytest.raises(QueueWriteError) as raised:
        await queue.publish([*tasks(3, partition_key="k1"),
                             *(t.model_copy(update={"id": f"b{i}"}) for i, t in enumerate(tasks(3, partition_key="k2")))])
    assert sorted(raised.value.task_ids) == ["b0", "b1", "b2"]
    assert [t.key for t in stream_tasks(await read_all(clients.kinesis, settings.stream_name))] == ["t0", "t1", "t2"]


def test_lambda_record_decoding() -> None:
    good = Task(id="g", type="t", queue_id="q", payload={"a": 1})
    record = {"kinesis": {"sequenceNumber": "1", "data": base64.b64encode(encode_task(good)).decode()}}
    assert decode_lambda_record(record) == [good]
    for data in ("not base64!!", base64.b64encode(b"{not json").decode(),
                 base64.b64encode(b'{"type": "t", "queue_id": 5, "payload": {}}').decode(),
                 base64.b64encode(b'{"type": "t", "queue_id": "q", "payload": {}, "execute_at": "yesterday"}').decode()):
        [decoded] = decode_lambda_record({"kinesis": {"sequenceNumber": "9", "data": data}})
        assert isinstance(decoded, UndecodableRecord) and decoded.record_id == "9"


async def test_poller_processes_records_and_stores_poison(env: tuple[Any, AwsSettings]) -> None:
    clients, settings = env
    registry = TaskQueuesManager()
    seen: list[str] = []

    @registry.task("q", "t")
    async def ok(task: Task, actions: ExecutorActions) -> None:
        seen.append(task.key)
        actions.success(task)

    stack = await build_stack(registry, settings, clients)
    await stack.handler.add_tasks(tasks(3))
    await clients.kinesis.put_record(StreamName=settings.stream_name, Data=b"garbage", PartitionKey="x")
    poller = KinesisShardPoller(clients.kinesis, settings.stream_name, stack.handler)
    assert await poller.poll_once() == 4
    assert sorted(seen) == ["t0", "t1", "t2"]
    assert await poller.poll_once() == 0, "checkpoints advanced"
    [poison] = [t for t in await _all_tasks(stack) if t.type == "_tq.undecodable"]
    assert poison.status == "failed" and "not a valid task" in (poison.execution_stats.last_error or "")


async def _all_tasks(stack: Any) -> list[Task]:
    """Every task row, page after page (AWS's rules answer a few items a Scan page; the table
    holds the kept counters' rows too)."""
    ids: list[str] = []
    page: dict[str, Any] = {}
    while True:
        response = await stack.clients.dynamodb.scan(TableName=stack.settings.tasks_table, **page)
        ids += [i["id"]["S"] for i in response["Items"]]
        if "LastEvaluatedKey" not in response:
            return list(await stack.storage.get(ids))
        page = {"ExclusiveStartKey": response["LastEvaluatedKey"]}


async def test_poller_rereads_uncommitted_records(env: tuple[Any, AwsSettings]) -> None:
    clients, settings = env
    registry = TaskQueuesManager()
    runs: list[str] = []

    @registry.task("q", "t", store_on_failure=True)
    async def ok(task: Task, actions: ExecutorActions) -> None:
        runs.append(task.key)
        actions.success(task)

    stack = await build_stack(registry, settings, clients)
    await stack.handler.add_tasks([Task(id="only", type="t", queue_id="q", payload={}, force_store=True)])
    poller = KinesisShardPoller(clients.kinesis, settings.stream_name, stack.handler)
    from tests.aws_support import CallFaults

    CallFaults(clients.dynamodb, "dynamodb.UpdateItem", "ThrottlingException", times=4,  # every try of the mark
               match=lambda p: ":body" in p.get("ExpressionAttributeValues", {}))
    assert await poller.poll_once() == 1
    assert poller.committed == 0 and poller.checkpoints == {}, "the commit failed: no checkpoint"
    assert await poller.poll_once() == 1
    assert poller.committed == 1 and poller.redelivered == 1
    assert runs == ["only", "only"]
    [row] = await stack.storage.get(["only"])
    assert row.status == "executed"
