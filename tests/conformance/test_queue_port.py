"""The queue port's publish, on the in-memory queue and on Kinesis (moto, or kinesalite with
TQ_TEST_EMULATOR=dynalite), where a call's tasks are packed into KPL aggregated records: every
task is read back once, as sent, each partition key's tasks in the order they were given."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.aws_support import aws_resources
from tq_cloud import Task
from tq_cloud.backends.aws import KinesisQueue
from tq_cloud.backends.memory import InMemoryQueue
from tq_cloud.clock import ManualClock


class Published:
    def __init__(self, queue: Any, read: Any) -> None:
        self.queue, self.read = queue, read


@pytest.fixture(params=["memory", "kinesis"])
async def queue(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[Published]:
    if request.param == "memory":
        memory = InMemoryQueue(clock)
        yield Published(memory, lambda: memory.receive("q", 10_000))
        return
    from tests.aws.test_kinesis import read_all, stream_tasks

    settings = request.getfixturevalue("aws_target").settings()
    async with aws_resources(settings) as clients:
        kinesis = KinesisQueue(clients.kinesis, settings.stream_name)

        async def read() -> list[Task]:
            records = await read_all(clients.kinesis, settings.stream_name)
            assert len(records) < 20, f"300 small tasks in {len(records)} records: packed"
            return stream_tasks(records)

        yield Published(kinesis, read)


async def test_every_task_is_read_back_as_sent_in_its_keys_order(queue: Published) -> None:
    sent = [Task(id=f"t{i:03d}", type="t", queue_id="q", payload={"i": i, "pad": "x" * (i % 7) * 300},
                 partition_key=[None, "user-1", "user-2"][i % 3]) for i in range(300)]
    await queue.queue.publish(sent)
    back = await queue.read()
    assert sorted(t.model_dump_json() for t in back) == sorted(t.model_dump_json() for t in sent)
    for key in ("user-1", "user-2"):
        assert [t.key for t in back if t.partition_key == key] == [t.key for t in sent if t.partition_key == key]
