"""An in-process task store with the DynamoDB backend's semantics: conditional transitions,
set-if-absent inserts, atomic claims and a 400 KB item limit. It stores copies, so callers
never share objects with it (a bug class of the reference implementation)."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping, Sequence
from datetime import datetime, timedelta

from tq_cloud.backends.memory.flow_state import MemoryFlowState
from tq_cloud.core.codec import encode_task
from tq_cloud.domain.limits import failure_row
from tq_cloud.domain.task import Task, TaskProgress, TaskStatus
from tq_cloud.errors import PayloadTooLargeError, TqError
from tq_cloud.ports.paging import MAX_PAGE, after_cursor, page_cursor
from tq_cloud.ports.storage import NOT_STAMPED, REDRIVABLE, CancelOutcome, FlowState, TaskPage, TaskQuery, listed_at

DYNAMODB_MAX_ITEM_BYTES = 400 * 1024


class _Rows(MutableMapping[str, Task]):
    """Rows by id: open ones as objects (sweeps read them often), final ones as their JSON,
    read rarely and many times smaller (a long run keeps millions of them)."""

    def __init__(self) -> None:
        self._open: dict[str, Task] = {}
        self._final: dict[str, bytes] = {}

    def __getitem__(self, key: str) -> Task:
        row = self._open.get(key)
        return row if row is not None else Task.model_validate_json(self._final[key])

    def __setitem__(self, key: str, row: Task) -> None:
        if row.status.is_terminal:
            self._final[key] = row.model_dump_json().encode()
            self._open.pop(key, None)
        else:
            self._open[key] = row
            self._final.pop(key, None)

    def __delitem__(self, key: str) -> None:
        if self._open.pop(key, None) is None:
            del self._final[key]

    def __contains__(self, key: object) -> bool:
        return key in self._open or key in self._final

    def __iter__(self) -> Iterator[str]:
        yield from list(self._open)
        yield from list(self._final)

    def __len__(self) -> int:
        return len(self._open) + len(self._final)


class InMemoryAdapter(MemoryFlowState):
    """The task store in memory, with DynamoDB's item limit and conditional semantics: what
    tests and the simulator run on.

    Example:
        handler = TaskHandler(queue=InMemoryQueue(), registry=app, storage=InMemoryAdapter(),
                              locks=InMemoryLockProvider())
    """
    def __init__(self, *, max_item_bytes: int = DYNAMODB_MAX_ITEM_BYTES,
                 finished_ttl: timedelta = timedelta(days=7)) -> None:
        self._rows = _Rows()
        self._open: set[str] = set()
        """Keys of scheduled and processing rows, the only ones sweeps look at (as the sparse
        due and running indexes of the DynamoDB backend)."""
        self._leases: dict[str, tuple[str, datetime]] = {}
        """Live run leases: the holder and when its lease ends."""
        self._cancels: dict[str, str] = {}
        """Cancel requests made while a run held the row (they outlive its later writes)."""
        self._progress: dict[str, TaskProgress] = {}
        self._expires: dict[str, datetime] = {}
        self._marks: dict[str, str] = {}
        self._dedup: dict[str, tuple[str, datetime]] = {}
        self._flow: dict[str, FlowState] = {}
        self._flow_expires: dict[str, datetime] = {}
        self._max = max_item_bytes
        self.finished_ttl = finished_ttl
        self.fail_next_writes = 0

    @property
    def max_item_bytes(self) -> int:
        return self._max

    def _write_gate(self, tasks: Sequence[Task]) -> None:
        if self.fail_next_writes > 0:
            self.fail_next_writes -= 1
            raise TqError("injected storage failure")
        for task in tasks:
            size = len(encode_task(task))
            if size > self._max:
                raise PayloadTooLargeError(task.id, size, self._max, "the task store")

    def _put(self, task: Task, keep_for: timedelta | None = None, **update: object) -> Task:
        """Every write is a new state of the task: no run holds it yet (take_leases sets one),
        and no progress; a final one expires after `keep_for` (else the finished-row TTL)."""
        row = _copy(task.model_copy(update=update) if update else task)
        self._rows[row.key] = row
        self._leases.pop(row.key, None)
        self._progress.pop(row.key, None)
        if row.status.is_terminal:
            self._open.discard(row.key)
            self._expires[row.key] = (row.updated_at or NOT_STAMPED) + (keep_for or self.finished_ttl)
        else:
            self._open.add(row.key)
            self._expires.pop(row.key, None)
        return row

    async def insert(self, tasks: Sequence[Task]) -> list[Task]:
        self._write_gate(tasks)
        return [self._put(t).model_copy() for t in tasks if t.key not in self._rows]

    async def get(self, ids: Sequence[str]) -> list[Task]:
        rows = [_copy(self._rows[i]) for i in ids if i in self._rows]
        for row in rows:
            if (lease := self._leases.get(row.key)) is not None:
                row.lease_until = lease[1]
            row.cancel_requested = self._cancels.get(row.key)
            row.progress = self._progress.get(row.key)
            row.expires_at = self._expires.get(row.key)
        return rows

    async def schedule_retry(self, tasks: Sequence[Task]) -> list[Task]:
        self._write_gate(tasks)
        written = []
        for task in tasks:
            row = self._rows.get(task.key)
            if row is not None and (row.status.is_terminal or _attempt(row) >= _attempt(task)):
                continue
            self._put(task)
            written.append(task)
        return written

    async def mark_executed(self, tasks: Sequence[Task], at: datetime, keep_for: timedelta | None = None) -> None:
        self._write_gate(tasks)
        for task in tasks:
            row = self._rows.get(task.key)
            if row is not None and not row.status.is_terminal and row.retry_count <= task.retry_count:
                self._put(row, keep_for, status=TaskStatus.EXECUTED, updated_at=at,
                          execution_result=task.execution_result,
                          execution_stats=task.execution_stats)

    async def mark_cancelled(self, tasks: Sequence[Task], at: datetime) -> None:
        self._finish([t.model_copy(update={"status": TaskStatus.CANCELLED, "updated_at": at, "force_store": True})
                      for t in tasks])

    async def cancel(self, task_id: str, reason: str, now: datetime, cancel_id: str = "") -> CancelOutcome:
        row = self._rows.get(task_id)
        if row is None:
            return CancelOutcome.UNKNOWN
        if row.status.is_terminal:
            return CancelOutcome.FINISHED
        holder = self._leases.get(task_id)
        if holder is not None and holder[1] >= now:
            self._cancels[task_id] = reason
            return CancelOutcome.REQUESTED
        stats = row.execution_stats.model_copy(update={"cancel_reason": reason, "cancel_id": cancel_id})
        self._put(row, status=TaskStatus.CANCELLED, updated_at=now, execution_stats=stats)
        return CancelOutcome.CANCELLED

    async def claim_dedup(self, scope: str, task_id: str, now: datetime, window: timedelta) -> str:
        held = self._dedup.get(scope)
        if held is not None and held[0] != task_id and held[1] >= now:
            return held[0]
        self._dedup[scope] = (task_id, now + window)
        return task_id

    async def release_dedup(self, scope: str, task_id: str) -> None:
        held = self._dedup.get(scope)
        if held is not None and held[0] == task_id:
            del self._dedup[scope]

    async def get_marks(self, keys: Sequence[str]) -> dict[str, str]:
        return {k: self._marks[k] for k in keys if k in self._marks}

    async def set_mark(self, key: str, value: str | None) -> None:
        if value is None:
            self._marks.pop(key, None)
        else:
            self._marks[key] = value

    async def cancel_requests(self, ids: Sequence[str]) -> dict[str, str]:
        return {i: self._cancels[i] for i in ids if i in self._cancels}

    async def record_progress(self, task: Task, owner: str, progress: TaskProgress) -> bool:
        row = self._rows.get(task.key)
        holder = self._leases.get(task.key)
        if row is None or row.status is not TaskStatus.PROCESSING or holder is None or holder[0] != owner:
            return False
        self._progress[task.key] = progress
        return task.key in self._cancels

    async def mark_failed(self, tasks: Sequence[Task], at: datetime) -> None:
        self._finish([failure_row(t, TaskStatus.FAILED, at, None, self.max_item_bytes, failed_at=at)
                            for t in tasks])

    async def mark_ignored(self, tasks: Sequence[Task], reason: str, at: datetime) -> None:
        self._finish([failure_row(t, TaskStatus.IGNORED, at, None, self.max_item_bytes,
                                         ignored_reason=reason) for t in tasks])

    async def keep_history(self, tasks: Sequence[Task], at: datetime, keep_for: timedelta | None = None) -> None:
        self._finish([t.model_copy(update={"status": TaskStatus.EXECUTED, "updated_at": at}) for t in tasks],
                     keep_for)

    async def list_tasks(self, query: TaskQuery) -> TaskPage:
        after = after_cursor(query.cursor)
        since = _ms(query.since) if query.since else None
        until = _ms(query.until) if query.until else None
        keys = self._open if not query.status.is_terminal else (k for k in self._rows if k not in self._open)
        found = []
        for key in list(keys):
            row = self._rows[key]
            at = (_ms(listed_at(row)), row.key)
            if (row.status is query.status and query.matches(row) and (until is None or at[0] <= until)
                    and (since is None or at[0] >= since) and (after is None or at < after)):
                found.append((at, row))
        found.sort(key=lambda pair: pair[0], reverse=True)
        limit = min(max(query.limit, 1), MAX_PAGE)
        page = [_copy(row) for _, row in found[:limit]]
        return TaskPage(page, page_cursor(*found[limit - 1][0]) if len(found) > limit else None)

    async def redrive(self, tasks: Sequence[Task], now: datetime) -> list[Task]:
        self._write_gate(tasks)
        written = []
        for task in tasks:
            row = self._rows.get(task.key)
            if row is not None and row.status in REDRIVABLE and _attempt(row) < _attempt(task):
                self._cancels.pop(task.key, None)  # an operator's re-drive overrides an earlier cancel
                self._put(task)
                written.append(task)
        return written

    def _finish(self, rows: list[Task], keep_for: timedelta | None = None) -> None:
        """Upsert final rows, except over a task that is already final or at a later attempt."""
        self._write_gate(rows)
        for row in rows:
            current = self._rows.get(row.key)
            if current is None or not (current.status.is_terminal or current.retry_count > row.retry_count):
                self._put(row, keep_for)

    async def take_leases(self, tasks: Sequence[Task], owner: str, now: datetime,
                          expired_before: datetime, until: datetime | None = None) -> set[str]:
        leased = set()
        for task in tasks:
            row = self._rows.get(task.key)
            if row is None or row.status not in (TaskStatus.PROCESSING, TaskStatus.SCHEDULED):
                continue
            holder = self._leases.get(task.key)
            live = holder is not None and holder[0] != owner and holder[1] >= now
            if _attempt(row) != _attempt(task) or live or task.key in self._cancels:
                continue
            self._put(row, status=TaskStatus.PROCESSING, processing_started_at=now)
            self._leases[task.key] = (owner, until or now + (now - expired_before))
            leased.add(task.key)
        return leased

    async def release_leases(self, tasks: Sequence[Task], owner: str) -> None:
        for task in tasks:
            holder = self._leases.get(task.key)
            if holder is not None and holder[0] == owner:
                del self._leases[task.key]

    async def reset_to_scheduled(self, tasks: Sequence[Task]) -> None:
        for task in tasks:
            row = self._rows.get(task.key)
            if (row is not None and row.status is TaskStatus.PROCESSING and _attempt(row) == _attempt(task)
                    and task.key not in self._leases):
                self._put(row, status=TaskStatus.SCHEDULED)

    async def claim_mature(self, now: datetime, limit: int) -> list[Task]:
        rows = [self._rows[k] for k in self._open]
        due = sorted(
            (r for r in rows
             if r.status is TaskStatus.SCHEDULED and r.execute_at is not None and r.execute_at <= now),
            key=lambda r: (r.execute_at or now, r.key),
        )[:limit]
        return [self._put(r, status=TaskStatus.PROCESSING, processing_started_at=now).model_copy()
                for r in due]

    async def recover_stale(self, processing_before: datetime, now: datetime) -> int:
        stale = [r for r in (self._rows[k] for k in self._open) if r.status is TaskStatus.PROCESSING
                 and (r.processing_started_at or r.updated_at or processing_before) < processing_before]
        recovered = 0
        for row in stale:
            if row.processing_started_at == NOT_STAMPED:
                self._put(row, processing_started_at=now)
            else:
                self._put(row, status=TaskStatus.SCHEDULED)
                recovered += 1
        return recovered

    def next_due(self) -> datetime | None:
        dues = [r.execute_at for r in (self._rows[k] for k in self._open)
                if r.status is TaskStatus.SCHEDULED and r.execute_at is not None]
        return min(dues) if dues else None

    def snapshot(self) -> dict[str, Task]:
        """All rows, as copies (for tests, demos and the local dashboard)."""
        return {k: _copy(v) for k, v in self._rows.items()}

    def by_status(self, status: TaskStatus) -> list[Task]:
        return [_copy(r) for r in self._rows.values() if r.status is status]

    def open_rows(self) -> list[Task]:
        """Scheduled and processing rows (copies)."""
        return [_copy(self._rows[k]) for k in sorted(self._open)]


def _copy(task: Task) -> Task:
    """A copy that shares nothing with `task`: through JSON, as the real store keeps it (and
    much faster than a deep copy of a large payload)."""
    return Task.model_validate_json(task.model_dump_json())


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _attempt(task: Task) -> tuple[int, int]:
    return task.execution_stats.retry_count, task.execution_stats.deferrals
