"""A seeded chaos run: a workload with every kind of task through the local runtime while AWS
calls and invocations fail, then checks of the invariants tq-cloud promises.

    report = await run_chaos(endpoint, seed=7, rate=0.2, tasks=200)

The same seed draws the same workload and the same fault sequence per call order (thread
interleavings between the worker and the sweeper can still vary the order).
"""

from __future__ import annotations

import asyncio
import io
import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO, cast

from tests.chaos.faults import FaultInjector
from tq_cloud.asynctasks.manager import AsyncTaskManager, AsyncTaskManagerOptions
from tq_cloud.core.actions import ExecutorActions
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.core.settings import HandlerSettings
from tq_cloud.domain.flows import FlowConfig
from tq_cloud.domain.task import EntityRef, JoinTarget, Task, TaskStatus


@dataclass
class Truth:
    """What the executors saw, for the invariants."""

    succeeded: Counter[str] = field(default_factory=Counter)
    flows: dict[str, dict[str, Any]] = field(default_factory=dict)
    joins: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))


@dataclass
class Design:
    must_succeed: set[str] = field(default_factory=set)
    must_fail: set[str] = field(default_factory=set)
    entity_tasks: set[str] = field(default_factory=set)
    flows: int = 0
    tasks: list[Task] = field(default_factory=list)


def build_app(truth: Truth) -> TaskQueuesManager:
    app = TaskQueuesManager()

    @app.task("c", "plain")
    async def plain(task: Task, actions: ExecutorActions) -> None:
        truth.succeeded[task.key] += 1
        actions.success(task)

    @app.task("c", "flaky", retries=3, store_on_failure=True)
    async def flaky(task: Task, actions: ExecutorActions) -> None:
        if task.retry_count == 0:
            actions.fail(task, "first attempt fails")
            return
        truth.succeeded[task.key] += 1
        actions.success(task, task.retry_count)

    @app.task("c", "doomed", retries=1, store_on_failure=True)
    async def doomed(task: Task, actions: ExecutorActions) -> None:
        actions.fail(task, "always fails")

    @app.batch_task("c", "bulk")
    async def bulk(tasks: list[Task], actions: ExecutorActions) -> None:
        for task in tasks:
            truth.succeeded[task.key] += 1
            actions.success(task)

    @app.task("c", "slow", handoff_timeout=0.005, store_on_failure=True, retries=3)
    async def slow(task: Task, actions: ExecutorActions) -> None:
        await asyncio.sleep(0.02)
        truth.succeeded[task.key] += 1
        actions.success(task, "late")

    @app.task("c", "parent", store_on_failure=True, retries=3)
    async def parent(task: Task, actions: ExecutorActions) -> None:
        spec = task.payload
        steps = [{"type": "step", "queue_id": "c", "payload": {"fail": i in spec["failing"], "hold": i in spec["held"]},
                  "retry_after": 100} for i in range(spec["steps"])]
        flow_id = actions.start_flow(steps, FlowConfig(
            join=JoinTarget(type="join", queue_id="c"), failure_policy=spec["policy"],
            timeout_ms=spec["timeout_ms"], entity=EntityRef(id=task.key, type="order")))
        truth.flows[flow_id] = spec
        actions.success(task)

    @app.task("c", "step", retries=1, parallel=True, chunk_size=10)
    async def step(task: Task, actions: ExecutorActions) -> None:
        if task.payload["hold"] and task.retry_count == 0:
            actions.fail(task, "held")
        elif task.payload["fail"]:
            actions.fail(task, "step failed")
        else:
            actions.success(task, "done")

    @app.task("c", "join", store_on_failure=True, retries=3)
    async def join(task: Task, actions: ExecutorActions) -> None:
        results = task.payload["flow_results"]
        truth.joins[results["flow_id"]].append(results)
        actions.success(task)

    return app


def workload(seed: int, n: int) -> Design:
    rng = random.Random(seed)
    design = Design()
    now = datetime.now(UTC)
    for i in range(n):
        kind = rng.choices(["plain", "flaky", "doomed", "bulk", "later", "bound", "slow", "flow"],
                           weights=[40, 10, 5, 15, 8, 7, 5, 10])[0]
        task_id = f"{kind}-{i}"
        if kind == "flow":
            steps = rng.randint(2, 6)
            failing = [j for j in range(steps) if rng.random() < 0.2]
            spec = {"steps": steps, "failing": failing, "held": [j for j in range(steps) if rng.random() < 0.2],
                    "policy": rng.choice(["continue", "abort"]), "timeout_ms": rng.choice([None, 1500])}
            design.tasks.append(Task(id=task_id, type="parent", queue_id="c", payload=spec))
            design.flows += 1
            continue
        if kind == "doomed":
            design.must_fail.add(task_id)
            design.tasks.append(Task(id=task_id, type="doomed", queue_id="c", payload={}, retry_after=100))
            continue
        type_ = {"later": "plain", "bound": "plain"}.get(kind, kind)
        task = Task(id=task_id, type=type_, queue_id="c", payload={}, retry_after=100,
                    execute_at=now + timedelta(seconds=2) if kind == "later" else None,
                    entity=EntityRef(id=f"e{i}", type="thing") if kind == "bound" else None,
                    force_store=kind == "bound")
        if kind == "bound":
            design.entity_tasks.add(task_id)
        design.must_succeed.add(task_id)
        design.tasks.append(task)
    return design


@dataclass
class ChaosReport:
    seed: int
    rate: float
    tasks: int
    faults: Counter[str]
    calls: int
    redeliveries: int
    violations: list[str]
    seconds: float

    def render(self) -> str:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        lines = [f"seed {self.seed}, fault rate {self.rate:.0%}: {self.tasks} tasks in {self.seconds:.1f}s",
                 f"  AWS calls {self.calls}; faults injected {sum(self.faults.values())} ({faults})",
                 f"  records redelivered by the event source: {self.redeliveries}",
                 "  invariants: " + ("all hold" if not self.violations else f"{len(self.violations)} violated")]
        lines += [f"    - {v}" for v in self.violations[:20]]
        return "\n".join(lines)


async def run_chaos(endpoint: str, *, seed: int, rate: float, tasks: int, max_seconds: float = 170,
                    template: Any = None, wave: int | None = None, stale_after: float = 30.0,
                    sweep_interval: float = 0.5, view_interval: float = 1.0, due_buckets: int = 8,
                    out: TextIO | None = None) -> ChaosReport:
    """`wave` enqueues the workload that many tasks at a time, each wave once the event source
    has read every shard to its tip: a large run then keeps its stream backlog, and so each
    task's wait, below `stale_after`, as a deployment sized for its load would. (A backlog
    longer than `stale_after` makes the sweeper recover tasks that are only queued: duplicates
    that are harmless but feed on themselves.) Large runs also sweep and look less often and
    with fewer buckets: moto sorts a whole table for every GSI query, so the sweeper's queries
    grow with the table there as they do not on DynamoDB. `out` receives the live view."""
    from pathlib import Path

    from tq_cloud.aws_lambda import kinesis_handler, sweeper_handler
    from tq_cloud.backends.aws.settings import AwsSettings
    from tq_cloud.local.runtime import DevOptions, LocalRuntime

    loop = asyncio.get_running_loop()
    started = loop.time()
    suffix = f"{seed}-{random.Random().getrandbits(32):08x}"
    aws = AwsSettings(endpoint_url=endpoint, stream_name=f"chaos-{suffix}",
                      tasks_table=f"chaos-tasks-{suffix}", barriers_table=f"chaos-barriers-{suffix}",
                      projections_table=f"chaos-proj-{suffix}", locks_table=f"chaos-locks-{suffix}",
                      schedule_group=f"chaos-{suffix}", due_buckets=due_buckets)
    truth, design = Truth(), workload(seed, tasks)
    app = build_app(truth)
    faults = FaultInjector(seed, rate)
    faults.enabled = False
    quick = HandlerSettings(lock_ttl=timedelta(seconds=stale_after), stale_after=timedelta(seconds=stale_after),
                            mature_interval=0.5)
    manager = AsyncTaskManager(AsyncTaskManagerOptions(max_tasks=50, default_max_duration=5))
    worker = kinesis_handler(app, aws, settings=quick, async_manager=manager, safety_margin_ms=5_000)
    sweeper = sweeper_handler(app, aws, settings=quick)
    containers: list[Any] = []

    def container() -> Any:
        """A worker container for one slot of the event source mapping, with the faults on its
        clients (called in the slot's thread: the container's runtime runs its own loop)."""
        handler = cast(Any, worker).new_container()
        handler.runtime.run(handler.runtime.stack())
        clients = handler.runtime._stack.clients
        for client in (clients.kinesis, clients.dynamodb, clients.scheduler):
            faults.attach(client)
        containers.append(handler)
        return faults.crashing(handler)

    options = DevOptions(endpoint_url=endpoint, template=template or Path.cwd() / "template.yaml",
                         worker=faults.crashing(worker), sweeper=sweeper, sweep_interval=sweep_interval,
                         batching_window=0.1, view_interval=view_interval, until_settled=True, max_seconds=max_seconds,
                         aws=aws, max_retries=1000, worker_containers=container,
                         function_timeout_ms=int(stale_after * 1000 * 2 / 3))  # runs end before they go stale
    runtime = LocalRuntime(options, out or io.StringIO())

    from tq_cloud.backends.aws.stack import open_clients
    from tq_cloud.local.provision import create_resources

    async with open_clients(aws) as clients:
        await create_resources(clients, aws, options.template)
    for handler in (worker, sweeper):  # open each handler's clients now, to put the faults on them
        await asyncio.to_thread(handler.runtime.run, handler.runtime.stack())  # type: ignore[attr-defined]
        clients = handler.runtime._stack.clients  # type: ignore[attr-defined]
        for client in (clients.kinesis, clients.dynamodb, clients.scheduler):
            faults.attach(client)
    faults.enabled = True
    try:
        size = wave or len(design.tasks)
        final_view = await runtime.run(asyncio.Event(), design.tasks[:size],
                                       _waves(runtime, design.tasks[size:], size))
    finally:
        faults.enabled = False
        for lambda_runtime in [cast(Any, h).runtime for h in (worker, sweeper, *containers)]:
            if not lambda_runtime.loop.is_closed():
                await asyncio.to_thread(lambda_runtime.shutdown)
    violations = await _check(aws, design, truth)
    if final_view is None or not final_view.settled:
        violations.insert(0, f"the run did not settle within {max_seconds:.0f}s: the checks below describe "
                             "unfinished work, not necessarily lost work (rerun with a larger --max-seconds)")
    esm = runtime.esm
    redelivered = (esm.stats.reported_failures + esm.stats.errors) if esm else 0
    if esm and esm.stats.sent_to_on_failure:
        violations.append(f"{len(esm.stats.sent_to_on_failure)} batches went to the on-failure destination")
    return ChaosReport(seed, rate, tasks, faults.counts, faults.calls, redelivered, violations,
                       loop.time() - started)


async def _waves(runtime: Any, tasks: list[Task], size: int) -> AsyncIterator[list[Task]]:
    """The rest of the workload, a wave at a time; delayed tasks stay delayed from their wave."""
    for start in range(0, len(tasks), size):
        await runtime.esm.caught_up()
        later = datetime.now(UTC) + timedelta(seconds=2)
        yield [t.model_copy(update={"execute_at": later}) if t.execute_at else t for t in tasks[start:start + size]]


async def _check(aws: Any, design: Design, truth: Truth) -> list[str]:
    import json

    from tq_cloud.backends.aws.dynamodb_projections import DynamoDbProjectionProvider
    from tq_cloud.backends.aws.stack import open_clients
    from tq_cloud.local.view import scan_all

    violations = []
    missing = design.must_succeed - set(truth.succeeded)
    if missing:
        violations.append(f"{len(missing)} tasks never succeeded: {sorted(missing)[:5]}")
    wrong = design.must_fail & set(truth.succeeded)
    if wrong:
        violations.append(f"tasks designed to fail succeeded: {sorted(wrong)[:5]}")
    async with open_clients(aws) as clients:
        rows = {}
        for item in [i for i in await scan_all(clients.dynamodb, aws.tasks_table) if "body" in i]:
            body = json.loads(item["body"]["S"])
            rows[item["id"]["S"]] = (body["type"], item["status"]["S"])
        stuck = [k for k, (_, status) in rows.items() if status in (TaskStatus.SCHEDULED, TaskStatus.PROCESSING)]
        if stuck:
            violations.append(f"{len(stuck)} tasks left scheduled/processing: {stuck[:5]}")
        for task_id in design.must_fail:
            if rows.get(task_id, ("", ""))[1] != TaskStatus.FAILED:
                violations.append(f"{task_id} is not stored as failed: {rows.get(task_id)}")
        join_rows = Counter(t for t, _ in rows.values() if t == "join")
        if join_rows["join"] != len(truth.flows):
            violations.append(f"{join_rows['join']} join rows for {len(truth.flows)} flows")
        if len(truth.flows) != design.flows:
            violations.append(f"{len(truth.flows)} flows started, {design.flows} designed")
        for flow_id, spec in truth.flows.items():
            seen = truth.joins.get(flow_id, [])
            if not seen:
                violations.append(f"flow {flow_id}: join never ran")
                continue
            results = seen[0]
            if any(r != results for r in seen):
                violations.append(f"flow {flow_id}: join ran with different results")
            indices = [s["step_index"] for s in results["steps"]]
            if indices != sorted(set(indices)):
                violations.append(f"flow {flow_id}: a step result appears twice or out of order")
            for s in results["steps"]:
                expected = "fail" if s["step_index"] in spec["failing"] else "success"
                if s["status"] != expected:
                    violations.append(f"flow {flow_id}: step {s['step_index']} is {s['status']}, not {expected}")
            complete = not results["aborted"] and not results["timed_out"]
            if complete and indices != list(range(spec["steps"])):
                violations.append(f"flow {flow_id}: complete join lacks steps")
        projections = DynamoDbProjectionProvider(clients.dynamodb, aws.projections_table)
        for task_id in sorted(design.entity_tasks):  # one task per entity: its projection is the entity's
            found = await projections.get_projection(task_id)
            if found is None or found.status.value != "executed":
                violations.append(f"{task_id}: projection {found and found.status.value}, not executed")
    return violations
