"""Re-driving what the worker's event source gave up on: its on-failure destination (an SQS
queue, template.yaml's WorkerFailureQueue) holds one message per batch that exhausted its
retries, naming the batch's range of the stream (`KinesisBatchInfo`), not the records. This
reads each named range again (GetShardIterator AT_SEQUENCE_NUMBER, GetRecords up to the end
sequence number), puts those records back on the stream with their partition keys, and deletes
the message, a bounded number of messages per call.

A range the stream no longer holds (past its retention) cannot be re-sent: its message is
left in the queue and reported. A crash between the put and the delete re-sends the range on
the next call: stored tasks run once whatever the copies (their rows), unstored ones at least once.

Example:
    report = await redrive_failure_destination(clients, settings.failure_queue_url, max_messages=50)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MAX_RECORDS_PER_PUT = 500


@dataclass
class FailureRedrive:
    messages: int = 0
    records: int = 0
    unavailable: list[str] = field(default_factory=list)
    """Ranges no longer in the stream (their messages are kept)."""


async def _read_range(kinesis: Any, info: dict[str, Any]) -> list[dict[str, Any]]:
    stream = info["streamArn"].rsplit("/", 1)[-1]
    start, end = info["startSequenceNumber"], int(info["endSequenceNumber"])
    iterator = (await kinesis.get_shard_iterator(
        StreamName=stream, ShardId=info["shardId"], ShardIteratorType="AT_SEQUENCE_NUMBER",
        StartingSequenceNumber=start))["ShardIterator"]
    records: list[dict[str, Any]] = []
    while iterator:
        response = await kinesis.get_records(ShardIterator=iterator, Limit=1000)
        batch = response["Records"]
        records += [r for r in batch if int(r["SequenceNumber"]) <= end]
        if not batch or int(batch[-1]["SequenceNumber"]) >= end or not response.get("MillisBehindLatest", 1):
            break
        iterator = response.get("NextShardIterator")
    return records


async def redrive_failure_destination(clients: Any, queue_url: str, *, max_messages: int = 100) -> FailureRedrive:
    """Re-send the stream ranges named by up to `max_messages` messages of the on-failure queue."""
    report = FailureRedrive()
    while report.messages + len(report.unavailable) < max_messages:
        received = await clients.sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=min(10, max_messages - report.messages), WaitTimeSeconds=0)
        messages = received.get("Messages", [])
        if not messages:
            break
        for message in messages:
            info = json.loads(message["Body"])["KinesisBatchInfo"]
            records = await _read_range(clients.kinesis, info)
            if not records:
                span = f"{info['shardId']} {info['startSequenceNumber']}..{info['endSequenceNumber']}"
                report.unavailable.append(span)
                continue
            stream = info["streamArn"].rsplit("/", 1)[-1]
            for start in range(0, len(records), MAX_RECORDS_PER_PUT):
                chunk = records[start:start + MAX_RECORDS_PER_PUT]
                response = await clients.kinesis.put_records(StreamName=stream, Records=[
                    {"Data": r["Data"], "PartitionKey": r["PartitionKey"]} for r in chunk])
                if response.get("FailedRecordCount"):
                    raise RuntimeError(f"{response['FailedRecordCount']} records were not re-sent (throttled); "
                                       "run the redrive again: the message is kept until all are")
            await clients.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            report.messages += 1
            report.records += len(records)
    return report
