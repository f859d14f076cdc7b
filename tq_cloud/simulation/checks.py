"""The invariants, checked as the simulation goes and at quiescence.

As it goes (each is a violation the moment it happens):
- an executor runs an attempt at most as often as records of that attempt were delivered;
- a task with a row by design (stored, or of an executor that stores its failures) never runs
  an attempt that already committed (its row final, or a later attempt recorded);
- a stored task's attempt is never sent again after a send of it was reported written (only a
  write that failed, or stale recovery, may send it again);
- every record a successful invocation leaves committed (before the first failure it names)
  has an outcome: committed by this or an earlier invocation, or superseded by a later attempt;
- a flow's timeout join never happens before its deadline; a flow is joined once;
- a cancelled task never starts after `cancel` returned True; `cancel` returns True only for a
  task not finished, and False only for one finished;
- the tasks sent with one dedup key within its window run as one task, and every send of the
  key returns that task;
- no run outlives its executor's time limit;
- a projection's stored status never moves back;
- no outcome lands over a later attempt of its task, no reset wipes a live lease, no retry due
  later waits as `processing`, no lease its holder handed back holds up the redelivery, and no
  sweep runs into its invocation's timeout (world.py checks that one).
At quiescence: every task that was sent ends in the state its plan implies (see workload.py);
nothing is left scheduled or processing; each flow has exactly one join whose results name each
step once, with the step's final result; a task cancelled before it ran ends cancelled, one
cancelled while it ran ends executed or cancelled as its run reported, and none ends both;
bound tasks' projections are final; the on-failure
destination is empty; every discarded task was announced (on_task_exhausted).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tq_cloud.clock import Clock
from tq_cloud.core.commit import CommitBatch
from tq_cloud.domain.flows import FlowResults
from tq_cloud.domain.outcomes import Verdict
from tq_cloud.domain.tally import BatchTally
from tq_cloud.domain.task import Task, TaskStatus
from tq_cloud.simulation.count_checks import CountsLedger, flat_counts
from tq_cloud.simulation.flow_checks import FlowChecks
from tq_cloud.simulation.stream import Key, Record, attempt_key


@dataclass(slots=True)
class Seen:
    """What the checker knows of one task id: what its plan implies (kept instead of the task,
    so that a million tasks fit in memory) and how it ended so far."""

    want: Verdict | None = None
    label: str = ""
    has_row: bool = False
    kept: bool = False
    """Its executor stores its failures: once it has a row, a committed attempt never runs again."""
    bound: bool = False
    step: bool = False
    """A flow step: its result is kept, to compare with its join's."""
    verdict: Verdict | None = None
    attempt: tuple[int, int] = (-1, -1)
    result: Any = None
    error: str | None = None


@dataclass(slots=True)
class Joined:
    """What a run of a join read of its flow."""

    aborted: bool
    timed_out: bool
    steps: list[tuple[int, str, Any]]


@dataclass
class Tracker:
    peek_row: Callable[[str], Task | None]
    now: Callable[[], float]
    describe: Callable[[Task], Seen]
    clock: Clock
    violations: list[str] = field(default_factory=list)
    attempts: dict[Key, list[int]] = field(default_factory=dict)
    """Per attempt: [records of it delivered, runs of it]."""
    reported: dict[str, set[tuple[int, int]]] = field(default_factory=dict)
    put_back: set[Key] = field(default_factory=set)
    """Attempts a consumer put back on the stream uncommitted (their aggregated record's other
    tasks committed): accounted for, as a redelivery would be."""
    seen: dict[str, Seen] = field(default_factory=dict)
    joins: dict[str, list[Joined]] = field(default_factory=dict)
    exhausted_events: Counter[str] = field(default_factory=Counter)
    projection_rank: dict[str, int] = field(default_factory=dict)
    handed_back: set[tuple[str, str]] = field(default_factory=set)
    """(task, owner) of each record an invocation handed back uncommitted (and whose release
    of its leases met no fault: a release that fails leaves them to their deadline)."""
    release_failed: set[str] = field(default_factory=set)
    """Invocations whose release of leases met a fault."""
    redriven: dict[str, int] = field(default_factory=dict)
    """Tasks an operator re-drove, with the attempt (retry count) each re-drive sent."""
    lateness: list[float] = field(default_factory=list)
    """Start less due time of each delayed run (see SimReport.lateness)."""
    trace: Any = field(default_factory=lambda: hashlib.blake2b(digest_size=16))
    cx_running: set[str] = field(default_factory=set)
    """Tasks of the cancellable executor running now."""
    cx_runs: Counter[str] = field(default_factory=Counter)
    cancels: dict[str, str] = field(default_factory=dict)
    """How each cancel went: `waiting` (True, before any run), `running` (True or False while a
    run was on), `finished` (False, after it ended), `unknown` (the canceller crashed)."""
    cancelled_at: dict[str, float] = field(default_factory=dict)
    occurrence_tasks: dict[tuple[str, datetime], set[str]] = field(default_factory=dict)
    """Each schedule occurrence's runs: the task ids that ran it (one, if it ran once)."""
    dedup_first: dict[str, str] = field(default_factory=dict)
    """Each dedup key's first task (what every send of the key must return)."""
    dedup_ran: dict[str, set[str]] = field(default_factory=dict)
    """The tasks that ran under each dedup key (one, if duplicates were not sent)."""
    flow: FlowChecks = field(default_factory=FlowChecks)
    """Flow control's invariants (concurrency, rate, order, debounce)."""
    leased_at: dict[str, float] = field(default_factory=dict)
    """When a run last took the lease of a task a cancel concerns."""
    counts: CountsLedger = field(default_factory=CountsLedger)
    """What batches committed and what the kept counters were asked to add."""

    def violate(self, message: str) -> None:
        if len(self.violations) < 200:
            self.violations.append(f"t={self.now():.3f}s {message}")
        self.note("VIOLATION", message)

    def note(self, *parts: object) -> None:
        self.trace.update(("|".join(map(str, parts)) + "\n").encode())

    # -- the stream --------------------------------------------------------------------------
    def written(self, record: Record, task: Task | None) -> None:
        if task is None:
            self.note("w", record.seq, None)
            return
        key = attempt_key(task)
        self.note("w", record.seq, key)
        self._see(task)
        if task.execution_stats.requeues:
            self.put_back.add(key)  # a consumer put it back, uncommitted: a redelivery, not a send
        elif task.force_store and key[1:] in self.reported.get(key[0], ()):
            self.violate(f"stored task {task.key} attempt {key[1:]} sent again after a write reported done")

    def reported_written(self, tasks: list[Task]) -> None:
        for task in tasks:
            if task.force_store:
                key = attempt_key(task)
                self.reported.setdefault(key[0], set()).add(key[1:])

    def resetting(self, rows: list[Task]) -> None:
        """Rows about to go back to `scheduled` (their send failed): a row whose send was
        reported written must not, or the sweeper sends it a second time."""
        for row in rows:
            if row.status is TaskStatus.PROCESSING and attempt_key(row)[1:] in self.reported.get(row.key, ()):
                self.violate(f"task {row.key} reset to scheduled though its send was reported written")

    def recovered(self, task_id: str) -> None:
        self.reported.pop(task_id, None)

    def delivered(self, key: Key) -> None:
        counts = self.attempts.get(key)
        if counts is None:
            self.attempts[key] = [1, 0]
        else:
            counts[0] += 1

    # -- executors ---------------------------------------------------------------------------
    def ran(self, task: Task) -> None:
        key = attempt_key(task)
        counts = self.attempts.setdefault(key, [0, 0])
        counts[1] += 1
        self.note("run", *key)
        if task.execute_at is not None:
            late = (self.clock.now() - task.execute_at).total_seconds()
            if late < 0:
                self.violate(f"task {task.key} attempt {key[1:]} ran {-late:.3f} s before it was due")
            elif task.created_at is not None and task.execute_at > task.created_at:
                self.lateness.append(late)
        if counts[1] > counts[0]:
            self.violate(f"task {task.key} attempt {key[1:]} ran {counts[1]} times for {counts[0]} deliveries")
        if task.dedup_key is not None:
            ran = self.dedup_ran.setdefault(task.dedup_key, set())
            ran.add(task.key)
            if len(ran) > 1:
                self.violate(f"dedup key {task.dedup_key} ran as {len(ran)} tasks: {sorted(ran)}")
        seen = self.seen.get(task.key)
        row = self.peek_row(task.key) if task.force_store or (seen is not None and seen.kept) else None
        if row is not None and (row.status.is_terminal or _attempt(row) > key[1:]):
            self.violate(f"task {task.key} attempt {key[1:]} ran again after it committed ({row.status})")

    def occurrence_ran(self, task: Task) -> None:
        meta = task.metadata.schedule
        if meta is None:
            self.violate(f"task {task.key} of a schedule carries no occurrence")
            return
        self.occurrence_tasks.setdefault((meta.name, meta.scheduled_at), set()).add(task.key)

    def limited_ended(self, task: Task, ran_for: float, limit: float) -> None:
        """A run of an executor with a time limit ended (returned, raised or was stopped)."""
        if ran_for > limit + 0.001:
            self.violate(f"task {task.key} ran {ran_for:.3f} s, past its time limit of {limit:g} s")

    def cx_started(self, task: Task) -> None:
        """A run of a cancellable task starts: never by a run that took its lease after a cancel
        returned True (one holding the lease before may start, seeing the cancel asked)."""
        self.cx_running.add(task.key)
        self.cx_runs[task.key] += 1
        cancelled = self.cancelled_at.get(task.key)
        if cancelled is not None and self.leased_at.get(task.key, -1.0) >= cancelled:
            self.violate(f"task {task.key} started {self.now() - cancelled:.3f} s after cancel returned True")

    def cancel_returned(self, key: str, cancelled: bool | None, running: bool) -> None:
        """What `handler.cancel(key)` returned (None: the canceller died), and whether a run of
        the task was on during the call (its executor running, or its lease held)."""
        if cancelled is None:
            self.cancels[key] = "unknown"
            return
        row = self.peek_row(key)
        final = row is not None and row.status.is_terminal
        if not cancelled and not final:
            self.violate(f"cancel of {key} returned False, though it had not finished ({row and row.status})")
        if cancelled and row is not None and row.status is TaskStatus.EXECUTED and not running:
            self.violate(f"cancel of {key} returned True, though it had finished")
        requested = cancelled and not final  # a run held it: the run decides how it ends
        self.cancels[key] = "running" if running or requested else "waiting" if cancelled else "finished"
        if cancelled:
            self.cancelled_at[key] = self.now()

    def joined(self, task: Task, summary: FlowResults, steps: Sequence[tuple[int, str, Any]]) -> None:
        """A join ran and read its flow's results (`steps`: index, status, result)."""
        meta = task.flow_meta
        assert meta is not None
        closed_at = task.created_at  # the join is created when the barrier closes
        early = meta.timeout_at is not None and closed_at is not None and closed_at < meta.timeout_at
        if summary.timed_out and early and meta.timeout_at is not None and closed_at is not None:
            self.violate(f"flow {meta.flow_id} timed out before its deadline "
                         f"({(meta.timeout_at - closed_at).total_seconds():.3f} s early)")
        self.joins.setdefault(meta.flow_id, []).append(Joined(summary.aborted, summary.timed_out, list(steps)))

    # -- commits -----------------------------------------------------------------------------
    def committed(self, batch: CommitBatch) -> None:
        for row in batch.committed_rows:  # redelivered after its commit: the row says how it ended
            self._final(row, Verdict(row.status.value), row.execution_result, row.execution_stats.last_error)
        for outcome in batch.outcomes:
            assert outcome.verdict is not None
            self._final(outcome.task, outcome.verdict, outcome.result, outcome.error)

    def _see(self, task: Task) -> Seen:
        seen = self.seen.get(task.key)
        if seen is None:
            seen = self.seen[task.key] = self.describe(task)
        return seen

    def _final(self, task: Task, verdict: Verdict, result: Any, error: str | None) -> None:
        seen = self._see(task)
        attempt = _attempt(task)
        if attempt == seen.attempt and verdict is Verdict.RETRY and seen.verdict is not Verdict.RETRY:
            return  # a copy of an attempt that committed, deferred afterwards: the deferral writes nothing
        if attempt >= seen.attempt:
            seen.attempt, seen.verdict, seen.error = attempt, verdict, error
            seen.result = result if seen.step else None

    def committed_attempt(self, key: Key) -> bool:
        """Whether `key`'s attempt has committed (its outcome seen, or its row past it)."""
        seen = self.seen.get(key[0])
        if seen is not None and seen.verdict is not None and seen.attempt >= key[1:]:
            return True
        row = self.peek_row(key[0])
        return row is not None and (row.status.is_terminal or _attempt(row) > key[1:])

    def accounted(self, record: Record, key: Key) -> bool:
        if key in self.put_back:
            return True
        seen = self.seen.get(key[0])
        if seen is not None and seen.verdict is not None and seen.attempt >= key[1:]:
            return True
        row = self.peek_row(key[0])
        return row is not None and (row.status.is_terminal or _attempt(row) > key[1:])

    def projected(self, task_id: str, rank: int) -> None:
        if rank < self.projection_rank.get(task_id, -1):
            self.violate(f"projection of {task_id} moved back")
        self.projection_rank[task_id] = rank


def _attempt(task: Task) -> tuple[int, int]:
    return task.execution_stats.retry_count, task.execution_stats.deferrals


class TrackerStep:
    """The last commit step: tells the checker what each batch committed."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    async def __call__(self, batch: CommitBatch) -> None:
        self.tracker.committed(batch)
        self.tracker.counts.committed.update(flat_counts(BatchTally.of(batch.outcomes)))


class Announcements:
    """The lifecycle listener: counts exhausted-task announcements (async mode, as deployed)."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    async def on_task_exhausted(self, event: Any) -> None:
        await asyncio.sleep(0)
        self.tracker.exhausted_events[event.task_id] += 1


def rows_left_open(rows: Mapping[str, Task]) -> list[str]:
    return [f"{k} left {r.status.value}" for k, r in rows.items()
            if r.status in (TaskStatus.SCHEDULED, TaskStatus.PROCESSING)]
