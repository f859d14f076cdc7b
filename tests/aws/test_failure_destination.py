"""The on-failure destination, end to end on moto: a batch that exhausts its retries is named in
Lambda's message format on the failure queue, and `tq-cloud redrive --from-failure-queue` puts
the records of that range back on the stream, once."""

from __future__ import annotations

import json
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
        await KinesisQueue(clients.kinesis, settings.stream_name).publish(
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
    assert json.loads(capsys.readouterr().out) == {"messages": 1, "records": 1, "unavailable": []}
    assert main(["redrive", "--from-failure-queue"]) == 0
    assert capsys.readouterr().out.strip() == "re-sent 0 records of 0 failed batches"
