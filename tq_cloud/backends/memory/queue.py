"""An in-process message queue with the limits of the real transport.

By default every task is serialised on publish and parsed on receive, exactly as through
Kinesis, so a payload that would not survive the real trip (not JSON, over 1 MiB) fails here
first. Unlike Kinesis it honours `execute_at`, like the reference library's in-memory queue.
"""

from __future__ import annotations

import heapq
import itertools
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from pydantic import TypeAdapter

from tq_cloud.clock import Clock, SystemClock
from tq_cloud.core.codec import encode_task
from tq_cloud.domain.task import Task
from tq_cloud.errors import PayloadTooLargeError, QueueWriteError, TaskRejectedError

KINESIS_MAX_RECORD_BYTES = 1024 * 1024
_TASKS = TypeAdapter(list[Task])

_Entry = tuple[datetime, int, "bytes | Task"]


class InMemoryQueue:
    """A queue in memory that round-trips each task through JSON (as Kinesis would) and holds
    back tasks not yet due.

    Example:
        queue = InMemoryQueue(clock=ManualClock())
    """
    def __init__(
        self,
        clock: Clock | None = None,
        *,
        round_trip: bool = True,
        max_message_bytes: int = KINESIS_MAX_RECORD_BYTES,
        honours_execute_at: bool = True,
    ) -> None:
        self.clock = clock or SystemClock()
        self.round_trip = round_trip
        self._max = max_message_bytes
        self._honours = honours_execute_at
        self._queues: dict[str, list[_Entry]] = defaultdict(list)
        self._seq = itertools.count()
        self.fail_next_publishes = 0
        self.published = 0

    @property
    def max_message_bytes(self) -> int:
        return self._max

    @property
    def honours_execute_at(self) -> bool:
        return self._honours

    async def publish(self, tasks: Sequence[Task]) -> None:
        """Like PutRecords: every task that can be written is; one that can never be (not JSON,
        over the record limit) is named in QueueWriteError.rejected."""
        if self.fail_next_publishes > 0:
            self.fail_next_publishes -= 1
            raise QueueWriteError("injected queue failure", [t.id or "?" for t in tasks])
        now = self.clock.now()
        rejected: dict[str, str] = {}
        for task in tasks:
            body: bytes | Task = task
            if self.round_trip:
                try:
                    body = encode_task(task)
                    if len(body) > self._max:
                        raise PayloadTooLargeError(task.id, len(body), self._max, "the in-memory queue")
                except TaskRejectedError as exc:
                    rejected[task.id or "?"] = str(exc)
                    continue
            due = task.execute_at if (self._honours and task.execute_at) else now
            heapq.heappush(self._queues[task.queue_id], (due, next(self._seq), body))
            self.published += 1
        if rejected:
            raise QueueWriteError("records rejected by the queue", [], rejected)

    async def receive(self, queue_id: str, limit: int) -> list[Task]:
        heap = self._queues.get(queue_id)
        if not heap:
            return []
        now = self.clock.now()
        bodies: list[bytes | Task] = []
        while heap and len(bodies) < limit and heap[0][0] <= now:
            bodies.append(heapq.heappop(heap)[2])
        if not self.round_trip:
            return [b for b in bodies if isinstance(b, Task)]
        return _TASKS.validate_json(b"[" + b",".join(b for b in bodies if isinstance(b, bytes)) + b"]")

    async def requeue(self, tasks: Sequence[Task]) -> None:
        now = self.clock.now()
        for task in tasks:
            body: bytes | Task = task
            if self.round_trip:
                body = encode_task(task)
            heapq.heappush(self._queues[task.queue_id], (now, next(self._seq), body))

    def depth(self, queue_id: str | None = None) -> int:
        if queue_id is not None:
            return len(self._queues.get(queue_id, []))
        return sum(len(h) for h in self._queues.values())

    def queue_ids(self) -> list[str]:
        return sorted(q for q, heap in self._queues.items() if heap)

    def next_due(self) -> datetime | None:
        dues = [h[0][0] for h in self._queues.values() if h]
        return min(dues) if dues else None
