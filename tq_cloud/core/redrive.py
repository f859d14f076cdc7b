"""Re-driving: failed and ignored tasks sent back to run, as a new attempt, by id or by filter.

Attempts continue: the re-driven run is numbered after the task's last attempt (so a stale copy
of an old attempt, redelivered later, can never run as the new one) and gets its retry budget
again (`redrive_base`: the worker counts retries, and their back-off, from the re-drive on). The
row moves from failed or ignored to processing with a conditional write that only a row still
final at the earlier attempt passes: re-driving the same ids twice sends them once. The task is
then published as a force_store task is (a failed publish sets the row back to scheduled, and
the sweeper sends it). Each re-drive is recorded on the task (`execution_stats.redrives`,
`redriven_at`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from tq_cloud.clock import Clock
from tq_cloud.core.routing import RowSender, as_sent
from tq_cloud.domain.task import Task, TaskStatus
from tq_cloud.ports.queue import MessageQueue
from tq_cloud.ports.storage import NOT_STAMPED, REDRIVABLE, TaskQuery, TaskStorage

log = logging.getLogger("tq_cloud.redrive")

REDRIVE_BATCH = 100
"""Ids re-driven per write round: bounded, whatever a filter matches."""


class Redriver:
    def __init__(self, storage: TaskStorage, queue: MessageQueue, clock: Clock) -> None:
        self.storage = storage
        self.clock = clock
        self.rows = RowSender(queue, storage, clock)

    def _next_attempt(self, row: Task) -> Task:
        now = self.clock.now()
        attempt = row.retry_count + 1
        stats = row.execution_stats.model_copy(update={
            "retry_count": attempt, "deferrals": 0, "failed_at": None, "ignored_reason": None,
            "redrives": row.execution_stats.redrives + 1, "redriven_at": now, "redrive_base": attempt})
        return row.model_copy(update={
            "status": TaskStatus.PROCESSING, "execute_at": now, "processing_started_at": NOT_STAMPED,
            "updated_at": now, "execution_stats": stats, "execution_result": None, "lease_until": None})

    async def redrive(self, ids: Sequence[str]) -> RedriveReport:
        """Send the failed or ignored tasks among `ids` back to run; the ones sent, and why
        each other id was skipped (not stored, not failed, a row that keeps a stand-in)."""
        report = RedriveReport()
        for start in range(0, len(ids), REDRIVE_BATCH):
            wanted = list(dict.fromkeys(ids[start:start + REDRIVE_BATCH]))
            rows = {row.key: row for row in await self.storage.get(wanted)}
            for key in wanted:
                if (reason := _skip_reason(rows.get(key))) is not None:
                    report.skipped[key] = reason
            copies = [self._next_attempt(row) for key, row in rows.items() if key not in report.skipped]
            moved = await self.storage.redrive(copies, self.clock.now()) if copies else []
            report.skipped |= {c.key: "re-driven meanwhile by another call" for c in copies
                               if c.key not in {m.key for m in moved}}
            if moved:
                try:
                    await self.rows.publish(as_sent(moved))
                except Exception:  # the rows not written are back to scheduled: the sweeper sends them
                    log.exception("re-driven tasks not all sent now; the sweeper sends the rest")
            report.sent += moved
        return report

    async def redrive_matching(self, query: TaskQuery, limit: int = 1000) -> RedriveReport:
        """Re-drive up to `limit` tasks that `query` lists (failed or ignored), page by page."""
        if query.status not in REDRIVABLE:
            raise ValueError(f"only failed or ignored tasks can be re-driven, not {query.status.value}")
        report = RedriveReport()
        cursor = query.cursor
        while len(report.sent) < limit:
            page = await self.storage.list_tasks(replace(query, limit=min(REDRIVE_BATCH, limit - len(report.sent)),
                                                         cursor=cursor))
            done = await self.redrive([t.key for t in page.tasks])
            report.sent += done.sent
            report.skipped |= done.skipped
            if page.cursor is None:
                break
            cursor = page.cursor
        return report


@dataclass
class RedriveReport:
    """What a re-drive did: the tasks sent (their new attempts) and, by id, why each other one
    was left as it is."""

    sent: list[Task] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _skip_reason(row: Task | None) -> str | None:
    if row is None:
        return "no stored task (a task that succeeded at once leaves no row unless TQ_HISTORY is on)"
    if row.status not in REDRIVABLE:
        return f"{row.status.value}, not failed or ignored"
    return row.execution_stats.not_redrivable
