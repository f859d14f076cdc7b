"""The task storage port: scheduled, processing, executed, failed and ignored tasks.

Every write is conditional so that a redelivered batch replays into the same state:
inserts are set-if-absent, terminal transitions happen once, retries only move forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from tq_cloud.core.models import Task

NOT_STAMPED = datetime(1970, 1, 1, tzinfo=UTC)
"""The `processing_started_at` of a row stored as it is sent (force_store): the clock of
whoever added the task (a producer anywhere, perhaps far behind or ahead) is not one recovery
may trust, so the row carries no time until a sweeper stamps it with its own (see
`recover_stale`) or a run takes its lease."""


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

    async def mark_executed(self, tasks: Sequence[Task], at: datetime) -> None:
        """Terminal success, with `execution_result`; a no-op for tasks already terminal or
        never stored."""
        ...

    async def mark_failed(self, tasks: Sequence[Task], at: datetime) -> None:
        """Terminal failure, upserted (a task never stored before is created as failed)."""
        ...

    async def mark_ignored(self, tasks: Sequence[Task], reason: str, at: datetime) -> None:
        ...

    async def take_leases(self, tasks: Sequence[Task], owner: str, now: datetime,
                          expired_before: datetime) -> set[str]:
        """Take the run lease of each stored task about to run; return the ids leased. The row
        moves to (or stays) `processing` with `processing_started_at = now`, so stale recovery
        counts from the start of the run, never from when the record was queued. Refused while
        another owner's lease is live (started at or after `expired_before`), or when the row
        holds another attempt, is final or is missing. Any other write of the row ends the lease."""
        ...

    async def reset_to_scheduled(self, tasks: Sequence[Task]) -> None:
        """Undo a claim whose queue write failed, so the sweeper offers the task again: only
        while the row still holds the attempt that was being sent (a later attempt may have
        been written, and sent, meanwhile)."""
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
