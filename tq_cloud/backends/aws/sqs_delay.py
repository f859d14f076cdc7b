"""The delay lane on SQS: tasks wait as messages with their own `DelaySeconds` (up to 15 minutes).

Tasks of one send due within the same second share a message (a JSON array of tasks, up to
256 KB; a task alone is its own JSON, as it always was): a burst of retries or a batch of
tasks delayed alike costs one message, one receive and one delete, not one each. A packed
message whose forward failed in part comes back whole: its tasks that did reach the stream are
forwarded again, as a message delivered twice would be (below).

An SQS event source mapping gives the messages, once due, to the worker, which forwards them
to the stream under the task's partition key (aws_lambda/delay_forwarder.py): the task then
runs like any other. SQS delivers at least once; a message forwarded twice is two records of
the same task attempt, which replay into the same state (as a Kinesis record delivered twice).
Delays are whole seconds, rounded down: a task arrives up to a second early rather than a second
late, and the worker holds it until it is due (core/runner.py, MAX_HOLD), so it never runs early.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from tq_cloud.clock import Clock
from tq_cloud.core.codec import encode_task
from tq_cloud.domain.task import Task
from tq_cloud.errors import PayloadTooLargeError, QueueWriteError, TaskRejectedError
from tq_cloud.ports.delay import SQS_MAX_DELAY, SQS_MAX_MESSAGE_BYTES, LaneMessage, retry_visibility

MAX_DELAY, MAX_MESSAGE_BYTES = SQS_MAX_DELAY, SQS_MAX_MESSAGE_BYTES
log = logging.getLogger("tq_cloud.delay_lane")
_BATCH = 10
Entry = tuple[list[Task], dict[str, Any]]
"""A message to send: its tasks, and its SendMessageBatch entry."""


class SqsDelayLane:
    """Example:
        lane = SqsDelayLane(clients.sqs, settings.delay_queue_url, clock)
        handler = TaskHandler(..., delay_lane=lane)   # build_stack does this when the URL is set
    """

    def __init__(self, client: Any, queue_url: str, clock: Clock, *, attempts: int = 4,
                 base_delay: float = 0.05) -> None:
        self.client = client
        self.queue_url = queue_url
        self.clock = clock
        self.attempts = attempts
        self.base_delay = base_delay
        self.send_calls = 0

    @property
    def max_delay(self) -> timedelta:
        return MAX_DELAY

    @property
    def max_message_bytes(self) -> int:
        return MAX_MESSAGE_BYTES

    def _entry(self, index: int, body: bytes, delay: int) -> dict[str, Any]:
        return {"Id": str(index), "MessageBody": body.decode(), "DelaySeconds": delay}

    async def send(self, tasks: Sequence[Task]) -> None:
        messages, rejected = lane_messages(tasks, self.clock.now())
        entries = [(group, self._entry(i, body, delay)) for i, (group, body, delay) in enumerate(messages)]
        unwritten: list[str] = []
        for batch in _batches(entries):
            failed, refused = await self._send_with_retries(batch)
            unwritten += failed
            rejected |= refused
        if unwritten or rejected:
            raise QueueWriteError("the SQS delay lane did not take every task", unwritten, rejected)

    async def _send_with_retries(self, batch: list[Entry]) -> tuple[list[str], dict[str, str]]:
        pending, refused = batch, dict[str, str]()
        for attempt in range(self.attempts):
            self.send_calls += 1
            response = await self.client.send_message_batch(QueueUrl=self.queue_url, Entries=[e for _, e in pending])
            by_id = {e["Id"]: (group, e) for group, e in pending}
            retry = []
            for failure in response.get("Failed", []):
                group, entry = by_id[failure["Id"]]
                if failure.get("SenderFault"):
                    refused |= {task.key: f"SQS refused the message: {failure.get('Code')}: {failure.get('Message')}"
                                for task in group}
                else:
                    retry.append((group, entry))
            if not retry:
                return [], refused
            pending = retry
            if attempt + 1 < self.attempts:
                await asyncio.sleep(self.base_delay * 2 ** attempt * random.uniform(0.5, 1.0))
        return [task.key for group, _ in pending for task in group], refused

    async def retry_soon(self, messages: Sequence[LaneMessage]) -> None:
        """ChangeMessageVisibilityBatch, 10 messages a call, each call tried `attempts` times;
        what still fails keeps the queue's visibility timeout (logged)."""
        for start in range(0, len(messages), _BATCH):
            pending = [{"Id": str(i), "ReceiptHandle": m.receipt, "VisibilityTimeout": retry_visibility(m.receives)}
                       for i, m in enumerate(messages[start:start + _BATCH])]
            for attempt in range(self.attempts):
                try:
                    response = await self.client.change_message_visibility_batch(QueueUrl=self.queue_url,
                                                                                 Entries=pending)
                except Exception:
                    if attempt + 1 == self.attempts:
                        log.exception("%d delay-lane messages keep the queue's visibility timeout", len(pending))
                        break
                else:
                    failed = {f["Id"] for f in response.get("Failed", []) if not f.get("SenderFault")}
                    pending = [e for e in pending if e["Id"] in failed]
                    if not pending:
                        break
                await asyncio.sleep(self.base_delay * 2 ** attempt * random.uniform(0.5, 1.0))


def lane_message(task: Task, now: datetime) -> tuple[bytes, int]:
    """A task's message body and its DelaySeconds: whole seconds, rounded down (the worker
    holds a task that arrives early), at most 15 minutes; PayloadTooLargeError over 256 KB."""
    body = sqs_safe(encode_task(task))
    if len(body) > MAX_MESSAGE_BYTES:
        raise PayloadTooLargeError(task.id, len(body), MAX_MESSAGE_BYTES, "the SQS delay lane")
    wait = (task.execute_at - now).total_seconds() if task.execute_at else 0.0
    return body, min(max(math.floor(wait), 0), int(MAX_DELAY.total_seconds()))


def lane_messages(tasks: Sequence[Task], now: datetime
                  ) -> tuple[list[tuple[list[Task], bytes, int]], dict[str, str]]:
    """The lane's messages for `tasks`: (its tasks, body, DelaySeconds) each, the tasks of one
    second packed together as a JSON array up to 256 KB; and, by task id, why a task cannot
    wait in the lane at all (PayloadTooLargeError's reason)."""
    by_delay: dict[int, list[tuple[Task, bytes]]] = {}
    rejected: dict[str, str] = {}
    for task in tasks:
        try:
            body, delay = lane_message(task, now)
        except TaskRejectedError as exc:
            rejected[task.key] = str(exc)
            continue
        by_delay.setdefault(delay, []).append((task, body))
    messages: list[tuple[list[Task], bytes, int]] = []
    for delay, members in by_delay.items():
        packed: list[tuple[Task, bytes]] = []
        size = 2
        for task, body in members:
            if packed and size + len(body) + 1 > MAX_MESSAGE_BYTES:
                messages.append(_packed(packed, delay))
                packed, size = [], 2
            packed.append((task, body))
            size += len(body) + 1
        messages.append(_packed(packed, delay))
    return messages, rejected


def _packed(members: list[tuple[Task, bytes]], delay: int) -> tuple[list[Task], bytes, int]:
    body = members[0][1] if len(members) == 1 else b"[" + b",".join(b for _, b in members) + b"]"
    return [task for task, _ in members], body, delay


def _batches(entries: list[Entry]) -> Iterator[list[Entry]]:
    """At most 10 messages and 256 KB a request."""
    batch: list[Entry] = []
    size = 0
    for entry in entries:
        length = len(entry[1]["MessageBody"].encode())
        if batch and (len(batch) == _BATCH or size + length > MAX_MESSAGE_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += length
    if batch:
        yield batch


_SQS_REFUSED = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""Characters an SQS message body may not hold (#x9, #xA, #xD, #x20 to #xD7FF, #xE000 to
#xFFFD, #x10000 to #x10FFFF are allowed); Kinesis and DynamoDB take them all."""


def sqs_safe(body: bytes) -> bytes:
    """A task's JSON with every character SQS refuses written as a JSON escape: such characters
    can only stand inside JSON strings, so the body decodes to the very same task."""
    text = body.decode("utf-8", "surrogatepass")
    if _SQS_REFUSED.search(text) is None:
        return body
    return _SQS_REFUSED.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode()
