"""The on-failure destination, end to end on moto: a batch that exhausts its retries is named in
Lambda's message format on the failure queue, and `tq-cloud redrive --from-failure-queue` puts
the records of that range back on the stream, once."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.aws.test_kinesis import read_all
from tests.aws_support import aws_resources, fresh_settings, tq_variables
from tq_cloud import Task
from tq_cloud.backends.aws import KinesisQueue
from tq_cloud.backends.aws.failure_destination import redrive_failure_destination
from tq_cloud.local.esm import EmulatedEventSourceMapping
from tq_cloud.local.provision import create_queue


def always_raises(event: Any, context: Any) -> Any:
    raise RuntimeError("the worker crashes on this batch")


async def test_an_exhausted_batch_is_named_on_the_failure_queue_and_redriven_once(
        moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    settings = fresh_settings(moto_endpoint)
    async with aws_resources(settings) as clients:
        url = await create_queue(clients, f"{settings.stream_name}-failures")
        await KinesisQueue(clients.kinesis, settings.stream_name, aggregate_bytes=0).publish(
            [Task(id=f"t{i}", type="t", queue_id="q", payload={"i": i}, partition_key="one") for i in range(3)])
        arn = (await clients.kinesis.describe_stream_summary(StreamName=settings.stream_name))[
            "StreamDescriptionSummary"]["StreamARN"]
        esm = EmulatedEventSourceMapping(clients.kinesis, settings.stream_name, arn, always_raises, max_retries=0,
                                         on_failure=(clients.sqs, url))
        await esm.poll_once()
        [message] = (await clients.sqs.receive_message(QueueUrl=url, VisibilityTimeout=0))["Messages"]
        info = json.loads(message["Body"])["KinesisBatchInfo"]
        assert info["batchSize"] == 3 and info["streamArn"] == arn

        report = await redrive_failure_destination(clients, url)
        assert (report.messages, report.records, report.unavailable) == (1, 3, [])
        records = await read_all(clients.kinesis, settings.stream_name)
        assert [Task.model_validate_json(r["Data"]).key for r in records] == ["t0", "t1", "t2"] * 2
        assert {r["PartitionKey"] for r in records} == {"one"}, "each record keeps its partition key"
        again = await redrive_failure_destination(clients, url)
        assert (again.messages, again.records) == (0, 0), "the message was deleted: nothing is sent twice"


def test_the_cli_redrives_from_the_failure_queue(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    from tq_cloud.cli import main

    settings = fresh_settings(moto_endpoint)

    async def exhausted_batch() -> str:
        async with aws_resources(settings) as clients:
            url = await create_queue(clients, f"{settings.stream_name}-failures")
            await KinesisQueue(clients.kinesis, settings.stream_name).publish(
                [Task(id="x", type="t", queue_id="q", payload={})])
            arn = (await clients.kinesis.describe_stream_summary(StreamName=settings.stream_name))[
                "StreamDescriptionSummary"]["StreamARN"]
            await EmulatedEventSourceMapping(clients.kinesis, settings.stream_name, arn, always_raises,
                                             max_retries=0, on_failure=(clients.sqs, url)).poll_once()
            return url

    url = asyncio.run(exhausted_batch())
    for name, value in tq_variables(settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TQ_FAILURE_QUEUE_URL", url)
    assert main(["redrive", "--from-failure-queue", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"messages": 1, "records": 1, "skipped": 0, "unavailable": []}
    assert main(["redrive", "--from-failure-queue"]) == 0
    assert capsys.readouterr().out.strip() == "re-sent 0 records of 0 failed batches"


async def _exhausted(clients: Any, settings: Any, tasks: list[Task]) -> str:
    url = await create_queue(clients, f"{settings.stream_name}-failures")
    await KinesisQueue(clients.kinesis, settings.stream_name).publish(tasks)
    arn = (await clients.kinesis.describe_stream_summary(StreamName=settings.stream_name))[
        "StreamDescriptionSummary"]["StreamARN"]
    esm = EmulatedEventSourceMapping(clients.kinesis, settings.stream_name, arn, always_raises, max_retries=0,
                                     on_failure=(clients.sqs, url))
    await esm.poll_once()
    return url


class EmptyPagesFirst:
    """Kinesis as it may answer inside a range: empty pages, still behind the tip, before the
    records (moto never does; AWS does past trimmed or sparse parts of a shard)."""

    def __init__(self, kinesis: Any, empties: int) -> None:
        self.kinesis, self.empties = kinesis, empties

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.kinesis, attr)

    async def get_records(self, **kwargs: Any) -> Any:
        if self.empties:
            self.empties -= 1
            return {"Records": [], "MillisBehindLatest": 5000, "NextShardIterator": kwargs["ShardIterator"]}
        return await self.kinesis.get_records(**kwargs)


async def test_only_uncommitted_records_are_resent_past_empty_pages_within_put_limits(moto_endpoint: str) -> None:
    from types import SimpleNamespace

    from tq_cloud.backends.aws import DynamoDbAdapter
    from tq_cloud.domain.task import TaskStatus

    settings = fresh_settings(moto_endpoint)
    async with aws_resources(settings) as clients:
        big = "x" * (900 * 1024)
        tasks = [Task(id=f"t{i}", type="t", queue_id="q", payload={"big": big}, partition_key="one", force_store=True)
                 for i in range(8)]
        url = await _exhausted(clients, settings, tasks)
        storage = DynamoDbAdapter(clients.dynamodb, settings.tasks_table)
        rows = [t.model_copy(update={"status": TaskStatus.PROCESSING, "payload": {}}) for t in tasks]
        await storage.insert(rows)
        await storage.mark_executed([rows[1]], datetime.now(UTC))  # another lane's record, which ran
        puts: list[int] = []
        clients.kinesis.meta.events.register("before-parameter-build.kinesis.PutRecords", lambda params, **_: puts.append(
            sum(len(r["Data"]) + len(r["PartitionKey"]) for r in params["Records"])))
        view = SimpleNamespace(sqs=clients.sqs, kinesis=EmptyPagesFirst(clients.kinesis, empties=3))
        report = await redrive_failure_destination(view, url, storage=storage)
        assert (report.messages, report.records, report.skipped) == (1, 7, 1), "every uncommitted record, once"
        assert len(puts) >= 2 and max(puts) <= 5 * 1024 * 1024, "each PutRecords within 5 MiB"


async def test_the_range_check_fails_when_an_empty_page_ends_the_read(moto_endpoint: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from tq_cloud.backends.aws import failure_destination

    async def stops_early(kinesis: Any, info: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
        iterator = (await kinesis.get_shard_iterator(
            StreamName=info["streamArn"].rsplit("/", 1)[-1], ShardId=info["shardId"],
            ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber=info["startSequenceNumber"]))["ShardIterator"]
        response = await kinesis.get_records(ShardIterator=iterator, Limit=1000)
        return response["Records"], True  # the bug: an empty page taken as the end

    monkeypatch.setattr(failure_destination, "_read_range", stops_early)
    with pytest.raises(AssertionError, match="every uncommitted record"):
        await test_only_uncommitted_records_are_resent_past_empty_pages_within_put_limits(moto_endpoint)
