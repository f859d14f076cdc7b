"""An emulated Lambda event source mapping for the SQS delay lane (`tq-cloud dev`).

It polls the queue (short polls, a pause between empty ones: a long poll would hold moto's
server, which serves one request at a time), gives the worker handler events of Lambda's SQS shape, deletes the
messages the invocation did not report in `batchItemFailures`, and lets the reported ones
come back after their visibility timeout, as Lambda's mapping with ReportBatchItemFailures does
(the dead-letter queue after the queue's receive limit is SQS's own). moto honours
`DelaySeconds`, so a message arrives when its task is due.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tq_cloud.local.esm import InvocationContext

log = logging.getLogger("tq_cloud.local.esm")

Handler = Callable[[Mapping[str, Any], Any], Any]


@dataclass
class SqsMappingStats:
    polls: int = 0
    invocations: int = 0
    messages: int = 0
    reported_failures: int = 0
    errors: int = 0
    in_flight: int = 0


class EmulatedSqsEventSourceMapping:
    def __init__(self, sqs: Any, queue_url: str, queue_arn: str, handler: Handler, *, batch_size: int = 10,
                 idle_pause: float = 0.2, visibility_timeout: int = 5, function_timeout_ms: int = 300_000) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.handler = handler
        self.batch_size = batch_size
        self.idle_pause = idle_pause
        self.visibility_timeout = visibility_timeout
        self.function_timeout_ms = function_timeout_ms
        self.stats = SqsMappingStats()

    def _event(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        return {"Records": [{
            "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
            "attributes": m.get("Attributes", {}), "messageAttributes": {},
            "md5OfBody": hashlib.md5(m["Body"].encode()).hexdigest(),
            "eventSource": "aws:sqs", "eventSourceARN": self.queue_arn, "awsRegion": "us-east-1",
        } for m in messages]}

    async def poll_once(self) -> int:
        """One poll; invoke on what it got; delete what the invocation took."""
        self.stats.polls += 1
        response = await self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=self.batch_size, WaitTimeSeconds=0,
            VisibilityTimeout=self.visibility_timeout, AttributeNames=["All"])
        messages = response.get("Messages", [])
        if not messages:
            return 0
        self.stats.invocations += 1
        self.stats.messages += len(messages)
        self.stats.in_flight += 1
        try:
            result = await asyncio.to_thread(self.handler, self._event(messages),
                                             InvocationContext(self.function_timeout_ms))
        except Exception:
            self.stats.errors += 1
            log.exception("worker invocation raised on %d delay-lane messages; they come back", len(messages))
            return len(messages)
        finally:
            self.stats.in_flight -= 1
        failed = {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
        self.stats.reported_failures += len(failed)
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            await self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)])
        return len(messages)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                got = await self.poll_once()
            except Exception:
                log.exception("delay-lane poll failed")
                got = 0
            if not got:
                try:
                    await asyncio.wait_for(stop.wait(), self.idle_pause)
                except TimeoutError:
                    pass
