"""The task storage port: scheduled, processing, executed, failed and ignored tasks.

Every write is conditional so that a redelivered batch replays into the same state:
inserts are set-if-absent, terminal transitions happen once, retries only move forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from tq_cloud.domain.task import Task, TaskProgress, TaskStatus

NOT_STAMPED = datetime(1970, 1, 1, tzinfo=UTC)
"""The `processing_started_at` of a row stored as it is sent (force_store): the clock of
whoever added the task (a producer anywhere, perhaps far behind or ahead) is not one recovery
may trust, so the row carries no time until a sweeper stamps it with its own (see
`recover_stale`) or a run takes its lease."""


@dataclass(frozen=True)
class TaskQuery:
    """Stored tasks in one status, newest first by the time of that status (finished for
    executed, failed and ignored; due for scheduled; started for processing), optionally of
    one queue and type, between two times, and whose id or error contains a text. `cursor`
    continues a previous page (a filtered page may hold fewer than `limit` tasks and still have
    a cursor: the stores read a bounded number of rows a page).

    Example:
        page = await storage.list_tasks(TaskQuery(status=TaskStatus.FAILED, queue="email", limit=20))
        more = await storage.list_tasks(TaskQuery(status=TaskStatus.FAILED, cursor=page.cursor))
    """

    status: TaskStatus
    queue: str | None = None
    type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    """Only tasks that took their status at or before this time."""
    search: str | None = None
    """Only tasks whose id or last error contains this text (case-insensitive)."""
    limit: int = 50
    cursor: str | None = None

    def __post_init__(self) -> None:
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError(f"since ({self.since.isoformat()}) is after until ({self.until.isoformat()})")

    def matches(self, task: Task) -> bool:
        """Whether `task` passes the filters besides status and times (as the stores apply them
        to the rows they read)."""
        if self.queue not in (None, task.queue_id) or self.type not in (None, task.type):
            return False
        if not self.search:
            return True
        wanted, stats = self.search.lower(), task.execution_stats
        return any(wanted in text.lower() for text in (task.key, stats.last_error or "", stats.ignored_reason or ""))


@dataclass
class TaskPage:
    """A page of a listing, and the cursor of the next one (None at the end).

    Example:
        page = await storage.list_tasks(TaskQuery(status=TaskStatus.FAILED, limit=50))
        while page.cursor:
            page = await storage.list_tasks(TaskQuery(status=TaskStatus.FAILED, limit=50, cursor=page.cursor))
    """
    tasks: list[Task] = field(default_factory=list)
    cursor: str | None = None
    """Where the next page starts; None when this page is the last."""


class CancelOutcome(StrEnum):
    """What `TaskStorage.cancel` did to a row."""

    CANCELLED = "cancelled"
    """It waited (scheduled, or processing with no live run): it is cancelled and never runs."""
    REQUESTED = "requested"
    """A run holds it: the run sees the request (`actions.is_cancelled`); an attempt after this
    one never starts."""
    FINISHED = "finished"
    """It is final already: nothing changed."""
    UNKNOWN = "unknown"
    """No row has this id."""


@dataclass
class FlowState:
    """A flow-control item (a rate window, a debounce's latest task, an ordered key's queue):
    a small JSON document, the concurrency slots held in it (holder: until when), and its
    version (0: no item), which a replacement checks, so that concurrent writers never both win."""

    version: int = 0
    doc: dict[str, Any] = field(default_factory=dict)
    slots: dict[str, datetime] = field(default_factory=dict)


REDRIVABLE = frozenset({TaskStatus.FAILED, TaskStatus.IGNORED})


def listed_at(task: Task) -> datetime:
    """The time a listing sorts a task by: when it took its status."""
    when = {TaskStatus.SCHEDULED: task.execute_at,
            TaskStatus.PROCESSING: task.processing_started_at}.get(task.status, task.updated_at)
    return when or task.updated_at or task.created_at or NOT_STAMPED


class TaskStorage(Protocol):
    @property
    def max_item_bytes(self) -> int:
        """Largest serialised task the store accepts (DynamoDB: 400 KB)."""
        ...

    async def insert(self, tasks: Sequence[Task]) -> list[Task]:
        """Insert tasks that are not stored yet; return the ones inserted (an id already
        present is skipped, which makes dispatch of derived-id tasks idempotent)."""
        ...

    async def get(self, ids: Sequence[str]) -> list[Task]:
        ...

    async def schedule_retry(self, tasks: Sequence[Task]) -> list[Task]:
        """Upsert retry copies, each only when the stored task is not terminal and its
        (retry_count, deferrals) is lower than the copy's (a replayed failure does not schedule a second
        retry); return the copies written."""
        ...

    async def mark_executed(self, tasks: Sequence[Task], at: datetime, keep_for: timedelta | None = None) -> None:
        """Terminal success, with `execution_result`; a no-op for tasks already terminal or
        never stored, and over a row whose attempt is ahead of the task's (a re-drive or a
        retry written since: a stale copy's outcome never undoes newer work). The row is kept
        `keep_for` (an executor's `keep_result`), else the store's finished-row TTL."""
        ...

    async def mark_failed(self, tasks: Sequence[Task], at: datetime) -> None:
        """Terminal failure, upserted (a task never stored before is created as failed); never
        over a final row or a row whose attempt is ahead of the task's."""
        ...

    async def mark_ignored(self, tasks: Sequence[Task], reason: str, at: datetime) -> None:
        ...

    async def mark_cancelled(self, tasks: Sequence[Task], at: datetime) -> None:
        """Terminal cancel from a run (its executor stopped on a cancel, or its attempt found one
        asked), `execution_stats.cancel_reason` as given; never over a final row or a later attempt."""
        ...

    async def cancel(self, task_id: str, reason: str, now: datetime, cancel_id: str = "") -> CancelOutcome:
        """Cancel a stored task (see CancelOutcome). A waiting row becomes `cancelled` in one
        conditional write that only a row with no live run lease passes: a run that takes its
        lease after it finds the row final and never starts. A row a live run holds keeps
        the request, which every later attempt of the task honours. The row keeps `cancel_id`
        (as `execution_stats.cancel_id`): a call retried after a lost answer finds its own."""
        ...

    async def cancel_requests(self, ids: Sequence[str]) -> dict[str, str]:
        """The ids among `ids` whose rows hold a cancel request, with its reason (a small read:
        running cancellable tasks poll it)."""
        ...

    async def record_progress(self, task: Task, owner: str, progress: TaskProgress) -> bool:
        """Record a running task's progress on its row, only while `owner` holds its run lease;
        whether a cancel is requested (so progress reports learn of one for free)."""
        ...

    async def claim_dedup(self, scope: str, task_id: str, now: datetime, window: timedelta) -> str:
        """The id of the task that holds `scope` (a queue, type and dedup key) until `now + window`:
        `task_id` if the scope was free, had expired, or is its own (a replay sends it again);
        else the holder, whose task is the one sent. One conditional write."""
        ...

    async def release_dedup(self, scope: str, task_id: str) -> None:
        """Free `scope` if `task_id` holds it: its task could not be sent, and a second send
        must not be taken for a duplicate of a task that never went out."""
        ...

    async def read_flow(self, scopes: Sequence[str]) -> dict[str, FlowState]:
        """The flow-control items of those scopes that have one (strongly consistent reads)."""
        ...

    async def write_flow(self, scope: str, state: FlowState, expires_at: datetime) -> bool:
        """Replace the item of `scope` with `state.doc` and `state.slots`, only while its version
        is still `state.version` (0: while there is none); whether it was written. The item
        goes at `expires_at` (its TTL): flow state is short-lived by nature."""
        ...

    async def free_slots(self, scope: str, holders: Sequence[str]) -> None:
        """Remove the holders' concurrency slots from the item of `scope` in one unconditional
        write that moves its version on (a replacement read before it then fails and reads again)."""
        ...

    async def get_marks(self, keys: Sequence[str]) -> dict[str, str]:
        """Small bookkeeping values by key (a schedule's paused state), kept beside the tasks
        under the stores' reserved ids, never listed as tasks."""
        ...

    async def set_mark(self, key: str, value: str | None) -> None:
        """Set a mark (None removes it)."""
        ...

    async def keep_history(self, tasks: Sequence[Task], at: datetime, keep_for: timedelta | None = None) -> None:
        """History (TQ_HISTORY): executed rows for tasks that had none, upserted, except over a
        row that is already final."""
        ...

    async def list_tasks(self, query: TaskQuery) -> TaskPage:
        """A page of stored tasks (see TaskQuery), from sparse indexes: never a table scan."""
        ...

    async def redrive(self, tasks: Sequence[Task], now: datetime) -> list[Task]:
        """Put failed or ignored tasks back to run: each copy (the task's next attempt) replaces
        its row as `processing`, NOT_STAMPED, only while the row is still final at an earlier
        attempt (so a second redrive of the same rows writes nothing); the copies written."""
        ...

    async def take_leases(self, tasks: Sequence[Task], owner: str, now: datetime,
                          expired_before: datetime, until: datetime | None = None) -> set[str]:
        """Take the run lease of each stored task about to run; return the ids leased. The row
        moves to (or stays) `processing` with `processing_started_at = now`, so stale recovery
        counts from the start of the run, never from when the record was queued. The lease
        lasts until `until` (the holder's deadline: a Lambda invocation's end; by default
        `now + (now - expired_before)`); a lease an earlier version wrote without an end is
        live while its run started at or after `expired_before`. Refused while another owner's
        lease is live, or when the row holds another attempt, is final or is missing. A lease
        ends at its holder's commit (any other write of the row), hand-back (`release_leases`)
        or deadline; `get` shows a live lease's end as `lease_until`. Refused too for a row
        holding a cancel request: one asked between the run's read of the row and its lease."""
        ...

    async def release_leases(self, tasks: Sequence[Task], owner: str) -> None:
        """End the leases `owner` holds on these tasks: its batch handed them back uncommitted,
        so their redelivered records may run at once instead of waiting for the deadline."""
        ...

    async def reset_to_scheduled(self, tasks: Sequence[Task]) -> None:
        """Undo a claim whose queue write failed, so the sweeper offers the task again: only
        while the row still holds the attempt that was being sent (a later attempt may have
        been written, and sent, meanwhile) and no run has leased it since the send (a write
        whose answer was lost may have reached the queue, and a consumer may be running it)."""
        ...

    async def claim_mature(self, now: datetime, limit: int) -> list[Task]:
        """Move due `scheduled` tasks to `processing` and return them; a task is claimed by
        exactly one caller."""
        ...

    async def recover_stale(self, processing_before: datetime, now: datetime) -> int:
        """Return `processing` tasks stamped before `processing_before` to `scheduled`; count
        them. A row still `NOT_STAMPED` is stamped `now` instead: its recovery counts from when a
        sweeper first saw it, on the sweeper's clock, never from a producer's."""
        ...
