"""Ordered keys: the tasks of one partition key run one at a time, in the order they arrived.

While no task of a key has failed, nothing is written: a batch reads the key's item (absent)
and runs its tasks in order, stopping at the first failure that will be retried. That task
becomes the head of the key's queue (the item), and the key's later tasks, in this batch and
every one after, join the queue behind it and wait (deferred, using no attempt). Only the head
runs; its success or final failure hands the turn to the next. A head that never comes back
(`lost_at`: its retry's due time plus the stale window) is passed over, so nothing waits for ever.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from tq_cloud.flow_control.state import Step
from tq_cloud.ports.storage import FlowState

MAX_QUEUED = 1000
"""Tasks of one key kept in order behind a failure (an id is at most 256 characters: the item
stays far under DynamoDB's 400 KB). Later ones wait for room, in arrival order as they return."""


@dataclass
class KeyTurn:
    """The queue of one key as a batch found it: `queue` (head first) and when the head is due."""

    queue: list[str] = field(default_factory=list)
    due: float = 0.0
    lost_at: float = 0.0

    @classmethod
    def of(cls, state: FlowState | None, now: datetime) -> KeyTurn:
        doc = state.doc if state else {}
        turn = cls(list(doc.get("q", [])), float(doc.get("due", 0.0)), float(doc.get("lost_at", 0.0)))
        while turn.queue and turn.lost_at and now.timestamp() > turn.lost_at:
            turn.queue.pop(0)  # a head that never came back: the next one's turn
            turn.lost_at = 0.0
        return turn

    @property
    def head(self) -> str | None:
        return self.queue[0] if self.queue else None


def settle_step(head: str | None, head_done: bool, due: datetime | None, waiting: list[str],
                now: datetime, stale: timedelta) -> Step[None]:
    """After a batch ran a key: `head` (the task that ran and failed, or the queue's head that
    ran) leaves the queue when `head_done`, else stays (or becomes) its head, due again at `due`;
    `waiting` join behind, in order."""
    def step(state: FlowState) -> tuple[FlowState | None, None]:
        turn = KeyTurn.of(state, now)
        queue = list(turn.queue)
        if head is not None and head_done:
            queue = [t for t in queue if t != head]
        elif head is not None:
            queue = [head] + [t for t in queue if t != head]
        for task_id in waiting:
            if task_id not in queue and len(queue) < MAX_QUEUED:
                queue.append(task_id)
        if queue == list(state.doc.get("q", [])) and due is None:
            return None, None
        doc: dict[str, object] = {"q": queue}
        if queue:
            when = due.timestamp() if due is not None and not head_done else max(turn.due, now.timestamp())
            doc.update(due=when, lost_at=when + stale.total_seconds())
        return replace(state, doc=doc), None
    return step
