"""The checks made once everything settled (see checks.py for the invariants they complete)."""

from __future__ import annotations

from tq_cloud.backends.memory import InMemoryAdapter, InMemoryProjectionProvider
from tq_cloud.domain.flows import StartedFlow
from tq_cloud.domain.outcomes import Verdict
from tq_cloud.domain.task import ATTEMPTS_KEPT, TaskStatus
from tq_cloud.ids import derived_id
from tq_cloud.ports.projections import ProjectionStatus
from tq_cloud.simulation.checks import Seen, Tracker, rows_left_open
from tq_cloud.simulation.stream import EventSourceMapping, Record, SimStream


class FlowShape:
    """What the checker keeps of a started flow: its steps' ids by index, and which steps'
    failures abort it (their own policy, else the flow's)."""

    __slots__ = ("aborting", "step_ids")

    def __init__(self, flow: StartedFlow) -> None:
        steps = {t.flow_meta.step_index: t for t in flow.tasks if t.flow_meta and t.flow_meta.step_index >= 0}
        self.step_ids = [steps[i].key for i in range(flow.total_steps)]
        self.aborting = {i for i, t in steps.items() if t.flow_meta and (
            t.flow_meta.step_failure_policy or t.flow_meta.failure_policy) == "abort"}


class FinalChecks:
    def __init__(self, tracker: Tracker, storage: InMemoryAdapter, projections: InMemoryProjectionProvider,
                 stream: SimStream) -> None:
        self.tracker = tracker
        self.storage = storage
        self.projections = projections
        self.stream = stream

    def run(self, flows: dict[str, FlowShape], mapping: EventSourceMapping) -> None:
        tracker = self.tracker
        for problem in rows_left_open(self.storage._rows):
            tracker.violate(problem)
        if mapping.on_failure:
            tracker.violate(f"{len(mapping.on_failure)} batches reached the on-failure destination: "
                            f"{mapping.on_failure[:3]}")
        self._tasks()
        self._attempt_histories()
        self._redriven()
        self._foreign()
        for flow_id, flow in flows.items():
            self._flow(flow_id, flow)

    def _tasks(self) -> None:
        tracker, rows = self.tracker, self.storage._rows
        for key, seen in tracker.seen.items():
            if key in tracker.redriven:
                continue  # its new attempts decide how it ends (checked in _redriven)
            if key in tracker.cancels:
                self._cancelled(key, seen, tracker.cancels[key])
                continue
            want = seen.want
            if seen.verdict is not want:
                tracker.violate(f"task {key} ({seen.label}) ended {seen.verdict}, expected {want}")
                continue
            row = rows.get(key)
            if want is Verdict.DISCARDED and not tracker.exhausted_events[key]:
                tracker.violate(f"discarded task {key} was never announced")
            if want in (Verdict.FAILED, Verdict.IGNORED) and (row is None or row.status.value != want.value):
                tracker.violate(f"task {key} should have a {want.value} row, has {row.status if row else None}")
            if seen.has_row and want is Verdict.EXECUTED and (row is None or row.status is not TaskStatus.EXECUTED):
                tracker.violate(f"stored task {key} should have an executed row, has {row.status if row else None}")
            if seen.bound and want is not None:
                self._projection(key, want)

    def _attempt_histories(self) -> None:
        """A row's failed runs (the console's timeline): at most ATTEMPTS_KEPT, each run once,
        in order, none past the row's own attempt."""
        for key, row in self.storage._rows.items():
            numbers = [a.attempt for a in row.execution_stats.attempts]
            if len(numbers) > ATTEMPTS_KEPT or numbers != sorted(set(numbers)) or (
                    numbers and numbers[-1] > row.retry_count + 1):
                self.tracker.violate(f"task {key}: attempt history {numbers} at retry count {row.retry_count}")

    def _cancelled(self, key: str, seen: Seen, how: str) -> None:
        """A task cancelled before it ran ends cancelled; one cancelled while it ran (or by a
        canceller that died) ends executed or cancelled; one cancelled after it ended stays
        executed. The row and the outcomes committed agree: none ends both."""
        row = self.storage._rows.get(key)
        status = row.status if row is not None else None
        allowed = {"waiting": {TaskStatus.CANCELLED}, "finished": {TaskStatus.EXECUTED}}.get(
            how, {TaskStatus.EXECUTED, TaskStatus.CANCELLED})
        if status not in allowed:
            self.tracker.violate(f"task {key} ({seen.label}), cancelled ({how}), ended {status}")
        both = {seen.verdict, Verdict(status.value) if status is not None else None}
        if {Verdict.EXECUTED, Verdict.CANCELLED} <= both:
            self.tracker.violate(f"task {key} ended both executed and cancelled")

    def _redriven(self) -> None:
        """Every re-drive reported sent ran its new attempt, and the task's row ends final at
        that attempt or a later one (never undone by a stale copy of an older one)."""
        tracker, rows = self.tracker, self.storage._rows
        for key, attempt in tracker.redriven.items():
            row = rows.get(key)
            if row is None or not row.status.is_terminal or row.retry_count < attempt:
                tracker.violate(f"re-driven task {key} (attempt {attempt}) ended as "
                                f"{row.status.value if row else None} at attempt {row.retry_count if row else None}")
            elif row.retry_count == attempt and not any(  # it ran, perhaps after deferrals
                    tracker.attempts.get((key, attempt, d), [0, 0])[1]
                    for d in range(row.execution_stats.deferrals + 1)):
                tracker.violate(f"re-driven task {key}: attempt {attempt} never ran")

    def _foreign(self) -> None:
        """Records of other producers: each ran under its derived id, or is a recorded poison."""
        tracker, rows = self.tracker, self.storage._rows
        for record in self.stream.foreign:
            seen = tracker.seen.get(raw_key(record)[0])
            undecodable = rows.get(derived_id("undecodable", f"{record.seq:020d}"))
            ok = (seen is not None and seen.verdict is Verdict.EXECUTED) or (
                undecodable is not None and undecodable.status is TaskStatus.FAILED)
            if not ok:
                tracker.violate(f"record {record.seq} of another producer has no outcome")

    def _projection(self, key: str, want: Verdict) -> None:
        entry = self.projections.get(key)
        final = ProjectionStatus.EXECUTED if want is Verdict.EXECUTED else ProjectionStatus.FAILED
        if entry is None or entry.status is not final:
            self.tracker.violate(f"projection of {key} is {entry.status if entry else None}, expected {final.value}")

    def _flow(self, flow_id: str, flow: FlowShape) -> None:
        tracker = self.tracker
        join = tracker.seen.get(derived_id(flow_id, "join"))
        runs = tracker.joins.get(flow_id, [])
        if join is None or join.verdict is not Verdict.EXECUTED or not runs:
            tracker.violate(f"flow {flow_id} has no executed join")
            return
        joined = runs[-1]
        indices = [index for index, _, _ in joined.steps]
        if len(indices) != len(set(indices)):
            tracker.violate(f"flow {flow_id}: a step counted twice in the join")
        if not joined.aborted and not joined.timed_out and sorted(indices) != list(range(len(flow.step_ids))):
            tracker.violate(f"flow {flow_id}: join has steps {len(indices)} of {len(flow.step_ids)}")
        aborting_failures = [i for i, status, _ in joined.steps if status == "fail" and i in flow.aborting]
        if joined.aborted and not aborting_failures:
            tracker.violate(f"flow {flow_id} was aborted without a failed step whose policy aborts")
        if not joined.aborted and not joined.timed_out and aborting_failures:
            tracker.violate(f"flow {flow_id} completed though step {aborting_failures[0]}'s failure aborts it")
        for index, status, result in joined.steps:
            seen = tracker.seen.get(flow.step_ids[index]) if 0 <= index < len(flow.step_ids) else None
            if seen is None or seen.verdict is None:
                tracker.violate(f"flow {flow_id}: step {index} in the join never finished")
                continue
            ok = seen.verdict is Verdict.EXECUTED
            if (status == "success") != ok or (ok and result != seen.result):
                tracker.violate(f"flow {flow_id}: step {index} is {status} in the join, {seen.verdict} in fact")


def raw_key(record: Record) -> tuple[str, int, int]:
    """The id a record of another producer runs under (derived from its sequence number)."""
    return derived_id("record", f"{record.seq:020d}"), 0, 0
