"""Tasks on a Kinesis stream.

Publishing: the tasks of one call are packed into records in the Kinesis Producer Library's
aggregated format (`kpl.py`), up to `aggregate_bytes` a record: tasks that share a partition key
(set by their executor) share records under that key, and tasks without one share records under
the first one's id, which still spreads the records across shards. A group of one, a task too
large to share, and a task `alone` says must keep its own key (`TaskQueuesManager.packs_alone`:
one that may have a row and has no partition key, whose copies must reach one consumer in turn;
an `ordered=True` executor's) go as plain records. PutRecords takes chunks of at most 500
records and 5 MiB. Records that fail (throttling) are resent, only those, with jittered
exponential back-off until a deadline; then QueueWriteError names every task of the records not
written. A task that can never be written (over 1 MiB, not JSON) is named in
QueueWriteError.rejected, and every other task of the call is still sent.

Kinesis cannot delay a record (`honours_execute_at` is False), so the router sends tasks due
later to the store, and the sweeper puts them here when due.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tq_cloud.backends.aws.kpl import OVERHEAD, aggregate, deaggregate, key_entry_size, user_record_size
from tq_cloud.core.codec import UndecodableRecord, decode_task, encode_task
from tq_cloud.domain.limits import MAX_ID_CHARS
from tq_cloud.domain.task import Task
from tq_cloud.errors import ConfigurationError, PayloadTooLargeError, QueueWriteError, TaskRejectedError

MAX_RECORD_BYTES = 1024 * 1024
MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 5 * 1024 * 1024
AGGREGATE_BYTES = 25 * 1024
"""The default size of an aggregated record (data and partition key): one PUT payload unit, the
25 KB by which provisioned Kinesis bills a record, so packing never pays for a second unit; and
a batch of 100 such records (base64 in Lambda's event) stays well under Lambda's 6 MB payload."""

Sleep = Callable[[float], Awaitable[None]]


def partition_key(task: Task) -> str:
    return task.partition_key or task.key


def kinesis_record(task: Task) -> tuple[bytes, str]:
    """A task's record data and partition key, or TaskRejectedError if it can never be written."""
    data = encode_task(task)
    key = partition_key(task)
    size = len(data) + len(key.encode())
    if size > MAX_RECORD_BYTES:
        raise PayloadTooLargeError(task.id, size, MAX_RECORD_BYTES, "a Kinesis record")
    return data, key


@dataclass(slots=True)
class PackedRecord:
    """One record to put: plain (one task) or aggregated (several), and the tasks it carries."""

    partition_key: str
    tasks: list[Task] = field(default_factory=list)
    parts: list[tuple[str, bytes]] = field(default_factory=list)
    """`(partition key, data)` of each task, as they go into the aggregate."""
    keys: dict[str, int] = field(default_factory=dict)
    size: int = 0
    """Its size as an aggregate, with its own partition key."""
    data: bytes = b""

    def size_with(self, key: str, data: bytes) -> int:
        index = self.keys.get(key)
        grown = self.size or OVERHEAD + len(self.partition_key.encode())
        if index is None:
            index = len(self.keys)
            grown += key_entry_size(key)
        return grown + user_record_size(index, len(data))

    def add(self, task: Task, key: str, data: bytes) -> None:
        self.size = self.size_with(key, data)
        self.keys.setdefault(key, len(self.keys))
        self.tasks.append(task)
        self.parts.append((key, data))


def pack(tasks: Sequence[Task], aggregate_bytes: int = AGGREGATE_BYTES,
         alone: Callable[[Task], bool] | None = None) -> tuple[list[PackedRecord], dict[str, str]]:
    """The records that carry `tasks`, in the order each partition key's tasks were given, and
    the tasks that can never be written (id → why). `aggregate_bytes` 0 puts every task alone.

    Example:
        records, rejected = pack(tasks)          # 100 small tasks without a key: 1-5 records
    """
    records: list[PackedRecord] = []
    rejected: dict[str, str] = {}
    open_: dict[str | None, PackedRecord] = {}
    for task in tasks:
        try:
            data, key = kinesis_record(task)
        except TaskRejectedError as exc:
            rejected[task.key] = str(exc)
            continue
        if (alone is not None and alone(task)) or PackedRecord(key).size_with(key, data) > aggregate_bytes:
            records.append(PackedRecord(key, [task], [(key, data)], data=data))
            continue
        current = open_.get(task.partition_key)
        if current is None or current.size_with(key, data) > aggregate_bytes:
            current = open_[task.partition_key] = PackedRecord(key)
            records.append(current)
        current.add(task, key, data)
    for record in records:
        if not record.data:
            record.data = record.parts[0][1] if len(record.parts) == 1 else aggregate(record.parts)
    return records, rejected


K = TypeVar("K")


def _chunks(records: list[tuple[K, dict[str, Any]]]) -> Iterable[list[tuple[K, dict[str, Any]]]]:
    """Runs of at most 500 records and 5 MiB (data and partition keys), as PutRecords takes."""
    chunk: list[tuple[K, dict[str, Any]]] = []
    size = 0
    for entry in records:
        record_size = len(entry[1]["Data"]) + len(entry[1]["PartitionKey"].encode())
        if chunk and (len(chunk) == MAX_BATCH_RECORDS or size + record_size > MAX_BATCH_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(entry)
        size += record_size
    if chunk:
        yield chunk


class KinesisQueue:
    """The queue on a Kinesis stream: PutRecords in chunks of 500 records and 5 MiB, throttled
    records re-sent with back-off until `deadline`.

    Example:
        queue = KinesisQueue(clients.kinesis, settings.stream_name)
    """
    def __init__(self, client: Any, stream_name: str, *, deadline: float = 30.0,
                 base_delay: float = 0.05, max_delay: float = 2.0, sleep: Sleep = asyncio.sleep,
                 aggregate_bytes: int = AGGREGATE_BYTES, alone: Callable[[Task], bool] | None = None) -> None:
        self.client = client
        self.stream_name = stream_name
        self.aggregate_bytes = aggregate_bytes
        self.alone = alone
        self.deadline = deadline
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.put_calls = 0
        self.resent = 0

    @property
    def max_message_bytes(self) -> int:
        return MAX_RECORD_BYTES

    @property
    def honours_execute_at(self) -> bool:
        return False

    async def publish(self, tasks: Sequence[Task]) -> None:
        packed, rejected = pack(tasks, self.aggregate_bytes, self.alone)
        records = [(r.tasks, {"Data": r.data, "PartitionKey": r.partition_key}) for r in packed]
        unwritten: list[Task] = []
        for chunk in _chunks(records):
            for lost in await self._put_with_retries(chunk):
                unwritten += lost
        if unwritten or rejected:
            raise QueueWriteError(f"Kinesis kept refusing records for {self.deadline:.0f}s" if unwritten
                                  else "records rejected before sending", [t.key for t in unwritten], rejected)

    async def put_raw(self, records: Sequence[dict[str, Any]]) -> int:
        """Put records as they are (`Data` bytes, `PartitionKey`), within PutRecords' limits, with
        the same resends as `publish`; how many were still not written at the deadline."""
        unwritten: list[int] = []
        for chunk in _chunks(list(enumerate(records))):
            unwritten += await self._put_with_retries(chunk)
        return len(unwritten)

    async def _put_with_retries(self, chunk: list[tuple[K, dict[str, Any]]]) -> list[K]:
        started = time.monotonic()
        attempt = 0
        pending = chunk
        while True:
            self.put_calls += 1
            response = await self.client.put_records(StreamName=self.stream_name,
                                                     Records=[r for _, r in pending])
            failed = [entry for entry, result in zip(pending, response["Records"], strict=True)
                      if result.get("ErrorCode")]
            if not failed:
                return []
            delay = min(self.max_delay, self.base_delay * 2 ** attempt) * random.uniform(0.5, 1.0)
            if time.monotonic() - started + delay > self.deadline:
                return [t for t, _ in failed]
            attempt += 1
            self.resent += len(failed)
            await self.sleep(delay)
            pending = failed

    async def receive(self, queue_id: str, limit: int) -> list[Task]:
        raise ConfigurationError(
            "a Kinesis stream is consumed by shard, not by queue: use the Lambda handler, or "
            "tq_cloud.local.poller.KinesisShardPoller in a local process")

    async def requeue(self, tasks: Sequence[Task]) -> None:
        await self.publish(tasks)


def decode_record(data: bytes, sequence: str) -> list[Task | UndecodableRecord]:
    """The tasks of one Kinesis record: one, or each user record of a KPL aggregated record
    (identified as `sequence:index`, keeping its own partition key; one that is the task's own
    id, as `pack` writes a task without a key, leaves it without one). A record that is neither a
    task nor an aggregate of them is that record's recorded failure, and no other's."""
    users = deaggregate(data)
    if users is None:
        return [decode_task(data, sequence)]
    decoded: list[Task | UndecodableRecord] = []
    for user in users:
        task = decode_task(user.data, f"{sequence}:{user.index}")
        if isinstance(task, Task) and task.partition_key is None and task.id != user.partition_key \
                and 0 < len(user.partition_key) <= MAX_ID_CHARS:
            task = task.model_copy(update={"partition_key": user.partition_key})
        decoded.append(task)
    return decoded


def decode_lambda_record(record: Mapping[str, Any]) -> list[Task | UndecodableRecord]:
    """The tasks of a record of a Lambda Kinesis event (base64 data under record["kinesis"]["data"])."""
    kinesis = record.get("kinesis", {})
    sequence = str(kinesis.get("sequenceNumber", "?"))
    try:
        data = base64.b64decode(kinesis["data"], validate=True)
    except (KeyError, TypeError, ValueError) as exc:
        return [UndecodableRecord(sequence, f"record data is not base64: {exc!r}", str(kinesis.get("data"))[:200])]
    return decode_record(data, sequence)


def decode_get_records(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, Task | UndecodableRecord]]:
    """The tasks of records from GetRecords (raw bytes under "Data"), each with its record's
    sequence number."""
    return [(r["SequenceNumber"], task) for r in records for task in decode_record(r["Data"], r["SequenceNumber"])]
