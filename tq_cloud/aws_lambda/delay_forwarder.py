"""The worker's second source: due tasks from the SQS delay lane, forwarded to the stream.

Each message body is a task as it was sent, or a JSON array of the tasks of one send due in the
same second (`backends/aws/sqs_delay.lane_messages`); each goes to Kinesis under its partition key
(which the router set when the task was added), so it keeps the ordering of its key and runs
through the one execution path. A message that is not a task is recorded as a failed task,
once (its id derives from the message id, and its place in the array), and deleted; the other
tasks of its message go on. Every message of a batch ends
forwarded, recorded as failed with its reason, or named in `batchItemFailures` (a write that
failed, a failure that could not be recorded), so SQS delivers it again; after the queue's
receive limit it goes to the dead-letter queue: never deleted unrecorded. A message delivered
again comes back after a short visibility that doubles with each receive (1 s, 2 s, 4 s, ...:
`ports.delay.retry_visibility`), not after the queue's 300 s: a forward that failed once makes
its task seconds late, not minutes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tq_cloud.core.codec import UndecodableRecord, decode_task, decode_task_object
from tq_cloud.domain.task import Task
from tq_cloud.errors import QueueWriteError
from tq_cloud.ports.delay import LaneMessage

if TYPE_CHECKING:
    from tq_cloud.assembly.handler import TaskHandler

log = logging.getLogger("tq_cloud.delay_lane")

def is_sqs_event(event: Mapping[str, Any]) -> bool:
    records = event.get("Records") or []
    return bool(records) and records[0].get("eventSource") == "aws:sqs"


async def forward_due(handler: TaskHandler, records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Forward the messages' tasks to the queue; the message ids to deliver again."""
    tasks: dict[str, list[Task]] = {}
    undecodable: dict[str, list[UndecodableRecord]] = {}
    for record in records:
        message_id = str(record.get("messageId", "?"))
        for decoded in decode_lane_body(str(record.get("body", "")).encode(), f"sqs:{message_id}"):
            if isinstance(decoded, UndecodableRecord):
                undecodable.setdefault(message_id, []).append(decoded)
            else:
                tasks.setdefault(message_id, []).append(decoded)
    failed: set[str] = set()
    if await handler.record_undecodable([u for found in undecodable.values() for u in found]) is not None:
        failed |= set(undecodable)  # not recorded: delivered again, never dropped
    if tasks:
        failed |= await _publish(handler, tasks)
    await _retry_soon(handler, [r for r in records if str(r.get("messageId", "?")) in failed])
    return sorted(failed)


def decode_lane_body(body: bytes, record_id: str) -> list[Task | UndecodableRecord]:
    """A message's tasks: one task, or each task of a packed message (the n-th identified as
    `record_id:n`); a body that is neither is that message's one recorded failure."""
    if not body.lstrip().startswith(b"["):
        return [decode_task(body, record_id)]
    try:
        items = json.loads(body)
    except ValueError:
        return [decode_task(body, record_id)]
    if not isinstance(items, list):
        return [decode_task(body, record_id)]
    return [decode_task_object(item, f"{record_id}:{n}") for n, item in enumerate(items)]


async def _retry_soon(handler: TaskHandler, records: Sequence[Mapping[str, Any]]) -> None:
    """Best effort: whatever goes wrong here, the messages still come back, after the queue's
    visibility timeout."""
    lane = handler.router.delay_lane
    if lane is None or not records:
        return
    try:
        await lane.retry_soon([LaneMessage(str(r["receiptHandle"]), _receives(r)) for r in records
                               if r.get("receiptHandle")])
    except Exception:
        log.exception("%d delay-lane messages keep the queue's visibility timeout", len(records))


def _receives(record: Mapping[str, Any]) -> int:
    count = str((record.get("attributes") or {}).get("ApproximateReceiveCount", "1"))
    return int(count) if count.isdigit() else 1


async def _publish(handler: TaskHandler, tasks: dict[str, list[Task]]) -> set[str]:
    """The ids of the messages to deliver again: those with a task not written, or one that can
    never be and whose failure could not be recorded either; all of them when the write failed
    without saying which records went through."""
    def messages_of(keys: set[str]) -> set[str]:
        return {m for m, group in tasks.items() if any(t.key in keys for t in group)}

    every = [task for group in tasks.values() for task in group]
    try:
        await handler.router.queue.publish(every)
    except QueueWriteError as exc:
        again = messages_of(set(exc.task_ids))
        if exc.rejected:
            rejected = [t for t in every if t.key in exc.rejected]
            try:
                await handler.router.fail_rejected(rejected, exc.rejected)
            except Exception:
                log.exception("could not record %d tasks the stream refuses; delivered again", len(rejected))
                again |= messages_of(set(exc.rejected))
        return again
    except Exception:
        log.exception("forwarding %d due tasks failed; their messages are delivered again", len(every))
        return set(tasks)
    return set()
