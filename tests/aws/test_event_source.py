"""The emulated event source mapping: real-shaped events, partial failures, bisection, retries."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from tests.aws_support import aws_resources, fresh_settings
from tq_cloud.local.esm import EmulatedEventSourceMapping


@pytest.fixture
async def stream(moto_endpoint: str) -> AsyncIterator[tuple[Any, str, str]]:
    settings = fresh_settings(moto_endpoint)
    async with aws_resources(settings) as clients:
        arn = (await clients.kinesis.describe_stream_summary(StreamName=settings.stream_name))[
            "StreamDescriptionSummary"]["StreamARN"]
        for i in range(8):
            await clients.kinesis.put_record(StreamName=settings.stream_name, Data=f"r{i}".encode(), PartitionKey="one")
        yield clients.kinesis, settings.stream_name, arn


class Recorder:
    def __init__(self, poison: str | None = None, report_once: str | None = None) -> None:
        self.poison = poison
        self.report_once = report_once
        self.batches: list[list[str]] = []

    def __call__(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        assert context.get_remaining_time_in_millis() > 0
        records = event["Records"]
        assert all(r["eventSource"] == "aws:kinesis" and r["eventID"].endswith(r["kinesis"]["sequenceNumber"])
                   for r in records)
        data = [base64.b64decode(r["kinesis"]["data"]).decode() for r in records]
        self.batches.append(data)
        if self.poison in data:
            raise RuntimeError("poison record")
        if self.report_once in data:
            self.report_once = None
            index = data.index("r5")
            return {"batchItemFailures": [{"itemIdentifier": records[index]["kinesis"]["sequenceNumber"]}]}
        return {"batchItemFailures": []}


async def test_reported_failures_are_retried_from_the_first_one(stream: tuple[Any, str, str]) -> None:
    handler = Recorder(report_once="r5")
    esm = EmulatedEventSourceMapping(*stream, handler, batch_size=100)
    await esm.poll_once()
    assert handler.batches == [[f"r{i}" for i in range(8)], ["r5", "r6", "r7"]]
    assert esm.stats.reported_failures == 1


async def test_a_raising_batch_is_bisected_down_to_the_poison_record(stream: tuple[Any, str, str]) -> None:
    handler = Recorder(poison="r3")
    esm = EmulatedEventSourceMapping(*stream, handler, batch_size=100, max_retries=4)
    await esm.poll_once()
    assert handler.batches[:3] == [[f"r{i}" for i in range(8)], ["r0", "r1", "r2", "r3"], ["r0", "r1"]]
    delivered_ok = {r for batch in handler.batches if "r3" not in batch for r in batch}
    assert delivered_ok == {f"r{i}" for i in range(8)} - {"r3"}
    assert esm.stats.sent_to_on_failure and esm.stats.sent_to_on_failure[0]["count"] == 1


async def test_shards_and_lanes_are_delivered_concurrently_each_to_its_own_container(moto_endpoint: str) -> None:
    import threading

    settings = fresh_settings(moto_endpoint)
    meeting = threading.Barrier(2, timeout=10)
    made: list[object] = []
    keys_seen: dict[str, list[str]] = {}

    def container() -> Any:
        def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
            meeting.wait()  # returns only if another slot is inside its invocation at the same time
            for record in event["Records"]:
                keys_seen.setdefault(record["kinesis"]["partitionKey"], []).append(
                    base64.b64decode(record["kinesis"]["data"]).decode())
            return {"batchItemFailures": []}

        made.append(handler)
        return handler

    async with aws_resources(settings) as clients:
        arn = (await clients.kinesis.describe_stream_summary(StreamName=settings.stream_name))[
            "StreamDescriptionSummary"]["StreamARN"]
        for i in range(6):
            await clients.kinesis.put_record(StreamName=settings.stream_name, Data=f"{i}".encode(),
                                             PartitionKey="a" if i % 2 else "b")
        esm = EmulatedEventSourceMapping(clients.kinesis, settings.stream_name, arn, container(), batch_size=100,
                                         parallelization=2, containers=container)
        made.clear()
        await esm.poll_once()
    assert len(made) == 2, "each concurrent slot has its own container"
    assert keys_seen == {"a": ["1", "3", "5"], "b": ["0", "2", "4"]}, "one key's records stay in order"
