"""Re-driving what the worker's event source gave up on: its on-failure destination (an SQS
queue, template.yaml's WorkerFailureQueue) holds one message per batch that exhausted its
retries, naming the batch's range of the stream (`KinesisBatchInfo`), not the records. This
reads each named range again (GetShardIterator AT_SEQUENCE_NUMBER, then GetRecords, following
NextShardIterator across empty pages until it passes the range's end or reaches the shard's
tip), puts back on the stream the records whose tasks did not commit, with their partition
keys, and deletes the message, a bounded number of messages per call.

What is re-sent: a range holds every record of the shard between its ends, with
ParallelizationFactor > 1 other keys' records too, which ran. A record whose task has a row
showing that attempt committed (final, or a later attempt recorded) is skipped; a task without
a row cannot be told apart and is re-sent (unstored tasks run at least once). Every PutRecords
stays within 500 records and 5 MiB; records refused for throughput are sent again, and if they
still are, the message is kept for the next call.

A range the stream no longer holds (past its retention) cannot be re-sent: its message is
left in the queue and reported. A crash between the put and the delete re-sends the range on
the next call: stored tasks run once whatever the copies (their rows), unstored ones at least once.

Example:
    report = await redrive_failure_destination(clients, settings.failure_queue_url, max_messages=50,
                                               storage=stack.storage)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tq_cloud.backends.aws.kinesis import KinesisQueue, decode_record
from tq_cloud.core.codec import usable_id
from tq_cloud.domain.task import Task
from tq_cloud.ports.storage import TaskStorage

MAX_READS_PER_RANGE = 10_000
"""GetRecords calls at most for one range (a range is one failed batch: a few thousand records)."""


@dataclass
class FailureRedrive:
    messages: int = 0
    records: int = 0
    skipped: int = 0
    """Records whose tasks' rows show they committed."""
    unavailable: list[str] = field(default_factory=list)
    """Ranges no longer in the stream (their messages are kept)."""


async def _read_range(kinesis: Any, info: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """Every record of the range: an empty page is no end (Kinesis returns them while it reads
    past trimmed or sparse parts of a shard); the end is a record past the range, the shard's
    tip (nothing behind latest), or a closed shard's last page. Also says whether it got there
    (a range not read to its end keeps its message)."""
    stream = info["streamArn"].rsplit("/", 1)[-1]
    start, end = info["startSequenceNumber"], int(info["endSequenceNumber"])
    iterator = (await kinesis.get_shard_iterator(
        StreamName=stream, ShardId=info["shardId"], ShardIteratorType="AT_SEQUENCE_NUMBER",
        StartingSequenceNumber=start))["ShardIterator"]
    records: list[dict[str, Any]] = []
    for _ in range(MAX_READS_PER_RANGE):
        if not iterator:
            return records, True
        response = await kinesis.get_records(ShardIterator=iterator, Limit=1000)
        batch = response["Records"]
        records += [r for r in batch if int(r["SequenceNumber"]) <= end]
        past_end = bool(batch) and int(batch[-1]["SequenceNumber"]) >= end
        if past_end or (not batch and not response.get("MillisBehindLatest")):
            return records, True
        iterator = response.get("NextShardIterator")
    return records, False


async def _uncommitted(records: list[dict[str, Any]], storage: TaskStorage | None) -> list[dict[str, Any]]:
    """The records to send again: all but those whose every task has a row showing its attempt
    committed."""
    if storage is None:
        return records
    decoded = {r["SequenceNumber"]: [t for t in decode_record(r["Data"], r["SequenceNumber"]) if isinstance(t, Task)
                                     and usable_id(t.id)] for r in records}
    ids = list(dict.fromkeys(t.key for tasks in decoded.values() for t in tasks))
    rows = {row.key: row for start in range(0, len(ids), 100) for row in await storage.get(ids[start:start + 100])}

    def committed(task: Task) -> bool:
        row = rows.get(task.key)
        return row is not None and (row.status.is_terminal or row.retry_count > task.retry_count)

    return [r for r in records if not (decoded[r["SequenceNumber"]] and all(
        committed(t) for t in decoded[r["SequenceNumber"]]))]


async def redrive_failure_destination(clients: Any, queue_url: str, *, max_messages: int = 100,
                                      storage: TaskStorage | None = None) -> FailureRedrive:
    """Re-send the stream ranges named by up to `max_messages` messages of the on-failure queue
    (with `storage`, only the records whose tasks did not commit)."""
    report = FailureRedrive()
    while report.messages + len(report.unavailable) < max_messages:
        received = await clients.sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=min(10, max_messages - report.messages), WaitTimeSeconds=0)
        messages = received.get("Messages", [])
        if not messages:
            break
        for message in messages:
            info = json.loads(message["Body"])["KinesisBatchInfo"]
            records, complete = await _read_range(clients.kinesis, info)
            if not records or not complete:
                span = f"{info['shardId']} {info['startSequenceNumber']}..{info['endSequenceNumber']}"
                report.unavailable.append(span + ("" if complete else " (not read to its end)"))
                continue
            resend = await _uncommitted(records, storage)
            queue = KinesisQueue(clients.kinesis, info["streamArn"].rsplit("/", 1)[-1])
            unwritten = await queue.put_raw([{"Data": r["Data"], "PartitionKey": r["PartitionKey"]} for r in resend])
            if unwritten:
                raise RuntimeError(f"{unwritten} records were not re-sent (throttled); "
                                   "run the redrive again: the message is kept until all are")
            await clients.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            report.messages += 1
            report.records += len(resend)
            report.skipped += len(records) - len(resend)
    return report
