"""The SQS delay lane and its Lambda event source mapping, simulated.

A message sent with `DelaySeconds` (the lane rounds each task's delay down to the second; the
worker holds a task that arrives early; tasks of one send due in the same second share a
message, as on SQS) is invisible until then. Pollers (Lambda's SQS mapping
starts five) receive up to 10 visible messages as soon as there are any (batching window 0;
a long poll returns within a seeded 100 ms), invoke the worker with a real-shaped SQS event and
delete the messages it did not name in `batchItemFailures`. A named message is received again
when the worker's ChangeMessageVisibility said (`retry_soon`), else (the change failed, or the
invocation died) after the visibility timeout; after `max_receives` receives it goes to the
dead-letter queue (which the final checks require empty).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tq_cloud.backends.aws.sqs_delay import MAX_DELAY, MAX_MESSAGE_BYTES, lane_messages
from tq_cloud.clock import Clock
from tq_cloud.domain.task import Task
from tq_cloud.errors import QueueWriteError
from tq_cloud.ports.delay import LaneMessage, retry_visibility
from tq_cloud.simulation.loop import due, wait_until


@dataclass(slots=True)
class Message:
    message_id: str
    body: str
    receives: int = 0
    deleted: bool = False
    visible_again: float | None = None
    """Set by ChangeMessageVisibility (`retry_soon`) during the invocation that received it."""
    crashed: bool = False
    """An invocation that received it died: it came back after the visibility timeout, which
    nothing in the function could shorten."""
    due_at: float = 0.0
    """When its delay ended: the lane's lateness is how long after this its task was forwarded."""

    @property
    def receipt(self) -> str:
        """The handle of its latest receive: SQS gives each receive its own."""
        return f"rh-{self.message_id}-{self.receives}"

    def as_lambda_record(self) -> dict[str, Any]:
        return {"messageId": self.message_id, "receiptHandle": self.receipt,
                "body": self.body, "eventSource": "aws:sqs", "attributes": {
                    "ApproximateReceiveCount": str(self.receives)}}


class SimDelayQueue:
    """The DelayLane port over the simulated queue."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, Message]] = []
        self._ids = itertools.count(1)
        self.wake = asyncio.Event()
        self.in_flight = 0
        self.sent = 0
        self.dead_letters: list[str] = []
        self.lateness: list[float] = []
        """Per message forwarded: the seconds from the end of its delay to the end of the
        invocation that forwarded its task (the lane's own share of a delayed run's lateness)."""
        self.handled_lateness: list[float] = []
        """The same, for the messages no dying invocation received (what the worker's
        ChangeMessageVisibility bounds)."""
        self._received: list[Message] = []
        """Messages received and not settled: what a receipt handle can still change."""

    @property
    def max_delay(self) -> timedelta:
        return MAX_DELAY

    @property
    def max_message_bytes(self) -> int:
        return MAX_MESSAGE_BYTES

    async def send(self, tasks: Sequence[Task]) -> None:
        messages, rejected = lane_messages(tasks, self.clock.now())
        for _, body, delay in messages:  # packed as SQS's lane packs them
            due_at = asyncio.get_running_loop().time() + delay
            self._push(due_at, Message(f"m{next(self._ids)}", body.decode(), due_at=due_at))
            self.sent += 1
        if rejected:
            raise QueueWriteError("the lane refused messages", [], rejected)

    async def retry_soon(self, messages: Sequence[LaneMessage]) -> None:
        now = asyncio.get_running_loop().time()
        by_receipt = {m.receipt: m for m in self._received}
        for received in messages:
            message = by_receipt.get(received.receipt)
            if message is not None:  # an old receipt (the message received again since) changes nothing
                message.visible_again = now + retry_visibility(received.receives)

    def _push(self, visible_at: float, message: Message) -> None:
        heapq.heappush(self._heap, (visible_at, int(message.message_id[1:]), message))
        self.wake.set()

    def pending(self) -> int:
        return len(self._heap) + self.in_flight

    def next_visible(self) -> float | None:
        while self._heap and self._heap[0][2].deleted:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def receive(self, limit: int) -> list[Message]:
        batch: list[Message] = []
        while self._heap and len(batch) < limit and due(self._heap[0][0]):
            _, _, message = heapq.heappop(self._heap)
            if not message.deleted:
                message.receives += 1
                message.visible_again = None
                batch.append(message)
                self._received.append(message)
        self.in_flight += len(batch)
        return batch

    def settle(self, batch: list[Message], failed: set[str] | None, visibility_timeout: float,
               max_receives: int) -> None:
        """After an invocation: delete what it took; the rest (all, if it died) comes back."""
        self.in_flight -= len(batch)
        now = asyncio.get_running_loop().time()
        again_at = now + visibility_timeout
        for message in batch:
            self._received.remove(message)
            if failed is not None and message.message_id not in failed:
                message.deleted = True
                self.lateness.append(now - message.due_at)
                if not message.crashed:
                    self.handled_lateness.append(now - message.due_at)
                continue
            message.crashed |= failed is None
            if message.receives >= max_receives:
                self.dead_letters.append(message.message_id)
            else:
                self._push(message.visible_again or again_at, message)


InvokeLane = Callable[[str, list[Message]], Awaitable[set[str] | None]]
"""Returns the message ids to deliver again, or None when the invocation died."""


class SqsLaneMapping:
    def __init__(self, queue: SimDelayQueue, invoke: InvokeLane, rng: random.Random, *, pollers: int = 5,
                 batch_size: int = 10, visibility_timeout: float = 300.0, max_receives: int = 20) -> None:
        self.queue = queue
        self.invoke = invoke
        self.rng = rng
        self.pollers = pollers
        self.batch_size = batch_size
        self.visibility_timeout = visibility_timeout
        self.max_receives = max_receives
        self.invocations = 0

    async def poll(self, name: str) -> None:
        while True:
            visible = self.queue.next_visible()
            if visible is None:
                self.queue.wake.clear()
                await self.queue.wake.wait()
                continue
            if not due(visible):
                await wait_until(self.queue.wake, visible)
                continue
            await asyncio.sleep(self.rng.uniform(0.0, 0.1))  # a long poll returns
            batch = self.queue.receive(self.batch_size)
            if not batch:
                continue
            self.invocations += 1
            failed = await self.invoke(name, batch)
            self.queue.settle(batch, failed, self.visibility_timeout, self.max_receives)
