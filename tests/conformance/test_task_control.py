"""Task control through the handler, on the in-memory engine and on the AWS backends (moto's
server, or dynalite and kinesalite): typed sending, results by id, cancel (before a run, on the
stream, while running, of a flow), progress and time limits. The safety checks are shown to
fail with their bugs put back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from tests.aws_support import aws_resources
from tq_cloud import (
    EntityRef,
    ExecutorActions,
    FlowConfig,
    JoinTarget,
    ManualClock,
    Task,
    TaskCancelledError,
    TaskFailedError,
    TaskStatus,
    TaskTimeoutError,
)
from tq_cloud.assembly.handler import TaskHandler
from tq_cloud.backends.aws import build_stack
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.errors import InvalidDelayError, InvalidPayloadError, UnknownTaskTypeError
from tq_cloud.ports.barrier import BarrierState
from tq_cloud.testing import InMemoryStack


class Report(BaseModel):
    month: str
    rows: int = 10


async def tick(clock: ManualClock, job: asyncio.Future[Any], sleepers: int) -> None:
    """Advance the clock a second once `sleepers` coroutines sleep on it (or `job` ended)."""
    waiting = asyncio.ensure_future(clock.wait_for_sleepers(sleepers))
    await asyncio.wait({job, waiting}, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    await clock.advance(1)


class Engine:
    """One engine, in memory or on the AWS backends, driven on a manual clock."""

    def __init__(self, handler: TaskHandler, clock: ManualClock, registry: TaskQueuesManager,
                 drain: Any) -> None:
        self.handler = handler
        self.clock = clock
        self.registry = registry
        self._drain = drain

    async def drain(self) -> None:
        await self._drain()

    async def later(self, seconds: float) -> None:
        await self.clock.advance(seconds)
        await self.drain()


@pytest.fixture(params=["memory", "aws"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    registry = TaskQueuesManager()
    clock = ManualClock()
    if request.param == "memory":
        stack = InMemoryStack.create(registry, clock=clock)

        async def drain_memory() -> None:
            for _ in range(20):
                done = await stack.process_ready()
                if not done and not await stack.handler.process_mature_tasks():
                    return

        yield Engine(stack.handler, clock, registry, drain_memory)
        return
    from tq_cloud.local.poller import KinesisShardPoller
    from tq_cloud.local.scheduler import EmulatedScheduler

    settings = request.getfixturevalue("aws_target").settings()
    async with aws_resources(settings) as clients:
        aws = await build_stack(registry, settings, clients, clock=clock)
        poller = KinesisShardPoller(clients.kinesis, settings.stream_name, aws.handler)
        scheduler = EmulatedScheduler(clients.scheduler, clients.kinesis, settings.schedule_group)

        async def drain_aws() -> None:
            for _ in range(20):
                done = await poller.poll_once()
                swept = await aws.handler.process_mature_tasks() + await scheduler.fire_due(clock.now())
                if not done and not swept:
                    return

        yield Engine(aws.handler, clock, registry, drain_aws)


async def test_send_validates_against_the_executors_model_before_sending(engine: Engine) -> None:
    ran: list[Any] = []

    @engine.registry.task("reports", "build", keep_result=timedelta(hours=1))
    async def build(task: Task[Report], actions: ExecutorActions) -> dict[str, Any]:
        ran.append(task.payload)
        return {"month": task.payload.month, "rows": task.payload.rows}

    assert (build.queue_id, build.task_type, build.model) == ("reports", "build", Report)
    with pytest.raises(InvalidPayloadError, match="month"):
        await engine.handler.send(build, {"rows": "many"})
    with pytest.raises(UnknownTaskTypeError, match="build"):
        await engine.handler.send(("reports", "buidl"), {"month": "x"})
    with pytest.raises(InvalidDelayError):
        await engine.handler.send(build, {"month": "x"}, delay=timedelta(days=400))
    assert await engine.handler.find("nothing") is None
    first = await engine.handler.send(build, Report(month="2026-11"), id="nov")
    second = await engine.handler.send(("reports", "build"), {"month": "2026-12"}, partition_key="tenant-1",
                                       entity=EntityRef(type="report", id="dec"))
    third = await build.bind(engine.handler).delay(month="2027-01")
    await engine.drain()
    assert sorted(p.month for p in ran) == ["2026-11", "2026-12", "2027-01"]
    assert first.key == "nov" and second.partition_key == "tenant-1"
    assert await engine.handler.result("nov") == {"month": "2026-11", "rows": 10}
    assert await engine.handler.result(third.key) == {"month": "2027-01", "rows": 10}
    typed = first.model_copy(update={"payload": Report(month="2026-11")})
    assert await build(typed, None) == {"month": "2026-11", "rows": 10}, "calling the handle calls the function"


async def test_results_by_id(engine: Engine) -> None:
    @engine.registry.task("r", "ok", keep_result=timedelta(minutes=10))
    async def ok(task: Task, actions: ExecutorActions) -> Any:
        return task.payload

    @engine.registry.task("r", "bad", keep_result=timedelta(minutes=10), retries=1)
    async def bad(task: Task, actions: ExecutorActions) -> None:
        raise ValueError(f"no good on attempt {task.retry_count}")

    @engine.registry.task("r", "big", keep_result=timedelta(minutes=10))
    async def big(task: Task, actions: ExecutorActions) -> str:
        return "x" * (300 * 1024)

    @engine.registry.task("r", "plain")
    async def plain(task: Task, actions: ExecutorActions) -> int:
        return 1

    later = await engine.handler.send(ok, {"v": 1}, delay=timedelta(minutes=5))
    with pytest.raises(TimeoutError, match="scheduled"):
        await engine.handler.result(later.key, timeout=0)
    waiter = asyncio.ensure_future(engine.handler.result(later.key, timeout=600))
    await engine.clock.wait_for_sleepers(1)
    failing = await engine.handler.send(bad, {})
    large = await engine.handler.send(big, {})
    unkept = await engine.handler.send(plain, {})
    await engine.later(301)
    while not waiter.done():
        await tick(engine.clock, waiter, 1)
    assert await waiter == {"v": 1}, "a waiting result() returns once the task executed"
    await engine.later(60)
    with pytest.raises(TaskFailedError) as failed:
        await engine.handler.result(failing.key)
    assert failed.value.error == "no good on attempt 1" and failed.value.error_type == "ValueError"
    with pytest.raises(KeyError, match="not kept"):
        await engine.handler.result(large.key)
    with pytest.raises(KeyError, match="keep_result"):
        await engine.handler.result(unkept.key)
    with pytest.raises(KeyError):
        await engine.handler.result("no-such-task")
    await engine.clock.advance(11 * 60)
    with pytest.raises(KeyError, match="expired"):
        await engine.handler.result(later.key)


async def test_a_task_cancelled_before_it_runs_never_runs(engine: Engine) -> None:
    ran: list[str] = []

    @engine.registry.task("c", "later")
    async def later(task: Task, actions: ExecutorActions) -> None:
        ran.append(task.key)

    @engine.registry.task("c", "now", cancellable=True)
    async def now(task: Task, actions: ExecutorActions) -> None:
        ran.append(task.key)

    delayed = await engine.handler.send(later, {}, delay=timedelta(hours=1))
    streamed = await engine.handler.send(now, {})
    kept = await engine.handler.send(now, {})
    assert await engine.handler.cancel(delayed.key, reason="not needed")
    assert await engine.handler.cancel(streamed.key)
    await engine.later(3601)
    assert ran == [kept.key], "a cancelled task ran"
    row = await engine.handler.find(delayed.key)
    assert row is not None and row.status is TaskStatus.CANCELLED
    assert row.execution_stats.cancel_reason == "not needed"
    assert not await engine.handler.cancel(delayed.key), "cancelled twice"
    assert not await engine.handler.cancel(kept.key), "a finished task was cancelled"
    assert not await engine.handler.cancel("no-such-task")
    with pytest.raises(TaskCancelledError, match="not needed"):
        await engine.handler.result(delayed.key)
    assert (await engine.handler.find(kept.key)).status is TaskStatus.EXECUTED  # type: ignore[union-attr]


async def test_a_running_task_sees_its_cancel_and_whatever_it_reports_wins(engine: Engine) -> None:
    """Cancelled from another process (a second handler on the same store): the run learns of
    it within a poll, stops, and the task ends cancelled; one that goes on and succeeds ends
    executed, and one that fails after a cancel is not tried again."""
    steps: dict[str, int] = {}
    running: set[str] = set()

    @engine.registry.task("c", "long", cancellable=True, retries=2, parallel=True, chunk_size=3)
    async def long(task: Task, actions: ExecutorActions) -> str:
        if task.retry_count:
            return "ran again"
        mode = task.payload["mode"]
        running.add(task.key)
        try:
            return await work(task, actions, mode)
        finally:
            running.discard(task.key)

    async def work(task: Task, actions: ExecutorActions, mode: str) -> str:
        for step in range(100):
            steps[task.key] = step
            actions.progress(task, step / 100, f"step {step}")
            if actions.is_cancelled(task):
                if mode == "stop":
                    raise TaskCancelledError("stopped at a step boundary")
                if mode == "fail":
                    raise RuntimeError("failed after the cancel")
                return "finished anyway"
            await engine.clock.sleep(1)
        return "never cancelled"

    other = TaskHandler(queue=engine.handler.queue, registry=engine.registry, storage=engine.handler.storage,
                        locks=engine.handler.locks, clock=engine.clock)
    tasks = [await engine.handler.send(long, {"mode": m}, id=f"long-{m}", partition_key="one-batch")
             for m in ("stop", "go", "fail")]
    run = asyncio.ensure_future(engine.drain())
    while len(steps) < 3 or min(steps.values()) < 6:
        await tick(engine.clock, run, len(running) + 1)  # the runs and their cancel watcher asleep
    row = await engine.handler.find("long-stop")
    assert row is not None and row.progress is not None and 0 < row.progress.done < 0.1
    assert row.progress.note and row.progress.note.startswith("step")
    for task in tasks:
        assert await other.cancel(task.key, reason="user asked"), "a running task's cancel returned False"
    while not run.done():
        await tick(engine.clock, run, len(running) + 1)
    await run
    await engine.later(60)
    final = {t.key: await engine.handler.find(t.key) for t in tasks}
    assert {k: r.status for k, r in final.items() if r} == {
        "long-stop": TaskStatus.CANCELLED, "long-go": TaskStatus.EXECUTED, "long-fail": TaskStatus.CANCELLED}
    assert final["long-fail"].retry_count == 1, "the attempt after a cancel must not start"  # type: ignore[union-attr]
    assert max(steps.values()) < 20, "the runs did not see their cancel within a poll"


async def test_a_run_past_its_time_limit_fails_and_is_retried(engine: Engine) -> None:
    attempts: list[int] = []
    never = asyncio.Event()

    @engine.registry.task("t", "hangs", timeout=0.05, retries=1, keep_result=timedelta(hours=1))
    async def hangs(task: Task, actions: ExecutorActions) -> None:
        attempts.append(task.retry_count)
        await never.wait()

    task = await engine.handler.send(hangs, {})
    await engine.drain()
    await engine.later(60)
    assert attempts == [0, 1]
    with pytest.raises(TaskFailedError) as failed:
        await engine.handler.result(task.key)
    assert failed.value.error_type == "TaskTimeoutError" and "timeout of 0.05 s" in (failed.value.error or "")


async def test_cancel_flow_stops_its_pending_steps_once(engine: Engine) -> None:
    ran: list[str] = []

    @engine.registry.task("f", "start")
    async def start(task: Task, actions: ExecutorActions) -> str:
        return actions.start_flow([{"type": "step", "queue_id": "f", "payload": {"i": i}} for i in range(3)],
                                  FlowConfig(join=JoinTarget(type="join", queue_id="f")))

    @engine.registry.task("f", "step", cancellable=True)
    async def step(task: Task, actions: ExecutorActions) -> None:
        ran.append(task.key)

    @engine.registry.task("f", "join")
    async def join(task: Task, actions: ExecutorActions) -> None:
        ran.append("join")

    parent = Task(id="parent", type="start", queue_id="f", payload={}, created_at=engine.clock.now())
    runner = engine.handler.runner
    result = await runner.run("one", [parent])
    await engine.handler.post_process(result)
    [flow_id] = [f.flow_id for f in result.flows]
    assert await engine.handler.cancel_flow(flow_id)
    assert not await engine.handler.cancel_flow(flow_id), "a flow was cancelled twice"
    await engine.later(60)
    assert ran == [], "a step of a cancelled flow, or its join, ran"
    barriers = engine.handler.flows.barriers  # type: ignore[union-attr]
    snapshot = await barriers.get(flow_id)
    assert snapshot is not None and snapshot.state is BarrierState.CANCELLED


async def test_a_task_whose_limit_passes_the_invocations_time_is_handed_back(engine: Engine) -> None:
    @engine.registry.task("t", "slow", timeout=30, retries=3)
    async def slow(task: Task, actions: ExecutorActions) -> str:
        return "ran"

    task = Task(id="slow-1", type="slow", queue_id="t", payload={}, created_at=engine.clock.now())
    runner = engine.handler.runner
    result = await runner.run("lambda-1", [task], claim_ttl=timedelta(seconds=10), budget=timedelta(seconds=60))
    [outcome] = result.outcomes
    assert not outcome.succeeded and not outcome.consume_attempt and "handed back" in (outcome.error or "")
    result = await runner.run("lambda-2", [task], claim_ttl=timedelta(seconds=20), budget=timedelta(seconds=20))
    [outcome] = result.outcomes
    assert outcome.error_type == "TaskTimeoutError" and outcome.consume_attempt, "a limit no invocation meets loops"
    result = await runner.run("lambda-3", [task], claim_ttl=timedelta(seconds=60), budget=timedelta(seconds=60))
    assert [o.result for o in result.outcomes] == ["ran"]


def test_the_errors_come_from_the_package() -> None:
    import tq_cloud

    assert tq_cloud.TaskTimeoutError is TaskTimeoutError and issubclass(tq_cloud.ResultNotKeptError, KeyError)


@pytest.fixture
def memory_engine() -> Engine:
    registry, clock = TaskQueuesManager(), ManualClock()
    stack = InMemoryStack.create(registry, clock=clock)

    async def drain() -> None:
        for _ in range(20):
            if not await stack.process_ready() and not await stack.handler.process_mature_tasks():
                return

    return Engine(stack.handler, clock, registry, drain)


async def test_mutation_tasks_without_rows_cannot_be_cancelled(memory_engine: Engine,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The bug put back: a cancellable executor's tasks get no row (so no cancel can find them)."""
    from tq_cloud.core.executors import ExecutorOptions

    monkeypatch.setattr(ExecutorOptions, "has_row", property(lambda self: False))
    with pytest.raises(AssertionError):
        await test_a_task_cancelled_before_it_runs_never_runs(memory_engine)


async def test_mutation_cancelling_a_leased_row_is_caught(memory_engine: Engine,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The bug put back: cancel marks a row a live run holds as cancelled (a task that then
    succeeds would have run and be recorded cancelled)."""
    from tq_cloud.backends.memory import InMemoryAdapter
    from tq_cloud.ports.storage import CancelOutcome

    async def cancel(self: InMemoryAdapter, task_id: str, reason: str, now: Any, cancel_id: str = "") -> CancelOutcome:
        row = self._rows.get(task_id)
        if row is None or row.status.is_terminal:
            return CancelOutcome.UNKNOWN if row is None else CancelOutcome.FINISHED
        self._put(row, status=TaskStatus.CANCELLED, updated_at=now)
        return CancelOutcome.CANCELLED

    monkeypatch.setattr(InMemoryAdapter, "cancel", cancel)
    with pytest.raises(AssertionError):
        await test_a_running_task_sees_its_cancel_and_whatever_it_reports_wins(memory_engine)


async def test_mutation_an_attempt_after_a_cancel_that_starts_is_caught(memory_engine: Engine,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The bug put back: a cancel asked during a run is forgotten by the next attempt."""
    from tq_cloud.backends.memory import InMemoryAdapter

    original = InMemoryAdapter.get

    async def forgetful(self: InMemoryAdapter, ids: Any) -> list[Task]:
        rows = await original(self, ids)
        for row in rows:
            row.cancel_requested = None
        return rows

    monkeypatch.setattr(InMemoryAdapter, "get", forgetful)
    with pytest.raises(AssertionError, match="long-fail"):
        await test_a_running_task_sees_its_cancel_and_whatever_it_reports_wins(memory_engine)


async def test_a_task_cancelled_while_it_waits_in_its_batch_never_starts(engine: Engine) -> None:
    """Its run took the lease with the batch's; the cancel (from another process) comes while a
    task before it runs: it is read before the task would start, and the task ends cancelled."""
    started: list[str] = []

    @engine.registry.task("w", "one", cancellable=True)
    async def one(task: Task, actions: ExecutorActions) -> None:
        started.append(task.key)
        if task.payload["first"]:
            await engine.clock.sleep(3)

    other = TaskHandler(queue=engine.handler.queue, registry=engine.registry, storage=engine.handler.storage,
                        locks=engine.handler.locks, clock=engine.clock)
    await engine.handler.send(one, {"first": True}, id="first", partition_key="k")
    await engine.handler.send(one, {"first": False}, id="second", partition_key="k")
    run = asyncio.ensure_future(engine.drain())
    while not started:
        await tick(engine.clock, run, 1)
    assert await other.cancel("second", reason="changed my mind")
    while not run.done():
        await tick(engine.clock, run, 1)
    await run
    assert started == ["first"], "a task cancelled while it waited in its batch started"
    row = await engine.handler.find("second")
    assert row is not None and row.status is TaskStatus.CANCELLED
    assert row.execution_stats.cancel_reason == "changed my mind"


async def test_mutation_not_reading_cancels_before_a_start_is_caught(memory_engine: Engine,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from tq_cloud.core.control import RunControl

    async def never(self: RunControl, task: Task) -> None:
        return None

    monkeypatch.setattr(RunControl, "asked_before_start", never)
    with pytest.raises(AssertionError, match="waited in its batch"):
        await test_a_task_cancelled_while_it_waits_in_its_batch_never_starts(memory_engine)
