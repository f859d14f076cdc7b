"""An emulated Lambda event source mapping for a Kinesis stream.

It polls each shard, builds events of Lambda's exact shape (base64 data, sequence numbers,
event ids, the stream ARN), and invokes the worker handler in a thread, as Lambda invokes a
function in its own process. Its semantics follow the mapping in template.yaml:
ReportBatchItemFailures (resume from the first reported record), BisectBatchOnFunctionError
(split a batch whose invocation raised), MaximumRetryAttempts, then the on-failure destination.

Shards are delivered concurrently, and within a shard up to ParallelizationFactor batches at
once, split by a hash of the partition key so that one key's records stay in order, as Lambda
does. Each concurrent slot invokes its own container (`containers()` makes one: a handler with
its own runtime, as a separate Lambda container); without a factory, invocations of the one
handler given are serialised.

With `checkpoints`, each shard is read on from where the last finished poll of it ended (kept on
the endpoint, see checkpoints.py), as Lambda's mapping resumes after a restart; without, from the
stream's start (TRIM_HORIZON).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tq_cloud.local.checkpoints import ShardCheckpoints
from tq_cloud.local.shards import ShardReader

log = logging.getLogger("tq_cloud.local.esm")

Handler = Callable[[Mapping[str, Any], Any], Any]


class InvocationContext:
    """The part of Lambda's context object the handler uses; safe to read from any thread."""

    def __init__(self, timeout_ms: int) -> None:
        self.deadline = time.monotonic() + timeout_ms / 1000
        self.function_name = "tq-worker-local"
        self.aws_request_id = "local"

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.monotonic()) * 1000)


@dataclass
class MappingStats:
    polls: int = 0
    invocations: int = 0
    records: int = 0
    reported_failures: int = 0
    errors: int = 0
    sent_to_on_failure: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    iterator_age_ms: float = 0.0
    max_iterator_age_ms: float = 0.0
    behind_ms: dict[str, int] = field(default_factory=dict)  # each shard's last MillisBehindLatest

    @property
    def caught_up(self) -> bool:
        """Every shard has been read to its tip at least once since the last records arrived."""
        return bool(self.behind_ms) and not any(self.behind_ms.values())


def failure_message(stream_arn: str, shard: str, records: list[dict[str, Any]], attempts: int) -> dict[str, Any]:
    """The message Lambda sends a Kinesis mapping's on-failure destination: the batch's range."""
    arrivals = [r["ApproximateArrivalTimestamp"].isoformat() for r in records]
    return {"requestContext": {"requestId": "local", "functionArn": "tq-worker-local",
                               "condition": "RetryAttemptsExhausted", "approximateInvokeCount": attempts + 1},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "version": "1.0",
            "KinesisBatchInfo": {"shardId": shard, "startSequenceNumber": records[0]["SequenceNumber"],
                                 "endSequenceNumber": records[-1]["SequenceNumber"],
                                 "approximateArrivalOfFirstRecord": arrivals[0],
                                 "approximateArrivalOfLastRecord": arrivals[-1],
                                 "batchSize": len(records), "streamArn": stream_arn}}


class EmulatedEventSourceMapping:
    def __init__(self, kinesis: Any, stream_name: str, stream_arn: str, handler: Handler, *,
                 batch_size: int = 100, batching_window: float = 1.0, max_retries: int = 10,
                 function_timeout_ms: int = 300_000, parallelization: int = 1,
                 containers: Callable[[], Handler] | None = None,
                 checkpoints: ShardCheckpoints | None = None,
                 on_failure: tuple[Any, str] | None = None) -> None:
        self.kinesis = kinesis
        self.stream_name = stream_name
        self.stream_arn = stream_arn
        self.handler = handler
        self.batch_size = batch_size
        self.batching_window = batching_window
        self.max_retries = max_retries
        self.function_timeout_ms = function_timeout_ms
        self.parallelization = parallelization
        self.containers = containers
        self.checkpoints = checkpoints
        self.on_failure = on_failure
        """(SQS client, queue URL): the on-failure destination, sent Lambda's message for each
        batch that exhausted its retries (what `tq-cloud redrive --from-failure-queue` reads)."""
        self.stats = MappingStats()
        self._polled = asyncio.Condition()
        self.reader = ShardReader(kinesis, stream_name, self._checkpoint)
        self._slots: dict[str, Handler] = {}
        self._slots_lock = threading.Lock()
        self._serial = threading.Lock()

    def _call(self, slot: str, event: Mapping[str, Any], context: Any) -> Any:
        """In a worker thread: the slot's own container, made on first use (in this thread,
        since a container's runtime runs its own event loop)."""
        if self.containers is None:
            with self._serial:
                return self.handler(event, context)
        with self._slots_lock:
            handler = self._slots.get(slot)
            if handler is None:
                handler = self._slots[slot] = self.containers()
        return handler(event, context)

    async def _checkpoint(self, shard: str) -> str | None:
        return await self.checkpoints.get(self.stream_arn, shard) if self.checkpoints else None

    def slot_handlers(self) -> list[Handler]:
        """The containers made so far (to shut down with the runtime)."""
        with self._slots_lock:
            return list(self._slots.values())

    def _event(self, shard: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {"Records": [{
            "kinesis": {"partitionKey": r["PartitionKey"], "kinesisSchemaVersion": "1.0",
                        "data": base64.b64encode(r["Data"]).decode(), "sequenceNumber": r["SequenceNumber"],
                        "approximateArrivalTimestamp": r["ApproximateArrivalTimestamp"].timestamp()},
            "eventSource": "aws:kinesis", "eventID": f"{shard}:{r['SequenceNumber']}",
            "invokeIdentityArn": "arn:aws:iam::123456789012:role/tq-worker", "eventVersion": "1.0",
            "eventName": "aws:kinesis:record", "eventSourceARN": self.stream_arn, "awsRegion": "us-east-1",
        } for r in records]}

    async def _invoke(self, shard: str, records: list[dict[str, Any]], slot: str) -> list[dict[str, Any]]:
        """Invoke once; return the records to retry (from the first reported failure on)."""
        self.stats.invocations += 1
        self.stats.records += len(records)
        context = InvocationContext(self.function_timeout_ms)
        self.stats.in_flight += 1
        try:
            response = await asyncio.to_thread(self._call, slot, self._event(shard, records), context)
        finally:
            self.stats.in_flight -= 1
        failures = [f["itemIdentifier"] for f in (response or {}).get("batchItemFailures", [])]
        if not failures:
            return []
        self.stats.reported_failures += len(failures)
        first = min(i for i, r in enumerate(records) if r["SequenceNumber"] in set(failures))
        return records[first:]

    async def _deliver(self, shard: str, records: list[dict[str, Any]], slot: str) -> None:
        """Deliver with retries and bisection, as Lambda does for one batch."""
        queue: list[tuple[list[dict[str, Any]], int]] = [(records, 0)]
        while queue:
            batch, attempt = queue.pop(0)
            try:
                retry = await self._invoke(shard, batch, slot)
            except Exception:
                self.stats.errors += 1
                log.exception("worker invocation raised on %d records", len(batch))
                if attempt >= self.max_retries:
                    await self._to_on_failure(shard, batch)
                elif len(batch) > 1:
                    half = len(batch) // 2
                    queue[:0] = [(batch[:half], attempt + 1), (batch[half:], attempt + 1)]
                else:
                    queue.insert(0, (batch, attempt + 1))
                continue
            if retry:
                if attempt >= self.max_retries:
                    await self._to_on_failure(shard, retry)
                else:
                    queue.insert(0, (retry, attempt + 1))

    async def _to_on_failure(self, shard: str, records: list[dict[str, Any]]) -> None:
        log.error("%d records exhausted their retries; sent to the on-failure destination", len(records))
        self.stats.sent_to_on_failure.append({"shard": shard, "first": records[0]["SequenceNumber"],
                                              "count": len(records)})
        if self.on_failure is not None:
            sqs, url = self.on_failure
            await sqs.send_message(QueueUrl=url, MessageBody=json.dumps(failure_message(
                self.stream_arn, shard, records, self.max_retries)))

    async def poll_once(self) -> int:
        """One GetRecords per shard, all shards at once; each shard's records delivered in up to
        ParallelizationFactor ordered lanes at once."""
        self.stats.polls += 1
        shards = await self.reader.shards()
        delivered = sum(await asyncio.gather(*(self._poll_shard(shard) for shard in shards)))
        async with self._polled:
            self._polled.notify_all()
        return delivered

    async def _poll_shard(self, shard: str) -> int:
        read = await self.reader.read(shard, self.batch_size)
        if read is None:  # a closed shard, read to its end
            self.stats.behind_ms[shard] = 0
            return 0
        records, behind_ms = read
        self.stats.behind_ms[shard] = behind_ms if records else 0
        if records:
            oldest = min(r["ApproximateArrivalTimestamp"].timestamp() for r in records)
            self.stats.iterator_age_ms = max((time.time() - oldest) * 1000, 0.0)
            self.stats.max_iterator_age_ms = max(self.stats.max_iterator_age_ms, self.stats.iterator_age_ms)
        lanes: dict[int, list[dict[str, Any]]] = {}
        for record in records:
            lane = zlib.crc32(record["PartitionKey"].encode()) % self.parallelization
            lanes.setdefault(lane, []).append(record)
        await asyncio.gather(*(self._deliver(shard, batch, f"{shard}/{lane}") for lane, batch in lanes.items()))
        if records and self.checkpoints:  # every lane of the poll is done (or sent to on-failure)
            await self.checkpoints.put(self.stream_arn, shard, records[-1]["SequenceNumber"])
        return len(records)

    async def caught_up(self) -> None:
        """Return once a poll that began after this call has found every shard at its tip."""
        start = self.stats.polls
        async with self._polled:
            await self._polled.wait_for(lambda: self.stats.polls > start and self.stats.caught_up)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not await self.poll_once():
                try:
                    await asyncio.wait_for(stop.wait(), self.batching_window)
                except TimeoutError:
                    pass
