"""The simulated deployment: backends, containers, the event source mapping, the sweeper, the
timer and the producer, run on virtual time until everything settled; then the final checks.

Containers: each lane of the event source mapping invokes its own container (a TaskHandler with
its own runtime state: claims, async manager, lifecycle emitter, stats), as separate Lambda
containers would; a container whose invocation crashed is replaced by a fresh one. All share
the backends (the in-memory ones, behind the fault plan), as functions share DynamoDB.
"""

from __future__ import annotations

import asyncio
import random
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

from tq_cloud.asynctasks.manager import AsyncTaskManager
from tq_cloud.aws_lambda.kinesis import KinesisBatchHandler
from tq_cloud.aws_lambda.sweeper import SweeperHandler
from tq_cloud.backends.aws.scheduler import _at
from tq_cloud.backends.memory import (
    InMemoryAdapter,
    InMemoryFlowBarrierProvider,
    InMemoryLockProvider,
    InMemoryProjectionProvider,
)
from tq_cloud.core.commit import CommitBatch
from tq_cloud.core.handler import TaskHandler
from tq_cloud.core.models import Task, TaskStatus
from tq_cloud.core.outcomes import Verdict
from tq_cloud.core.resilience import RetryPolicy
from tq_cloud.core.settings import HandlerSettings
from tq_cloud.errors import QueueWriteError, TaskRejectedError
from tq_cloud.flows.models import FLOW_TIMEOUT_TYPE, StartedFlow
from tq_cloud.ids import derived_id
from tq_cloud.ports.projections import EntityTaskProjection, ProjectionStatus
from tq_cloud.simulation.checks import Announcements, Tracker, TrackerStep, rows_left_open
from tq_cloud.simulation.config import SimConfig
from tq_cloud.simulation.faults import CURRENT, Faulty, FaultPlan, Invocation, InvocationCrash
from tq_cloud.simulation.loop import EPOCH, LoopClock, run_virtual
from tq_cloud.simulation.stream import EventSourceMapping, Lane, MappingConfig, Record, SimStream, attempt_key
from tq_cloud.simulation.workload import build_app, expected, generate


@dataclass
class SimReport:
    config: SimConfig
    tasks: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    invocations: int = 0
    redelivered: int = 0
    violations: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    virtual_seconds: float = 0.0
    trace: str = ""
    peak_mb: float = 0.0
    """The process's peak resident set size (MB)."""

    @property
    def tasks_per_second(self) -> float:
        return self.tasks / self.wall_seconds if self.wall_seconds else 0.0

    def summary_line(self) -> str:
        return (f"simulated {self.tasks} tasks, {sum(self.faults.values())} faults, {len(self.violations)} violations, "
                f"{self.tasks_per_second:.0f} tasks/s, trace {self.trace}")


class SimRuntime:
    """What the Lambda handlers need of their runtime: the stack, and no metrics. Its handler
    counts each record it is given as a delivery (the worker handler gives a record again,
    itself, when its batch did not commit)."""

    def __init__(self, handler: TaskHandler, tracker: Tracker) -> None:
        self.handler = _Counting(handler, tracker)
        self.metrics = None

    async def stack(self) -> SimRuntime:
        return self

    def observability(self) -> None:
        return None

    def run(self, coro: Any) -> Any:
        raise RuntimeError("the simulation awaits handle() on its own loop")


class _Counting:
    def __init__(self, handler: TaskHandler, tracker: Tracker) -> None:
        self._handler = handler
        self._tracker = tracker

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._handler, attr)

    async def process_records(self, records: list[Any], *args: Any) -> Any:
        for record in records:
            if isinstance(record, Task):
                self._tracker.delivered(attempt_key(record))
        return await self._handler.process_records(records, *args)


class SimContext:
    def __init__(self, request_id: str, deadline: float) -> None:
        self.aws_request_id = request_id
        self.deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - asyncio.get_running_loop().time()) * 1000)


class SimTimer:
    """EventBridge Scheduler as it behaves: a one-time `at()` schedule (whole seconds, as
    `_at` writes it) fires once, at its time or some time in the minute after, onto the stream."""

    def __init__(self, stream: SimStream, rng: random.Random) -> None:
        self.stream = stream
        self.rng = rng
        self.pending: dict[str, tuple[float, Task]] = {}
        self.wake = asyncio.Event()

    async def schedule(self, name: str, task: Task) -> None:
        if name in self.pending:
            return
        at = _at(task.execute_at or EPOCH)[3:-1]
        jitter = 0.0 if self.rng.random() < 0.5 else self.rng.uniform(0, 60)
        when = (EPOCH.fromisoformat(at + "+00:00") - EPOCH).total_seconds() + jitter
        self.pending[name] = (when, task)
        self.wake.set()

    async def cancel(self, name: str) -> None:
        self.pending.pop(name, None)

    async def fire_due(self, now: Any) -> int:
        return 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.pending:
                self.wake.clear()
                await self.wake.wait()
                continue
            name, (when, task) = min(self.pending.items(), key=lambda item: (item[1][0], item[0]))
            if when > loop.time():
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), when - loop.time())
                except TimeoutError:
                    pass
                continue
            del self.pending[name]
            await self.stream.publish([task])


class TrackedStorage(InMemoryAdapter):
    def __init__(self, tracker: Tracker) -> None:
        super().__init__()
        self.tracker = tracker

    async def reset_to_scheduled(self, ids: Any) -> None:
        self.tracker.resetting([self._rows[i] for i in ids if i in self._rows])
        await super().reset_to_scheduled(ids)


class TrackedProjections(InMemoryProjectionProvider):
    def __init__(self, tracker: Tracker) -> None:
        super().__init__()
        self.tracker = tracker

    async def upsert_projections(self, entries: Any) -> None:
        await super().upsert_projections(entries)
        for entry in entries:
            stored = self.get(entry.task_id)
            if stored is not None:
                self.tracker.projected(entry.task_id, stored.status.rank)


class ReportingQueue:
    """Tells the checker which tasks each publish reported as written to its caller."""

    def __init__(self, inner: Any, tracker: Tracker) -> None:
        self.inner = inner
        self.tracker = tracker

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    async def publish(self, tasks: list[Task]) -> None:
        try:
            await self.inner.publish(tasks)
        except QueueWriteError as exc:
            refused = set(exc.task_ids) | set(exc.rejected)
            self.tracker.reported_written([t for t in tasks if t.key not in refused])
            raise
        self.tracker.reported_written(list(tasks))


class Simulation:
    """Example:
        report = Simulation(SimConfig(tasks=3000, fault_rate=0.2, seed=7)).run()
        assert not report.violations, report.violations
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config

    def run(self) -> SimReport:
        report = SimReport(self.config)
        started = time.perf_counter()
        try:
            run_virtual(self._run(report))
        finally:
            report.wall_seconds = time.perf_counter() - started
            report.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return report

    async def _run(self, report: SimReport) -> None:
        cfg = self.config
        seeds = random.Random(cfg.seed)
        rngs = {name: random.Random(seeds.getrandbits(64)) for name in ("work", "faults", "yields", "timer")}
        loop = asyncio.get_running_loop()
        clock = LoopClock()
        tracker = Tracker(peek_row=lambda key: storage._rows.get(key), now=loop.time)  # noqa: SLF001
        self.storage = storage = TrackedStorage(tracker)
        self.tracker = tracker
        plan = FaultPlan(rngs["faults"], cfg.fault_rate, on_fault=lambda kind, where: tracker.note("fault", kind, where))
        stream = SimStream(cfg.shards, cfg.parallelization, tracker.written)
        self.stream = stream
        timer = SimTimer(stream, rngs["timer"])
        app = build_app(tracker)
        projections = TrackedProjections(tracker)
        self.projections = projections
        flows: dict[str, StartedFlow] = {}

        def faulty(port: Any, name: str) -> Any:
            return Faulty(port, name, plan, rngs["yields"])

        shared = {"storage": faulty(storage, "storage"), "flow_barriers": faulty(InMemoryFlowBarrierProvider(), "barriers"),
                  "projections": faulty(projections, "projections"),
                  "queue": ReportingQueue(faulty(stream, "queue"), tracker)}
        counter = iter(range(1, 1 << 62))

        class Flows:
            async def __call__(self, batch: CommitBatch) -> None:
                for flow in batch.flows:
                    flows.setdefault(flow.flow_id, flow)

        def container() -> TaskHandler:
            return TaskHandler(
                registry=app, clock=clock, timer=timer, locks=faulty(InMemoryLockProvider(clock), "locks"),
                async_manager=AsyncTaskManager(clock=clock), task_lifecycle=cast(Any, Announcements(tracker)),
                worker_id=f"container-{next(counter)}", settings=HandlerSettings(mature_interval=cfg.sweep_interval),
                extra_commit_steps=[Flows(), TrackerStep(tracker)],
                retry_policy=RetryPolicy(rng=random.Random(rngs["yields"].getrandbits(64))), **shared)

        containers: dict[str, TaskHandler] = {}

        async def invoke(lane: Lane, batch: list[Record]) -> list[int] | None:
            handler = containers.get(lane.name) or containers.setdefault(lane.name, container())
            tracker.note("invoke", lane.name, batch[0].seq, len(batch))
            response = await self._invocation(
                KinesisBatchHandler(SimRuntime(handler, tracker)).handle({"Records": [r.as_lambda_record() for r in batch]},
                                                                SimContext(f"req-{next(counter)}", loop.time() + cfg.invocation_timeout)),
                f"{lane.name}#{batch[0].seq}", cfg.invocation_timeout)
            if response is None:
                containers.pop(lane.name, None)  # a crashed container is not reused
                tracker.note("crashed", lane.name)
                return None
            failed = sorted(int(f["itemIdentifier"]) for f in response["batchItemFailures"])
            first = failed[0] if failed else None
            for record in batch:
                if first is not None and record.seq >= first:
                    break
                if record.key is None and derived_id("undecodable", f"{record.seq:020d}") in storage._rows:  # noqa: SLF001
                    continue
                if not tracker.accounted(record, record.key or _raw_key(record)):
                    tracker.violate(f"record {record.seq} ({record.key}) left its batch without an outcome")
            tracker.note("response", lane.name, failed)
            return failed

        mapping = EventSourceMapping(stream, MappingConfig(cfg.batch_size, cfg.batching_window,
                                                           cfg.maximum_retry_attempts), invoke)
        work = generate(rngs["work"], cfg.tasks, cfg.max_flow_steps, cfg.edge_inputs,
                        lambda: f"task-{rngs['work'].getrandbits(48):012x}")
        producer_done = asyncio.Event()
        stale_after = HandlerSettings().stale_after

        async def produce() -> None:
            producer = container()
            for task in work.rejected_at_add:
                try:
                    await producer.add_tasks([task])
                    tracker.violate(f"task {task.key!r} over a limit was accepted by add_tasks")
                except TaskRejectedError:
                    pass
            for data, key in work.raw:
                stream.append(data, key)
            wave = max(1, len(work.roots) // 200)
            for start in range(0, len(work.roots), wave):
                now = clock.now()
                chunk = [t.model_copy(update={"execute_at": now + timedelta(seconds=d)}) if d else t
                         for t, d in work.roots[start:start + wave]]
                while True:
                    result = await self._invocation(producer.add_tasks(chunk), "producer", 60.0)
                    if result is not None:
                        break
                    await asyncio.sleep(1.0)  # the producer retries the same tasks (same ids)
                await asyncio.sleep(0.05)
            producer_done.set()

        async def sweep() -> None:
            handler = container()
            while True:
                await asyncio.sleep(cfg.sweep_interval)
                cutoff = clock.now() - stale_after
                for key in list(storage._open):  # noqa: SLF001 - stale recovery may send these again
                    row = storage._rows[key]  # noqa: SLF001
                    if row.status is TaskStatus.PROCESSING and (row.processing_started_at or cutoff) < cutoff:
                        tracker.recovered(key)
                if await self._invocation(SweeperHandler(SimRuntime(handler, tracker)).handle(), "sweeper", 60.0) is None:
                    handler = container()

        def settled() -> bool:
            return (producer_done.is_set() and mapping.idle() and not timer.pending
                    and not storage._open  # noqa: SLF001
                    and all(not c.async_manager or not c.async_manager._entries for c in containers.values()))  # noqa: SLF001

        actors = [asyncio.ensure_future(mapping.consume(lane)) for lane in stream.lanes]
        actors += [asyncio.ensure_future(a) for a in (produce(), sweep(), timer.run())]
        while not settled() and loop.time() < cfg.max_virtual_seconds:
            await asyncio.sleep(5.0)
        for actor in actors:
            actor.cancel()
        await asyncio.gather(*actors, return_exceptions=True)
        if not settled():
            tracker.violate(f"did not settle within {cfg.max_virtual_seconds:.0f} virtual seconds")
        self._final_checks(tracker, work.raw, flows, mapping)
        report.tasks = sum(1 for s in tracker.seen.values() if s.verdict is not None)
        report.faults = plan.counts
        report.invocations = mapping.invocations
        report.redelivered = mapping.redelivered
        report.violations = tracker.violations
        report.virtual_seconds = loop.time()
        report.trace = tracker.trace.hexdigest()

    async def _invocation(self, work: Any, name: str, timeout: float) -> Any:
        """Run one invocation in its own context; None if it crashed or ran past its timeout
        (then it is dead: whatever it still runs can no longer write)."""
        invocation = Invocation(name)
        token = CURRENT.set(invocation)
        job = asyncio.ensure_future(work)
        CURRENT.reset(token)
        done, _ = await asyncio.wait({job}, timeout=timeout)
        if not done:
            invocation.crashed = True
            job.cancel()
        try:
            result = await job
        except (InvocationCrash, asyncio.CancelledError):
            invocation.crashed = True
            return None
        except Exception as exc:  # noqa: BLE001 - a handler that raises is a failed invocation
            self.tracker.note("invocation error", name, type(exc).__name__)
            return None
        return None if invocation.crashed else result  # it died in a task of its own (a late commit)

    def _final_checks(self, tracker: Tracker, raw: list[tuple[bytes, str]], flows: dict[str, StartedFlow],
                      mapping: EventSourceMapping) -> None:
        rows = self.storage._rows  # noqa: SLF001
        for problem in rows_left_open(rows):
            tracker.violate(problem)
        if mapping.on_failure:
            tracker.violate(f"{len(mapping.on_failure)} batches reached the on-failure destination: {mapping.on_failure[:3]}")
        for key, seen in tracker.seen.items():
            if seen.task is None:
                continue
            want = expected(seen.task)
            if seen.verdict is not want:
                tracker.violate(f"task {key} ({seen.task.type}, {seen.task.payload if not isinstance(seen.task.payload, dict) else seen.task.payload.get('k')}) "
                                f"ended {seen.verdict}, expected {want}")
                continue
            row = rows.get(key)
            if want is Verdict.DISCARDED and not tracker.exhausted_events[key]:
                tracker.violate(f"discarded task {key} was never announced")
            if want in (Verdict.FAILED, Verdict.IGNORED) and (row is None or row.status.value != want.value):
                tracker.violate(f"task {key} should have a {want.value} row, has {row.status if row else None}")
            has_row = seen.task.force_store and seen.task.type != FLOW_TIMEOUT_TYPE  # sentinels live in the timer
            if has_row and want is Verdict.EXECUTED and (row is None or row.status is not TaskStatus.EXECUTED):
                tracker.violate(f"stored task {key} should have an executed row, has {row.status if row else None}")
            if seen.task.entity is not None and seen.task.force_store:
                self._check_projection(tracker, key, want)
        for data, key in raw:
            record = next((r for lane in self.stream.lanes for r in lane.records if r.data is data), None)
            if record is None:
                continue
            task_key = _raw_key(record)[0]
            undecodable = derived_id("undecodable", f"{record.seq:020d}")
            ok = (tracker.seen.get(task_key) and tracker.seen[task_key].verdict is Verdict.EXECUTED) or (
                undecodable in rows and rows[undecodable].status is TaskStatus.FAILED)
            if not ok:
                tracker.violate(f"record {record.seq} of another producer has no outcome")
        for flow_id, flow in flows.items():
            self._check_flow(tracker, flow_id, flow)

    def _check_projection(self, tracker: Tracker, key: str, want: Verdict) -> None:
        entry: EntityTaskProjection | None = self.projections.get(key)
        final = ProjectionStatus.EXECUTED if want is Verdict.EXECUTED else ProjectionStatus.FAILED
        if entry is None or entry.status is not final:
            tracker.violate(f"projection of {key} is {entry.status if entry else None}, expected {final.value}")

    def _check_flow(self, tracker: Tracker, flow_id: str, flow: StartedFlow) -> None:
        join = tracker.seen.get(derived_id(flow_id, "join"))
        if join is None or join.verdict is not Verdict.EXECUTED:
            tracker.violate(f"flow {flow_id} has no executed join")
            return
        results = tracker.joins.get(flow_id, [])[-1:]
        if not results:
            tracker.violate(f"flow {flow_id}: join never ran")
            return
        steps = results[0]["steps"]
        indices = [s["step_index"] for s in steps]
        if len(indices) != len(set(indices)):
            tracker.violate(f"flow {flow_id}: a step counted twice in the join")
        complete = not results[0]["aborted"] and not results[0]["timed_out"] and not results[0].get("truncated")
        if complete and sorted(indices) != list(range(flow.total_steps)):
            tracker.violate(f"flow {flow_id}: join has steps {len(indices)} of {flow.total_steps}")
        by_index = {t.flow_meta.step_index: t for t in flow.tasks if t.flow_meta and t.flow_meta.step_index >= 0}
        for step in steps:
            task = by_index.get(step["step_index"])
            seen = tracker.seen.get(task.key) if task else None
            if seen is None or seen.verdict is None:
                tracker.violate(f"flow {flow_id}: step {step['step_index']} in the join never finished")
                continue
            ok = seen.verdict is Verdict.EXECUTED
            if (step["status"] == "success") != ok or (ok and step["result"] != seen.result and not step.get("result_dropped")):
                tracker.violate(f"flow {flow_id}: step {step['step_index']} is {step['status']} in the join, "
                                f"{seen.verdict} in fact")


def _raw_key(record: Record) -> tuple[str, int, int]:
    return derived_id("record", f"{record.seq:020d}"), 0, 0


__all__ = ["SimReport", "Simulation", "attempt_key"]
