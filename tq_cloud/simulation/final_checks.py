"""The checks made once everything settled (see checks.py for the invariants they complete)."""

from __future__ import annotations

from tq_cloud.backends.memory import InMemoryAdapter, InMemoryProjectionProvider
from tq_cloud.core.models import TaskStatus
from tq_cloud.core.outcomes import Verdict
from tq_cloud.flows.models import StartedFlow
from tq_cloud.ids import derived_id
from tq_cloud.ports.projections import ProjectionStatus
from tq_cloud.simulation.checks import Tracker, rows_left_open
from tq_cloud.simulation.stream import EventSourceMapping, Record, SimStream


class FlowShape:
    """What the checker keeps of a started flow: its steps' ids by index."""

    __slots__ = ("step_ids",)

    def __init__(self, flow: StartedFlow) -> None:
        by_index = {t.flow_meta.step_index: t.key for t in flow.tasks if t.flow_meta and t.flow_meta.step_index >= 0}
        self.step_ids = [by_index[i] for i in range(flow.total_steps)]


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
        self._foreign()
        for flow_id, flow in flows.items():
            self._flow(flow_id, flow)

    def _tasks(self) -> None:
        tracker, rows = self.tracker, self.storage._rows
        for key, seen in tracker.seen.items():
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
        results = runs[-1]
        steps = results["steps"]
        indices = [s["step_index"] for s in steps]
        if len(indices) != len(set(indices)):
            tracker.violate(f"flow {flow_id}: a step counted twice in the join")
        complete = not results["aborted"] and not results["timed_out"] and not results.get("truncated")
        if complete and sorted(indices) != list(range(len(flow.step_ids))):
            tracker.violate(f"flow {flow_id}: join has steps {len(indices)} of {len(flow.step_ids)}")
        for step in steps:
            index = step["step_index"]
            seen = tracker.seen.get(flow.step_ids[index]) if 0 <= index < len(flow.step_ids) else None
            if seen is None or seen.verdict is None:
                tracker.violate(f"flow {flow_id}: step {step['step_index']} in the join never finished")
                continue
            ok = seen.verdict is Verdict.EXECUTED
            same = not ok or step["result"] == seen.result or step.get("result_dropped")
            if (step["status"] == "success") != ok or not same:
                tracker.violate(f"flow {flow_id}: step {step['step_index']} is {step['status']} in the join, "
                                f"{seen.verdict} in fact")


def raw_key(record: Record) -> tuple[str, int, int]:
    """The id a record of another producer runs under (derived from its sequence number)."""
    return derived_id("record", f"{record.seq:020d}"), 0, 0
