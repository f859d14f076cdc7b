"""The simulated deployment: backends, containers, the event source mapping, the sweeper, the
timer and the producer, run on virtual time until everything settled; then the final checks.

Containers: each lane of the event source mapping invokes its own container (a TaskHandler with
its own runtime state: claims, async manager, lifecycle emitter, stats), as separate Lambda
containers would; a container whose invocation crashed is replaced by a fresh one. All share
the backends (the in-memory ones, behind the fault plan), as functions share DynamoDB.
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import random
import resource
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from tq_cloud.assembly.handler import TaskHandler
from tq_cloud.asynctasks.manager import AsyncTaskManager
from tq_cloud.aws_lambda.kinesis import KinesisBatchHandler
from tq_cloud.aws_lambda.sweeper import SweeperHandler
from tq_cloud.backends.aws.kinesis import kinesis_record
from tq_cloud.backends.memory import InMemoryCounters, InMemoryFlowBarrierProvider, InMemoryLockProvider
from tq_cloud.core.commit import CommitBatch
from tq_cloud.core.resilience import RetryPolicy
from tq_cloud.core.settings import HandlerSettings
from tq_cloud.domain.outcomes import Verdict
from tq_cloud.domain.task import TaskStatus
from tq_cloud.errors import TaskRejectedError
from tq_cloud.ids import derived_id
from tq_cloud.ports.storage import NOT_STAMPED
from tq_cloud.schedules.firing import ScheduleState, firing_input, occurrence_id, pause_key
from tq_cloud.simulation.adapters import (
    ReportingQueue,
    SimContext,
    SimRuntime,
    SlowClaims,
    TrackedProjections,
    TrackedStorage,
)
from tq_cloud.simulation.checks import Announcements, Tracker, TrackerStep
from tq_cloud.simulation.config import SimConfig
from tq_cloud.simulation.count_checks import ReportingCounters
from tq_cloud.simulation.delay_queue import Message, SimDelayQueue, SqsLaneMapping
from tq_cloud.simulation.faults import CURRENT, FaultPlan, Faulty, Invocation, InvocationCrash
from tq_cloud.simulation.final_checks import FinalChecks, FlowShape, raw_key
from tq_cloud.simulation.loop import LoopClock, run_virtual
from tq_cloud.simulation.stream import EventSourceMapping, Lane, MappingConfig, Record, SimStream
from tq_cloud.simulation.timer import SimTimer
from tq_cloud.simulation.workload import FLOW_CONTROLLED, Workload, build_app, describe, generate, generate_delays

BACKLOG_LIMIT = 20_000
REDRIVABLE_TYPES = frozenset({"seq", "seq_s", "par", "bulk", "slow", "typed"})
"""What the operator re-drives: tasks of the app's own executors, not flow steps or joins."""
"""Records waiting in the stream before the producer holds its next wave: a deployment sized
for its load keeps its backlog bounded, and so does the simulation's memory."""


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
    records: int = 0
    """Records written to the stream (a KPL aggregated record carries several tasks)."""
    put_back: int = 0
    """Uncommitted task attempts of aggregated batches a worker put back on the stream."""
    lane_messages: int = 0
    """Tasks sent through the delay lane (retries and short delays)."""
    redrives: int = 0
    """Tasks an operator re-drove (each then also had a stale record of its old attempt put
    back, one time in two)."""
    lateness: list[float] = field(default_factory=list)
    lane_lateness: list[float] = field(default_factory=list)
    lane_handled_lateness: list[float] = field(default_factory=list)
    """Lane lateness of the messages no crashed invocation received."""
    """Per delay-lane message: seconds from the end of its delay until its task was forwarded."""
    """Of each delayed run (a task with an `execute_at` in the future when it was added): its
    start less its due time, in seconds."""
    schedules: dict[str, int] = field(default_factory=dict)
    """Schedule occurrences, duplicate firings, occurrences run twice, lost, skipped (overlap)."""
    flow_control: dict[str, float] = field(default_factory=dict)
    """Tasks of executors with flow control, starts over a limit, out of order, longest wait (s)."""

    @property
    def tasks_per_second(self) -> float:
        return self.tasks / self.wall_seconds if self.wall_seconds else 0.0

    def summary_line(self) -> str:
        return (f"simulated {self.tasks} tasks, {sum(self.faults.values())} faults, "
                f"{len(self.violations)} violations, {self.tasks_per_second:.0f} tasks/s, trace {self.trace}")


@dataclass
class FiringStats:
    """What the simulated EventBridge Scheduler fired, and the check of how it ended."""

    occurrences: dict[str, list[datetime]] = field(default_factory=lambda: defaultdict(list))
    duplicates: int = 0
    end: datetime | None = None

    def check(self, tracker: Tracker, storage: Any) -> dict[str, int]:
        """Each occurrence ran once (one task, executed once), or was skipped by overlap='skip'
        (recorded on its row); none lost, none run twice."""
        twice = lost = skipped = 0
        for name, times in self.occurrences.items():
            for at in times:
                key = occurrence_id(name, at)
                ran = tracker.occurrence_tasks.get((name, at), set())
                row = storage._rows.get(key)
                seen = tracker.seen.get(key)
                if len(ran) > 1 or (seen is not None and seen.verdict is Verdict.EXECUTED and ran != {key}):
                    twice += 1
                    tracker.violate(f"schedule {name}: the occurrence of {at.isoformat()} ran twice ({sorted(ran)})")
                elif row is not None and row.status is TaskStatus.CANCELLED and \
                        (row.execution_stats.cancel_reason or "").startswith("skipped:"):
                    skipped += 1
                elif not ran or row is None or row.status is not TaskStatus.EXECUTED:
                    lost += 1
                    tracker.violate(f"schedule {name}: the occurrence of {at.isoformat()} was lost "
                                    f"({row.status.value if row else 'no row'})")
        total = sum(len(t) for t in self.occurrences.values())
        return {"occurrences": total, "duplicates": self.duplicates, "twice": twice, "lost": lost, "skipped": skipped}


class Simulation:
    """Example:
        report = Simulation(SimConfig(tasks=3000, fault_rate=0.2, seed=7)).run()
        assert not report.violations, report.violations
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config

    def run(self) -> SimReport:
        report = SimReport(self.config)
        thresholds = gc.get_threshold()
        gc.set_threshold(200_000, 50, 1000)  # the checker keeps every task it saw: rescanning that
        started = time.perf_counter()          # heap at the default thresholds costs a third of a run
        try:
            run_virtual(_simulate(self.config, report))
        finally:
            report.wall_seconds = time.perf_counter() - started
            report.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            gc.set_threshold(*thresholds)
        return report


async def _simulate(config: SimConfig, report: SimReport) -> None:
    await Deployment(config).run(report)


class Deployment:
    """One simulated deployment, built on the running virtual-time loop."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        seeds = random.Random(cfg.seed)
        self.rngs = {name: random.Random(seeds.getrandbits(64))
                     for name in ("work", "faults", "yields", "timer", "lane", "operator", "schedules")}
        self.loop = asyncio.get_running_loop()
        self.clock = LoopClock()
        self.tracker = tracker = Tracker(peek_row=lambda key: self.storage._rows.get(key), now=self.loop.time,
                                         describe=lambda task: describe(task, lane=cfg.delay_lane),
                                         clock=self.clock)
        self.storage = TrackedStorage(tracker, cfg.index_lag)
        self.plan = FaultPlan(self.rngs["faults"], cfg.fault_rate,
                              on_fault=self._fault)
        self.app = build_app(tracker)
        self.stream = SimStream(cfg.shards, cfg.parallelization, tracker.written,
                                aggregate_bytes=cfg.aggregate_bytes, alone=self.app.packs_alone)
        self.timer = SimTimer(self.stream, self.rngs["timer"])
        self.projections = TrackedProjections(tracker)
        self.counters = InMemoryCounters()
        self.flows: dict[str, FlowShape] = {}
        self.shared = {"storage": self._faulty(self.storage, "storage"),
                       "flow_barriers": self._faulty(InMemoryFlowBarrierProvider(), "barriers"),
                       "projections": self._faulty(self.projections, "projections"),
                       "queue": ReportingQueue(self._faulty(self.stream, "queue"), tracker),
                       "counters": ReportingCounters(self._faulty(self.counters, "counters"), tracker.counts)}
        self.lane = SimDelayQueue(self.clock) if cfg.delay_lane else None
        if self.lane is not None:
            self.shared["delay_lane"] = self._faulty(self.lane, "lane")
            self.lane_mapping = SqsLaneMapping(self.lane, self.invoke_lane, self.rngs["lane"])
        self.containers: dict[str, TaskHandler] = {}
        self.mapping = EventSourceMapping(self.stream, MappingConfig(
            cfg.batch_size, cfg.batching_window, cfg.maximum_retry_attempts), self.invoke)
        new_id = lambda: f"task-{self.rngs['work'].getrandbits(48):012x}"  # noqa: E731
        self.waves: Iterator[Workload] = (
            generate(self.rngs["work"], cfg.tasks, cfg.max_flow_steps, cfg.edge_inputs, new_id)
            if cfg.workload == "mixed" else generate_delays(self.rngs["work"], cfg.tasks, new_id))
        self.produced = asyncio.Event()
        self.cancels: list[tuple[float, str]] = []
        """When to cancel which task (a heap)."""
        self.firings = FiringStats()
        self.schedules_done = asyncio.Event()
        self._names = iter(range(1, 1 << 62))

    def _fault(self, kind: str, where: str) -> None:
        self.tracker.note("fault", kind, where)
        current = CURRENT.get(None)
        if where.endswith(".release_leases") and current is not None:  # its leases end at the deadline
            self.tracker.release_failed.add(current.name)

    def _faulty(self, port: Any, name: str) -> Any:
        return Faulty(port, name, self.plan, self.rngs["yields"])

    def container(self, *, sweeper: bool = False) -> TaskHandler:
        flows = self.flows

        class FlowsStarted:
            async def __call__(self, batch: CommitBatch) -> None:
                for flow in batch.flows:
                    if flow.flow_id not in flows:
                        flows[flow.flow_id] = FlowShape(flow)

        return TaskHandler(
            registry=self.app, clock=self.clock, timer=self.timer,
            locks=self._faulty(InMemoryLockProvider(self.clock), "locks"),
            async_manager=AsyncTaskManager(clock=self.clock), task_lifecycle=cast(Any, Announcements(self.tracker)),
            worker_id=f"container-{next(self._names)}",
            settings=HandlerSettings(mature_interval=self.cfg.sweep_interval,
                                     mature_batch_limit=self.cfg.sweep_wave if sweeper else 1000),
            extra_commit_steps=[FlowsStarted(), TrackerStep(self.tracker)],
            retry_policy=RetryPolicy(rng=random.Random(self.rngs["yields"].getrandbits(64))),
            **(self.shared | ({"storage": SlowClaims(self.shared["storage"], self.cfg.claim_seconds)} if sweeper
                              else {})))

    async def invoke(self, lane: Lane, batch: list[Record]) -> list[int] | None:
        """The worker Lambda on one batch; the failed sequence numbers, or None if it died."""
        handler = self.containers.get(lane.name) or self.containers.setdefault(lane.name, self.container())
        self.tracker.note("invoke", lane.name, batch[0].seq, len(batch))
        context = SimContext(f"req-{next(self._names)}", self.loop.time() + self.cfg.invocation_timeout)
        event = {"Records": [r.as_lambda_record() for r in batch]}
        worker = KinesisBatchHandler(SimRuntime(handler, self.tracker))
        response = await invocation(worker.handle(event, context),
                                    self.plan.invocation(f"{lane.name}#{batch[0].seq}"), self.cfg.invocation_timeout)
        if response is None:
            self.containers.pop(lane.name, None)  # a crashed container is not reused
            self.tracker.note("crashed", lane.name)
            return None
        failed = sorted(int(f["itemIdentifier"]) for f in response["batchItemFailures"])
        for record in batch:
            if failed and record.seq >= failed[0]:
                self._named(record, worker.last.fell_back, worker.last.uncommitted)
                continue
            if not record.keys and derived_id("undecodable", f"{record.seq:020d}") in self.storage._rows:
                continue
            for key in record.keys or (raw_key(record),):
                if not self.tracker.accounted(record, key):
                    self.tracker.violate(f"record {record.seq} ({key}) left its batch without an outcome")
        self.tracker.note("response", lane.name, failed)
        return failed

    def _named(self, record: Record, fell_back: list[str], uncommitted: set[str]) -> None:
        """A record Lambda will deliver again: if aggregated, none of its tasks the worker saw
        commit may have committed (their runs would come again), unless it said why it had to
        name it. (A commit whose answer was lost, the worker cannot tell from a failed one.)"""
        if len(record.keys) < 2 or fell_back:
            return
        done = [key for key in record.keys if key[0] not in uncommitted and self.tracker.committed_attempt(key)]
        if done:
            self.tracker.violate(f"aggregated record {record.seq} named for redelivery though {done[0]} committed")

    async def invoke_lane(self, poller: str, batch: list[Message]) -> set[str] | None:
        """The worker Lambda on a batch of the delay lane: the message ids to deliver again, or
        None if it died."""
        handler = self.containers.get(poller) or self.containers.setdefault(poller, self.container())
        self.tracker.note("invoke-lane", poller, batch[0].message_id, len(batch))
        context = SimContext(f"req-{next(self._names)}", self.loop.time() + self.cfg.invocation_timeout)
        event = {"Records": [m.as_lambda_record() for m in batch]}
        work = KinesisBatchHandler(SimRuntime(handler, self.tracker)).handle(event, context)
        response = await invocation(work, self.plan.invocation(f"{poller}#{batch[0].message_id}"),
                                    self.cfg.invocation_timeout)
        if response is None:
            self.containers.pop(poller, None)
            return None
        return {f["itemIdentifier"] for f in response["batchItemFailures"]}

    async def produce(self) -> None:
        """Add the workload in waves through a producer of its own; a failed call is retried
        with the same tasks (the same ids)."""
        producer = self.container()
        for work in self.waves:
            while self.mapping.backlog() > BACKLOG_LIMIT:  # noqa: ASYNC110 - paced as a sized deployment is
                await asyncio.sleep(1.0)
            for task in work.rejected_at_add:
                try:
                    await producer.add_tasks([task], allow_unknown=True)
                    self.tracker.violate(f"task {task.key!r} over a limit was accepted by add_tasks")
                except TaskRejectedError:
                    pass
            for data, key in work.raw:
                self.stream.append(data, key)
            now = self.clock.now()
            chunk = [t.model_copy(update={"execute_at": now + timedelta(seconds=d)}) if d else t for t, d in work.roots]
            while chunk and await invocation(producer.add_tasks(chunk, allow_unknown=True),  # noqa: ASYNC110
                                             self.plan.invocation("producer"), 60.0) is None:
                await asyncio.sleep(1.0)  # the producer tries again a second later
            for send in work.sends:
                delay = timedelta(seconds=send.delay) if send.delay else None
                while (sent := await invocation(producer.send(send.executor, send.payload, delay=delay,  # noqa: ASYNC110
                                                              id=send.id, dedup_key=send.dedup_key),
                                                self.plan.invocation("producer"), 60.0)) is None:
                    await asyncio.sleep(1.0)
                if send.dedup_key is not None:
                    first = self.tracker.dedup_first.setdefault(send.dedup_key, sent.key)
                    if sent.key != first:
                        self.tracker.violate(f"a send of dedup key {send.dedup_key} returned {sent.key}, not the "
                                             f"first task {first}")
                if send.cancel_after is not None:
                    heapq.heappush(self.cancels, (self.loop.time() + send.cancel_after, send.id))
            await asyncio.sleep(0.05)
        self.produced.set()

    async def sweep(self) -> None:
        """The sweeper on its schedule. Rows it may recover as stale may be sent again."""
        handler, stale_after = self.container(sweeper=True), HandlerSettings().stale_after
        while True:
            await asyncio.sleep(self.cfg.sweep_interval)
            cutoff = self.clock.now() - stale_after
            for key in list(self.storage._open):
                row = self.storage._rows[key]
                since = row.processing_started_at or cutoff
                if row.status is TaskStatus.PROCESSING and since != NOT_STAMPED and since < cutoff:
                    self.tracker.recovered(key)
            sweeper = SweeperHandler(SimRuntime(handler, self.tracker))
            started, limit = self.loop.time(), self.cfg.sweeper_timeout
            context = SimContext(f"sweep-{started}", started + limit)
            if await invocation(sweeper.handle(context), self.plan.invocation("sweeper"), limit) is None:
                if self.loop.time() - started >= limit:
                    self.tracker.violate("the sweeper ran into its timeout: what it claimed waits for stale recovery")
                handler = self.container(sweeper=True)

    async def fire_schedules(self) -> None:
        """EventBridge Scheduler, as documented: at least once. Each occurrence is fired at its
        time; one in ten a second time (within two minutes), one in ten late (up to five
        minutes), one in twenty never (the sweeper catches it up). Once the workload is in and
        ten more minutes passed, the schedules are paused (a deployed app's schedules would fire
        for ever) and the last late firings delivered."""
        rng, start = self.rngs["schedules"], self.clock.now()
        schedules = list(self.app.schedules.values())
        producer = self.container()
        for schedule in schedules:  # deployed before the run: the sweeper may catch up from its start
            await self.storage.set_mark(pause_key(schedule.name), ScheduleState(seen=start).dump())
        fired_until, end, late = start, None, []
        while end is None or fired_until < end:
            await asyncio.sleep(10.0)
            if end is None and self.produced.is_set():  # at least 45 minutes: across the DST change
                end = max(self.clock.now() + timedelta(minutes=10), start + timedelta(minutes=45))
            until = min(self.clock.now(), end) if end is not None else self.clock.now()
            for schedule in schedules:
                for at in schedule.occurrences(fired_until, until):
                    self.firings.occurrences[schedule.name].append(at)
                    roll = rng.random()
                    lost = roll < 0.05 and (end is None or at < end - timedelta(minutes=6))
                    if not lost:
                        late.append(asyncio.ensure_future(self._fire(schedule, at, rng.uniform(0, 300) if roll > 0.9
                                                                      else 0.0)))
                    if 0.05 <= roll < 0.15:
                        self.firings.duplicates += 1
                        late.append(asyncio.ensure_future(self._fire(schedule, at, rng.uniform(0, 120))))
            fired_until = until
        await asyncio.sleep(1.0)  # the pause comes after the last occurrence fired

        async def pause(name: str) -> bool:
            await producer.pause_schedule(name)
            return True

        for schedule in schedules:
            while await invocation(pause(schedule.name), self.plan.invocation("operator"), 60.0) is None:  # noqa: ASYNC110
                await asyncio.sleep(1.0)
        await asyncio.gather(*late)
        self.firings.end = end
        self.schedules_done.set()

    async def _fire(self, schedule: Any, at: datetime, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        data = firing_input(schedule).replace("<aws.scheduler.scheduled-time>", at.strftime("%Y-%m-%dT%H:%M:%SZ"))
        self.stream.append(data.encode(), schedule.name)

    async def cancel(self) -> None:
        """A user cancelling some of the tasks sent through `handler.send`, each at its time
        (before it runs, while it runs, or after it ended), under the same faults."""
        handler = self.container()
        while True:
            await asyncio.sleep(1.0)
            while self.cancels and self.cancels[0][0] <= self.loop.time():
                _, key = heapq.heappop(self.cancels)
                runs, running = self.tracker.cx_runs[key], key in self.tracker.cx_running
                cancelled = await invocation(handler.cancel(key, "a user asked"), self.plan.invocation("canceller"),
                                             60.0)
                running = running or key in self.tracker.cx_running or self.tracker.cx_runs[key] != runs
                self.tracker.cancel_returned(key, cancelled, running)
                if cancelled is None:
                    handler = self.container()

    async def operate(self) -> None:
        """An operator re-driving failed tasks now and then (`tq-cloud redrive`), under the same
        faults: at most one task in a hundred, each once. Flow steps and joins are left alone (a
        flow's outcome is decided). Half of the re-driven tasks then get a stale record of their
        old attempt back on the stream, as Kinesis redelivering an old batch or a failure-queue
        re-drive of a range holding it would."""
        handler, rng, picked, budget = self.container(), self.rngs["operator"], 0, max(1, self.cfg.tasks // 100)
        per_round = max(5, budget // 20)  # done within about 20 rounds, long before the run's end
        while picked < budget:
            await asyncio.sleep(self.cfg.sweep_interval * 1.5)
            ids: list[str] = []
            while self.storage.failed and len(ids) < per_round:
                key = self.storage.failed.pop(0)
                seen = self.tracker.seen.get(key)
                if seen is not None and not seen.step and key not in self.tracker.redriven and \
                        seen.label.split(",")[0] in REDRIVABLE_TYPES and rng.random() < 0.5:
                    ids.append(key)
            if not ids:
                continue
            picked += len(ids)
            if await invocation(handler.redrive(ids), self.plan.invocation("operator"), 60.0) is None:
                handler = self.container()  # it died: the rows say which re-drives it made
            for key in ids:
                row = self.storage._rows[key]
                if row.execution_stats.redrives:
                    self.tracker.redriven[key] = row.execution_stats.redrive_base
                    if rng.random() < 0.5:
                        self._stale_copy(key, row.execution_stats.redrive_base - 1)

    def _stale_copy(self, key: str, attempt: int) -> None:
        """The record of `key`'s attempt before its re-drive, as it was first sent."""
        row = self.storage._rows[key]
        stats = row.execution_stats.model_copy(update={
            "retry_count": attempt, "redrives": 0, "redriven_at": None, "redrive_base": 0})
        stale = row.model_copy(update={"status": TaskStatus.SCHEDULED, "execution_stats": stats,
                                       "processing_started_at": None, "lease_until": None,
                                       "force_store": self.tracker.seen[key].has_row})
        data, partition_key = kinesis_record(stale)
        self.tracker.recovered(key)  # sent again by the outside, not by a send the engine repeated
        self.stream.append(data, partition_key, [stale])

    def settled(self) -> bool:
        return (self.produced.is_set() and self.schedules_done.is_set() and not self.cancels and self.mapping.idle()
                and not self.timer.pending
                and not self.storage._open and (self.lane is None or not self.lane.pending())
                and all(not c.async_manager or not c.async_manager._entries for c in self.containers.values()))

    async def run(self, report: SimReport) -> None:
        actors = [asyncio.ensure_future(self.mapping.consume(lane)) for lane in self.stream.lanes]
        actors += [asyncio.ensure_future(a) for a in (self.produce(), self.sweep(), self.timer.run(), self.operate(),
                                                      self.cancel(), self.fire_schedules())]
        if self.lane is not None:
            actors += [asyncio.ensure_future(self.lane_mapping.poll(f"lane-poller{p}"))
                       for p in range(self.lane_mapping.pollers)]
        while not self.settled() and self.loop.time() < self.cfg.max_virtual_seconds:  # noqa: ASYNC110
            await asyncio.sleep(5.0)  # a look every 5 virtual seconds costs nothing
        for actor in actors:
            actor.cancel()
        await asyncio.gather(*actors, return_exceptions=True)
        if not self.settled():
            self.tracker.violate(f"did not settle within {self.cfg.max_virtual_seconds:.0f} virtual seconds")
        FinalChecks(self.tracker, self.storage, self.projections, self.stream).run(self.flows, self.mapping)
        pairs = sorted({(q, t) for q, t, _ in self.tracker.counts.committed})
        now = self.clock.now()
        self.tracker.counts.check(await self.counters.read(pairs, now, now), self.tracker.violate)
        report.schedules = self.firings.check(self.tracker, self.storage)
        report.flow_control = self.tracker.flow.summary(
            sum(1 for s in self.tracker.seen.values() if s.label.split(",")[0] in FLOW_CONTROLLED))
        if self.lane is not None and self.lane.dead_letters:
            self.tracker.violate(f"{len(self.lane.dead_letters)} delay-lane messages reached the dead-letter "
                                 f"queue: {self.lane.dead_letters[:3]}")
        report.tasks = sum(1 for s in self.tracker.seen.values() if s.verdict is not None)
        report.faults = self.plan.counts
        report.invocations = self.mapping.invocations
        report.redelivered = self.mapping.redelivered
        report.violations = self.tracker.violations
        report.virtual_seconds = self.loop.time()
        report.trace = self.tracker.trace.hexdigest()
        report.lane_messages = self.lane.sent if self.lane is not None else 0
        report.records = self.stream.written
        report.put_back = len(self.tracker.put_back)
        report.lateness = self.tracker.lateness
        report.lane_lateness = self.lane.lateness if self.lane is not None else []
        report.lane_handled_lateness = self.lane.handled_lateness if self.lane is not None else []
        report.redrives = len(self.tracker.redriven)


async def invocation(work: Any, current: Invocation, limit: float) -> Any:
    """Run one invocation in its own context; None if it crashed or ran past `limit` seconds
    (then it is dead: whatever it still runs can no longer write)."""
    token = CURRENT.set(current)
    job = asyncio.ensure_future(work)
    CURRENT.reset(token)
    done, _ = await asyncio.wait({job}, timeout=limit)
    if not done:
        current.crashed = True
        job.cancel()
    try:
        result = await job
    except (InvocationCrash, asyncio.CancelledError):
        current.crashed = True
        return None
    except Exception:  # noqa: BLE001 - a handler that raises is a failed invocation
        return None
    return None if current.crashed else result  # it died in a task of its own (a late commit)
