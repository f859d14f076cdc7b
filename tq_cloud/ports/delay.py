"""The delay lane port: tasks due within minutes, delivered at their time, to the second.

Kinesis cannot delay a record, so without a lane every task due later (retries with back-off
included) waits as a store row until a sweep, up to a minute late and three writes dear. A
lane holds each task for its own delay (SQS `DelaySeconds`, up to 15 minutes) and then hands
it to the queue; whatever is due later, or too large for the lane, or has a row anyway
(force_store), stays with the store and the sweeper.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import NamedTuple, Protocol

from tq_cloud.domain.task import Task

SQS_MAX_DELAY = timedelta(minutes=15)
"""SQS's largest DelaySeconds: what the lane of every backend holds at most, by default."""
SQS_MAX_MESSAGE_BYTES = 256 * 1024
LANE_VISIBILITY_TIMEOUT = 300
"""The delay queue's own visibility timeout (template.yaml): how long a message whose forward
failed would wait without `retry_soon`."""


class LaneMessage(NamedTuple):
    """A message of the lane as the worker received it: its receipt handle and how many times
    it has been received (SQS's ApproximateReceiveCount, 1 the first time)."""

    receipt: str
    receives: int


def retry_visibility(receives: int) -> int:
    """Seconds before a message whose forward failed is received again: 1 after the first
    receive, doubling with each one, at most the queue's visibility timeout. At 20% faults
    three failures in a row are rare (0.8%) and cost 7 s, where the visibility timeout alone
    would cost 300 s for every failure."""
    return min(1 << min(max(receives - 1, 0), 16), LANE_VISIBILITY_TIMEOUT)


class DelayLane(Protocol):
    @property
    def max_delay(self) -> timedelta:
        """The longest delay the lane holds (SQS: 15 minutes)."""
        ...

    @property
    def max_message_bytes(self) -> int:
        """The largest serialised task the lane takes (SQS: 256 KB)."""
        ...

    async def send(self, tasks: Sequence[Task]) -> None:
        """Hold each task until its `execute_at` (never less, at most a second more), then
        deliver it to the queue under its partition key. Like a queue publish: every task that
        can be written is; the others are named in QueueWriteError (`task_ids` to try again,
        `rejected` never)."""
        ...

    async def retry_soon(self, messages: Sequence[LaneMessage]) -> None:
        """Make messages whose forward failed visible again after `retry_visibility` seconds
        (SQS: ChangeMessageVisibility), rather than after the queue's visibility timeout. Best
        effort: a message not changed still comes back, only later."""
        ...
