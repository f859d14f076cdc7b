"""A Kinesis stream and its Lambda event source mapping, simulated.

Records go to a shard by a hash of their partition key and, within the shard, to one of
ParallelizationFactor lanes by the same hash, so that one key's records stay in order (as
Lambda keeps them with a parallelization factor). Each lane is consumed by its own container:
it waits for a full batch or the batching window, invokes the worker handler with a
real-shaped event, and then, as Lambda does, moves its checkpoint past the records before the
first one named in `batchItemFailures`, retries from there, bisects a batch whose invocation
failed (crashed, timed out), and after MaximumRetryAttempts sends the batch's range to the
on-failure destination and moves on. As Lambda documents, splitting a batch does not count
towards the retry quota.
"""

from __future__ import annotations

import asyncio
import base64
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tq_cloud.backends.aws.kinesis import AGGREGATE_BYTES, MAX_RECORD_BYTES, pack
from tq_cloud.domain.task import Task
from tq_cloud.errors import ConfigurationError, QueueWriteError

Key = tuple[str, int, int]


@dataclass(slots=True)
class Record:
    seq: int
    partition_key: str
    data: bytes
    keys: tuple[Key, ...]
    """The attempts of the tasks it carries: one, several (aggregated), or none (another
    producer's record)."""
    arrival: float

    def as_lambda_record(self) -> dict[str, Any]:
        return {"kinesis": {"sequenceNumber": f"{self.seq:020d}", "partitionKey": self.partition_key,
                            "data": base64.b64encode(self.data).decode()}}


@dataclass(eq=False)
class Lane:
    name: str
    records: list[Record] = field(default_factory=list)
    checkpoint: int = 0
    retries: int = 0
    size: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def pending(self) -> int:
        return len(self.records) - self.checkpoint


def attempt_key(task: Task) -> Key:
    return task.key, task.execution_stats.retry_count, task.execution_stats.deferrals


class SimStream:
    """The MessageQueue port over the simulated shards (publish only, like Kinesis)."""

    def __init__(self, shards: int, parallelization: int, on_written: Callable[[Record, Task | None], None],
                 *, aggregate_bytes: int = AGGREGATE_BYTES, alone: Callable[[Task], bool] | None = None) -> None:
        self.lanes = [Lane(f"shard{s}/lane{p}") for s in range(shards) for p in range(parallelization)]
        self.shards = shards
        self.parallelization = parallelization
        self.on_written = on_written
        self.aggregate_bytes = aggregate_bytes
        self.alone = alone
        self.written = 0
        self.foreign: list[Record] = []
        """Records written without a task (other producers'), kept for the final checks."""
        self._seq = 0

    @property
    def max_message_bytes(self) -> int:
        return MAX_RECORD_BYTES

    @property
    def honours_execute_at(self) -> bool:
        return False

    def lane_of(self, key: str) -> Lane:
        h = zlib.crc32(key.encode())
        shard = h % self.shards
        return self.lanes[shard * self.parallelization + (h // self.shards) % self.parallelization]

    def append(self, data: bytes, key: str, tasks: Sequence[Task] = ()) -> Record:
        self._seq += 1
        self.written += 1
        lane = self.lane_of(key)
        record = Record(self._seq, key, data, tuple(attempt_key(t) for t in tasks), asyncio.get_running_loop().time())
        lane.records.append(record)
        lane.wake.set()
        if not tasks:
            self.foreign.append(record)
            self.on_written(record, None)
        for task in tasks:
            self.on_written(record, task)
        return record

    async def publish(self, tasks: Sequence[Task]) -> None:
        """As KinesisQueue publishes: packed into aggregated records (`pack`, the same code)."""
        packed, rejected = pack(tasks, self.aggregate_bytes, self.alone)
        for record in packed:
            self.append(record.data, record.partition_key, record.tasks)
        if rejected:
            raise QueueWriteError("records rejected before sending", [], rejected)

    async def receive(self, queue_id: str, limit: int) -> list[Task]:
        raise ConfigurationError("the simulated stream is consumed by its event source mapping")

    async def requeue(self, tasks: Sequence[Task]) -> None:
        await self.publish(tasks)


Invoke = Callable[[Lane, list[Record]], Awaitable[list[int] | None]]
"""Returns the failed sequence numbers, or None when the invocation failed as a whole."""


@dataclass
class MappingConfig:
    batch_size: int
    batching_window: float
    maximum_retry_attempts: int


class EventSourceMapping:
    def __init__(self, stream: SimStream, config: MappingConfig, invoke: Invoke) -> None:
        self.stream = stream
        self.config = config
        self.invoke = invoke
        self.on_failure: list[tuple[str, int, int]] = []
        self.invocations = 0
        self.redelivered = 0

    def idle(self) -> bool:
        return all(lane.pending == 0 for lane in self.stream.lanes)

    def backlog(self) -> int:
        return sum(lane.pending for lane in self.stream.lanes)

    async def consume(self, lane: Lane) -> None:
        cfg = self.config
        lane.size = cfg.batch_size
        delivered_up_to = 0
        while True:
            if lane.pending == 0:
                lane.wake.clear()
                await lane.wake.wait()
                continue
            first = lane.records[lane.checkpoint]
            wait = first.arrival + cfg.batching_window - asyncio.get_running_loop().time()
            if lane.pending < cfg.batch_size and wait > 0:
                await asyncio.sleep(wait)
            batch = lane.records[lane.checkpoint:lane.checkpoint + min(cfg.batch_size, lane.size)]
            self.invocations += 1
            self.redelivered += sum(1 for r in batch if r.seq <= delivered_up_to)
            delivered_up_to = max(delivered_up_to, batch[-1].seq)
            failed = await self.invoke(lane, batch)
            if failed is None:  # crashed or timed out: bisect (not counted as a retry) and retry
                if len(batch) == 1:
                    lane.retries += 1
                lane.size = max(1, len(batch) // 2)
            elif failed:
                done = next(i for i, r in enumerate(batch) if r.seq == min(failed))
                lane.checkpoint += done
                lane.retries = lane.retries + 1 if done == 0 else 0
            else:
                lane.checkpoint += len(batch)
                lane.retries = 0
                lane.size = cfg.batch_size
            if lane.checkpoint > 1000:  # nothing before the checkpoint is ever read again
                del lane.records[:lane.checkpoint]
                lane.checkpoint = 0
            if lane.retries > cfg.maximum_retry_attempts:
                batch = lane.records[lane.checkpoint:lane.checkpoint + min(cfg.batch_size, lane.size)]
                self.on_failure.append((lane.name, batch[0].seq, batch[-1].seq))
                lane.checkpoint += len(batch)
                lane.retries = 0
            if failed is None or failed:
                await asyncio.sleep(1.0)  # Lambda retries after a short pause
