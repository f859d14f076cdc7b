"""The SQS delay lane on moto's server: tasks due within 15 minutes (retries included) wait in
SQS to the second instead of in the table, and the worker forwards them, once due, to the
stream under their partition key."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.aws.test_kinesis import read_all, stream_tasks
from tests.aws.test_lambda_handlers import FakeContext, event_of
from tests.aws_support import PutRecordsFaults, aws_resources, fresh_settings
from tq_cloud import ExecutorActions, Task, TaskStatus
from tq_cloud.aws_lambda import kinesis_handler
from tq_cloud.backends.aws import AwsSettings, AwsStack, build_stack
from tq_cloud.core.codec import UNDECODABLE_TYPE
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.ids import derived_id
from tq_cloud.local.provision import create_queue

SQS_SAMPLE = json.loads((Path(__file__).resolve().parents[2] / "events" / "sqs-receive-message.json").read_text())


def app() -> TaskQueuesManager:
    registry = TaskQueuesManager()

    @registry.task("q", "t", retries=2, partition_key=lambda t: f"tenant-{t.payload.get('tenant', 0)}")
    async def t(task: Task, actions: ExecutorActions) -> None:
        if task.payload.get("fail") and task.retry_count == 0:
            actions.fail(task, "busy, try again")
        else:
            actions.success(task)

    return registry


@pytest.fixture
async def lane(moto_endpoint: str) -> AsyncIterator[AwsStack]:
    settings = fresh_settings(moto_endpoint)
    async with aws_resources(settings) as clients:
        url = await create_queue(clients, f"{settings.stream_name}-delays")
        yield await build_stack(app(), settings.model_copy(update={"delay_queue_url": url}), clients)


async def depth(stack: AwsStack) -> dict[str, int]:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"]
    attributes = (await stack.clients.sqs.get_queue_attributes(
        QueueUrl=stack.settings.delay_queue_url, AttributeNames=names))["Attributes"]
    return {"ready": int(attributes[names[0]]), "delayed": int(attributes[names[1]])}


async def test_tasks_due_within_15_minutes_wait_in_the_lane_not_the_table(lane: AwsStack) -> None:
    now = datetime.now(UTC)
    await lane.handler.add_tasks([
        Task(id="in-10-min", type="t", queue_id="q", payload={}, execute_at=now + timedelta(minutes=10)),
        Task(id="in-20-min", type="t", queue_id="q", payload={}, execute_at=now + timedelta(minutes=20)),
        Task(id="stored", type="t", queue_id="q", payload={}, execute_at=now + timedelta(minutes=5), force_store=True),
        Task(id="large", type="t", queue_id="q", payload={"pad": "x" * 300_000}, execute_at=now + timedelta(minutes=5)),
    ])
    assert await depth(lane) == {"ready": 0, "delayed": 1}
    rows = {t.key: t.status for t in await lane.storage.get(["in-10-min", "in-20-min", "stored", "large"])}
    assert rows == {"in-20-min": TaskStatus.SCHEDULED, "stored": TaskStatus.SCHEDULED, "large": TaskStatus.SCHEDULED}


async def test_a_retry_after_two_seconds_takes_the_lane(lane: AwsStack) -> None:
    report = await lane.handler.process_batch([Task(id="r", type="t", queue_id="q", payload={"fail": True},
                                                    retry_after=2000)])
    assert report.not_committed == []
    assert await depth(lane) == {"ready": 0, "delayed": 1}
    assert await lane.storage.get(["r"]) == [], "no row: the retry waits in SQS"


def sqs_event(messages: list[dict[str, Any]]) -> dict[str, Any]:
    records = []
    for message in messages:
        record = copy.deepcopy(SQS_SAMPLE["Records"][0])
        record.update(messageId=message["MessageId"], receiptHandle=message["ReceiptHandle"], body=message["Body"])
        records.append(record)
    return {"Records": records}


async def due_messages(lane: AwsStack, *tasks: Task) -> list[dict[str, Any]]:
    await lane.handler.router.delay_lane.send(list(tasks))  # type: ignore[union-attr]
    response = await lane.clients.sqs.receive_message(QueueUrl=lane.settings.delay_queue_url, MaxNumberOfMessages=10)
    return list(response["Messages"])


async def test_the_worker_forwards_due_tasks_to_the_stream_and_reports_what_it_could_not(lane: AwsStack) -> None:
    settings: AwsSettings = lane.settings
    worker = kinesis_handler(app(), settings)
    task = lane.handler.router.check(Task(id="due", type="t", queue_id="q", payload={"tenant": 7}))
    messages = await due_messages(lane, task)
    garbage = {"MessageId": "m-garbage", "ReceiptHandle": "h", "Body": "not a task"}

    response = await worker.handle(sqs_event([*messages, garbage]), FakeContext())
    assert response == {"batchItemFailures": []}
    [record] = [r for r in await read_all(lane.clients.kinesis, settings.stream_name)]
    assert record["PartitionKey"] == "tenant-7" and json.loads(record["Data"])["id"] == "due"
    [failed] = await lane.storage.get([derived_id("undecodable", "sqs:m-garbage")])
    assert failed.type == UNDECODABLE_TYPE and failed.status is TaskStatus.FAILED

    stack = await worker.runtime.stack()  # type: ignore[attr-defined]
    PutRecordsFaults(stack.clients.kinesis, lambda record, call: True)
    stack.queue.deadline = 0.0  # give up at once
    again = await worker.handle(sqs_event(messages), FakeContext())
    assert again == {"batchItemFailures": [{"itemIdentifier": messages[0]["MessageId"]}]}, \
        "a message not written to the stream is delivered again, never dropped"
    back = await lane.clients.sqs.receive_message(QueueUrl=settings.delay_queue_url, WaitTimeSeconds=5)
    assert [m["MessageId"] for m in back.get("Messages", [])] == [messages[0]["MessageId"]], \
        "received again within seconds (its visibility changed to 1 s), not after the queue's 30 s"


async def test_retry_soon_sets_a_visibility_that_doubles_with_each_receive(lane: AwsStack) -> None:
    """SqsDelayLane.retry_soon against moto: the first receive comes back after 1 s; a message
    received for the ninth time waits 256 s (it does not come back within a long poll)."""
    from tq_cloud.ports.delay import LaneMessage, retry_visibility

    assert [retry_visibility(n) for n in (1, 2, 3, 9, 10, 30)] == [1, 2, 4, 256, 300, 300]
    url = lane.settings.delay_queue_url
    await lane.handler.router.delay_lane.send([Task(id="soon", type="t", queue_id="q", payload={})])  # type: ignore[union-attr]
    received = {json.loads(m["Body"])["id"]: m for m in await due_messages(
        lane, Task(id="late", type="t", queue_id="q", payload={}))}  # two sends: two messages
    soon, late = received["soon"], received["late"]
    lane_port = lane.handler.router.delay_lane
    assert lane_port is not None
    await lane_port.retry_soon([LaneMessage(soon["ReceiptHandle"], 1), LaneMessage(late["ReceiptHandle"], 9)])
    back = await lane.clients.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5, MaxNumberOfMessages=10)
    assert [m["MessageId"] for m in back.get("Messages", [])] == [soon["MessageId"]]


async def test_tasks_of_one_send_due_in_the_same_second_share_a_message(lane: AwsStack) -> None:
    """SQS: one message for the tasks of a send due in the same whole second (a JSON array),
    one for each other second; the worker forwards every task of a packed message."""
    from tq_cloud.aws_lambda.delay_forwarder import decode_lane_body

    now = lane.handler.clock.now()
    burst = [Task(id=f"b{i}", type="t", queue_id="q", payload={}, execute_at=now + timedelta(milliseconds=i))
             for i in range(30)]
    await lane.handler.router.delay_lane.send(burst)  # type: ignore[union-attr]
    response = await lane.clients.sqs.receive_message(QueueUrl=lane.settings.delay_queue_url, MaxNumberOfMessages=10)
    [only] = response["Messages"]
    assert [t.key for t in decode_lane_body(only["Body"].encode(), "m")] == [t.key for t in burst]
    worker = kinesis_handler(app(), lane.settings)
    assert await worker.handle(sqs_event([only]), FakeContext()) == {"batchItemFailures": []}
    records = await read_all(lane.clients.kinesis, lane.settings.stream_name)
    assert sorted(t.key for t in stream_tasks(records)) == sorted(t.key for t in burst)
    assert len(records) == 1, "the 30 due tasks of one message go on in one aggregated record"


async def test_a_kinesis_event_still_runs_tasks(lane: AwsStack) -> None:
    worker = kinesis_handler(app(), lane.settings)
    event = event_of(Task(id="k", type="t", queue_id="q", payload={}))
    assert await worker.handle(event, FakeContext()) == {"batchItemFailures": []}


def test_a_delay_is_rounded_down_to_the_second_the_worker_holds_the_rest() -> None:
    from tq_cloud.backends.aws.sqs_delay import lane_message
    from tq_cloud.clock import ManualClock

    clock = ManualClock()
    delays = [lane_message(Task(id="d", type="t", queue_id="q", payload={},
                                execute_at=clock.now() + timedelta(seconds=s)), clock.now())[1]
              for s in (-3, 0, 0.001, 1.2, 899.5, 2000)]
    assert delays == [0, 0, 0, 1, 899, 900]
