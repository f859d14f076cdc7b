"""Flow control (#27): concurrency and rate limits per key, fairness between keys, debounce and
ordered keys, in memory and on the AWS backends (moto, or dynalite with TQ_TEST_EMULATOR), each
shown to fail with its rule taken out. The simulator holds the same invariants under faults."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.conformance.test_task_control import Engine, engine  # noqa: F401 - the same two engines
from tq_cloud import Concurrency, Debounce, ExecutorActions, RateLimit, Task, TaskStatus
from tq_cloud.clock import ManualClock
from tq_cloud.errors import ConfigurationError
from tq_cloud.flow_control import state as flow_state
from tq_cloud.ports.storage import FlowState


async def run_for(engine: Engine, seconds: float, step: float = 0.5) -> None:  # noqa: F811
    for _ in range(int(seconds / step)):
        await engine.later(step)


class Running:
    """How many runs of each key are inside the executor at once, at most."""

    def __init__(self) -> None:
        self.now: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.runs = 0

    async def run(self, key: str) -> None:
        self.now[key] = self.now.get(key, 0) + 1
        self.runs += 1
        self.most[key] = max(self.most.get(key, 0), self.now[key])
        for _ in range(5):  # let the rest of the chunk start, if the gate let them
            await asyncio.sleep(0)
        self.now[key] -= 1


async def test_the_port_replaces_an_item_only_at_the_version_read(storage: Any, clock: ManualClock) -> None:
    now = clock.now()
    assert await storage.read_flow(["a"]) == {}
    assert await storage.write_flow("a", FlowState(0, {"x": 1}, {"h1": now}), now + timedelta(hours=1))
    assert not await storage.write_flow("a", FlowState(0, {"x": 2}), now), "a second creator must lose"
    [(scope, state)] = (await storage.read_flow(["a", "b"])).items()
    assert (scope, state.version, state.doc) == ("a", 1, {"x": 1})
    assert abs((state.slots["h1"] - now).total_seconds()) < 0.01
    await storage.free_slots("a", ["h1", "unknown"])
    assert not await storage.write_flow("a", state, now), "freeing moved the version on"
    state = (await storage.read_flow(["a"]))["a"]
    assert state.slots == {} and state.doc == {"x": 1}
    await storage.free_slots("never-written", ["h"])
    assert await storage.read_flow(["never-written"]) == {}


async def test_concurrency_holds_per_key_and_other_keys_go_on(engine: Engine) -> None:  # noqa: F811
    running = Running()

    @engine.registry.task("crm", "sync", parallel=True, chunk_size=10,
                          concurrency=Concurrency(2, key=lambda t: t.payload["tenant"]))
    async def sync(task: Task, actions: ExecutorActions) -> None:
        await running.run(task.payload["tenant"])

    await engine.handler.add_tasks([Task(queue_id="crm", type="sync", payload={"tenant": "a" if i < 8 else "b", "n": i})
                                    for i in range(10)])
    await engine.drain()
    await run_for(engine, 60, step=2)
    assert running.runs == 10 and max(running.most.values()) == 2, (running.runs, running.most)
    assert sum(running.now.values()) == 0


async def test_a_crashed_holders_slot_frees_at_its_deadline(engine: Engine) -> None:  # noqa: F811
    ran: list[datetime] = []

    @engine.registry.task("crm", "sync", concurrency=Concurrency(1))
    async def sync(task: Task, actions: ExecutorActions) -> None:
        ran.append(engine.clock.now())

    storage = engine.handler.storage
    dead_until = engine.clock.now() + timedelta(seconds=20)
    assert await storage.write_flow("concurrency\x1fcrm\x1fsync\x1f", FlowState(0, {}, {"dead@x": dead_until}),
                                    dead_until + timedelta(hours=1))
    start = engine.clock.now()
    await engine.handler.add_tasks([Task(queue_id="crm", type="sync", payload={})])
    await engine.drain()
    assert ran == [], "the crashed holder's slot is live until its deadline"
    await run_for(engine, 90, step=2)
    assert len(ran) == 1 and ran[0] >= dead_until and ran[0] - start < timedelta(seconds=60), (ran, dead_until)


def starts_in_any_window(starts: list[datetime], per: timedelta) -> int:
    starts = sorted(starts)
    return max((sum(1 for t in starts[i:] if t - s <= per) for i, s in enumerate(starts)), default=0)


async def test_rate_limit_holds_in_every_window_and_is_fair_to_a_small_key(engine: Engine) -> None:  # noqa: F811
    starts: dict[str, list[datetime]] = {"a": [], "b": []}
    per = timedelta(seconds=2)

    @engine.registry.task("mail", "send", parallel=True, chunk_size=20,
                          rate_limit=RateLimit(3, per=per, key=lambda t: t.payload["account"]))
    async def send(task: Task, actions: ExecutorActions) -> None:
        starts[task.payload["account"]].append(engine.clock.now())

    await engine.handler.add_tasks([Task(queue_id="mail", type="send", payload={"account": "a", "n": i})
                                    for i in range(15)])
    sent_b = engine.clock.now()
    await engine.handler.add_tasks([Task(queue_id="mail", type="send", payload={"account": "b", "n": i})
                                    for i in range(3)])
    await run_for(engine, 40, step=1)
    assert len(starts["a"]) == 15 and len(starts["b"]) == 3, {k: len(v) for k, v in starts.items()}
    assert starts_in_any_window(starts["a"], per) <= 3
    assert max(starts["b"]) - sent_b <= 2 * per, "B waited behind A's backlog"


async def test_with_the_rules_taken_out_the_limits_are_broken(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    original_slots, original_starts = flow_state.slots_step, flow_state.starts_step
    monkeypatch.setattr("tq_cloud.flow_control.gate.slots_step",
                        lambda limit, holders, now, until: original_slots(10**6, holders, now, until))
    monkeypatch.setattr("tq_cloud.flow_control.gate.starts_step",
                        lambda limit, per, count, now: original_starts(10**6, per, count, now))
    running, starts = Running(), []

    @engine.registry.task("crm", "sync", parallel=True, chunk_size=10, concurrency=Concurrency(2),
                          rate_limit=RateLimit(3, per=timedelta(seconds=2)))
    async def sync(task: Task, actions: ExecutorActions) -> None:
        starts.append(engine.clock.now())
        await running.run("")

    await engine.handler.add_tasks([Task(queue_id="crm", type="sync", payload={"n": i}) for i in range(10)])
    await engine.drain()
    assert running.most[""] > 2 and starts_in_any_window(starts, timedelta(seconds=2)) > 3


async def test_debounce_runs_only_the_last_of_a_burst_after_its_quiet_window(engine: Engine) -> None:  # noqa: F811
    ran: list[tuple[int, datetime]] = []

    @engine.registry.task("search", "reindex", debounce=Debounce(timedelta(seconds=10), key=lambda t: t.payload["doc"]))
    async def reindex(task: Task, actions: ExecutorActions) -> None:
        ran.append((task.payload["n"], engine.clock.now()))

    first = []
    for n in range(5):
        first.append(await engine.handler.send(reindex, {"doc": "d1", "n": n}))
        await engine.later(3)
    last_sent = engine.clock.now() - timedelta(seconds=3)
    await run_for(engine, 30, step=1)
    assert [n for n, _ in ran] == [4], ran
    assert ran[0][1] - last_sent >= timedelta(seconds=10), "it ran before its quiet window ended"
    [row] = await engine.handler.storage.get([first[0].key]) or [None]
    assert row is None or row.status in (TaskStatus.CANCELLED,)
    await engine.handler.send(reindex, {"doc": "d1", "n": 5})
    await run_for(engine, 15, step=1)
    assert [n for n, _ in ran] == [4, 5], "a burst after a quiet window runs again"


async def test_debounce_max_wait_bounds_a_burst_that_never_goes_quiet(engine: Engine) -> None:  # noqa: F811
    ran: list[tuple[int, datetime]] = []

    @engine.registry.task("search", "reindex", debounce=Debounce(
        timedelta(seconds=5), key=lambda t: t.payload["doc"], max_wait=timedelta(seconds=12)))
    async def reindex(task: Task, actions: ExecutorActions) -> None:
        ran.append((task.payload["n"], engine.clock.now()))

    start = engine.clock.now()
    for n in range(30):
        await engine.handler.send(reindex, {"doc": "d", "n": n})
        await engine.later(1)
    await run_for(engine, 20, step=1)
    assert ran and ran[0][1] - start <= timedelta(seconds=13), ran
    assert ran[-1][0] == 29, "the burst's last payload must run"
    assert len(ran) <= 4, ran


async def test_ordered_keys_wait_behind_a_failure_and_other_keys_go_on(engine: Engine) -> None:  # noqa: F811
    ran: list[tuple[str, int]] = []
    failed: set[int] = set()

    @engine.registry.task("ledger", "post", ordered=True, retries=3,
                          partition_key=lambda t: t.payload["account"])
    async def post(task: Task, actions: ExecutorActions) -> None:
        ran.append((task.payload["account"], task.payload["n"]))
        if task.payload["n"] in (1, 3) and task.payload["n"] not in failed:
            failed.add(task.payload["n"])
            raise RuntimeError("the bank said try again")

    await engine.handler.add_tasks([Task(queue_id="ledger", type="post", payload={"account": "x", "n": n})
                                    for n in range(6)] + [Task(queue_id="ledger", type="post",
                                                               payload={"account": "y", "n": 10})])
    await engine.drain()
    await engine.handler.add_tasks([Task(queue_id="ledger", type="post", payload={"account": "x", "n": 6})])
    await run_for(engine, 120, step=2)
    order = [n for account, n in ran if account == "x"]
    assert order == [0, 1, 1, 2, 3, 3, 4, 5, 6], order
    assert ("y", 10) in ran[:3], "another key waited for the failing one"


def test_bad_options_are_refused_when_the_executor_is_built() -> None:
    from tq_cloud.core.executors import BatchTaskExecutor, ExecutorOptions
    from tq_cloud.core.registry import TaskQueuesManager

    app = TaskQueuesManager()

    async def fn(task: Task, actions: ExecutorActions) -> None: ...

    async def batch(tasks: list[Task], actions: ExecutorActions) -> None: ...

    for bad in (lambda: Concurrency(0), lambda: Concurrency(2, key="tenant"),  # type: ignore[arg-type]
                lambda: RateLimit(5, per=timedelta(0)), lambda: RateLimit(0, per=timedelta(seconds=1)),
                lambda: Debounce(timedelta(0), key=str),  # type: ignore[arg-type]
                lambda: Debounce(timedelta(seconds=5), key=str, max_wait=timedelta(seconds=1)),  # type: ignore[arg-type]
                lambda: BatchTaskExecutor(fn=batch, options=ExecutorOptions(ordered=True)),
                lambda: app.task("q", "h", handoff_timeout=5, concurrency=Concurrency(1))(fn),
                lambda: app.task("q", "c", concurrency=3)(fn)):  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError):
            bad()


async def test_a_key_function_that_fails_fails_only_its_task(engine: Engine) -> None:  # noqa: F811
    ran: list[Any] = []

    @engine.registry.task("crm", "sync", store_on_failure=True,
                          concurrency=Concurrency(1, key=lambda t: t.payload["tenant"]))
    async def sync(task: Task, actions: ExecutorActions) -> None:
        ran.append(task.payload)

    [bad, _] = await engine.handler.add_tasks([Task(queue_id="crm", type="sync", payload={}),
                                                  Task(queue_id="crm", type="sync", payload={"tenant": "t"})])
    await engine.drain()
    assert ran == [{"tenant": "t"}]
    [row] = await engine.handler.storage.get([bad.key])
    assert row.status == TaskStatus.FAILED and "concurrency key function raised" in (row.execution_stats.last_error or "")


async def test_executors_without_limits_never_touch_flow_state(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    @engine.registry.task("q", "plain", parallel=True, chunk_size=5)
    async def plain(task: Task, actions: ExecutorActions) -> None:
        return None

    storage = type(getattr(engine.handler.storage, "_inner", engine.handler.storage))

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("flow state touched by an executor without limits")

    for name in ("read_flow", "write_flow", "free_slots"):
        monkeypatch.setattr(storage, name, refuse)
    await engine.handler.add_tasks([Task(queue_id="q", type="plain", payload={}) for _ in range(12)])
    await engine.drain()


async def test_with_debounce_and_order_taken_out_their_checks_fail(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    async def everyone(self: Any, executor: Any, pairs: Any, recorder: Any) -> Any:
        return pairs

    async def in_turn(self: Any, pairs: Any, recorder: Any, run_unit: Any, width: int, in_batch: Any = ()) -> None:
        for pair in pairs:
            await run_unit([pair])

    monkeypatch.setattr("tq_cloud.flow_control.gate.FlowGate.screen", everyone)
    monkeypatch.setattr("tq_cloud.flow_control.gate.FlowGate.run_ordered", in_turn)
    debounced: list[int] = []
    ordered: list[int] = []
    failed: set[int] = set()

    @engine.registry.task("search", "reindex", debounce=Debounce(timedelta(seconds=10), key=lambda t: "d"))
    async def reindex(task: Task, actions: ExecutorActions) -> None:
        debounced.append(task.payload["n"])

    @engine.registry.task("ledger", "post", ordered=True, retries=3, partition_key=lambda t: "x")
    async def post(task: Task, actions: ExecutorActions) -> None:
        ordered.append(task.payload["n"])
        if task.payload["n"] == 1 and not failed:
            failed.add(1)
            raise RuntimeError("try again")

    for n in range(3):
        await engine.handler.send(reindex, {"n": n})
    await engine.handler.add_tasks([Task(queue_id="ledger", type="post", payload={"n": n}) for n in range(4)])
    await run_for(engine, 30, step=3)
    assert len(debounced) > 1, debounced  # superseded tasks ran
    assert ordered[:3] == [0, 1, 2], ordered  # 2 ran while 1 waited for its retry


async def test_status_shows_the_keys_waiting_on_a_limit(engine: Engine) -> None:  # noqa: F811
    from tq_cloud.operations import Operations

    @engine.registry.task("crm", "sync", concurrency=Concurrency(1, key=lambda t: t.payload["tenant"]),
                          parallel=True, chunk_size=10)
    async def sync(task: Task, actions: ExecutorActions) -> None:
        return None

    @engine.registry.task("crm", "plain")
    async def plain(task: Task, actions: ExecutorActions) -> None:
        return None

    ops = Operations(engine.handler, None, None)
    assert await ops.waiting_on_limits() == []
    await engine.handler.add_tasks([Task(queue_id="crm", type="sync", payload={"tenant": "big"}) for _ in range(6)]
                                   + [Task(queue_id="crm", type="sync", payload={"tenant": "small"})])
    await engine.drain()
    rows = await ops.waiting_on_limits()
    assert rows and rows[0]["key"] == "big" and rows[0]["waiting"] >= 1 and rows[0]["type"] == "sync", rows
    assert all(r["key"] != "small" for r in rows)


async def test_a_limited_task_costs_one_read_and_one_write_on_the_happy_path(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    calls: dict[str, int] = {"read_flow": 0, "write_flow": 0, "free_slots": 0}
    storage = type(getattr(engine.handler.storage, "_inner", engine.handler.storage))
    for name in calls:
        original = getattr(storage, name)

        def counting(original: Any = original, name: str = name) -> Any:
            async def call(self: Any, *args: Any) -> Any:
                calls[name] += 1
                return await original(self, *args)
            return call

        monkeypatch.setattr(storage, name, counting())

    @engine.registry.task("mail", "send", rate_limit=RateLimit(100, per=timedelta(seconds=1)))
    async def send(task: Task, actions: ExecutorActions) -> None:
        return None

    @engine.registry.task("crm", "sync", concurrency=Concurrency(100))
    async def sync(task: Task, actions: ExecutorActions) -> None:
        return None

    await engine.handler.add_tasks([Task(queue_id="mail", type="send", payload={}) for _ in range(5)])
    await engine.drain()
    assert calls == {"read_flow": 5, "write_flow": 5, "free_slots": 0}, calls
    await engine.handler.add_tasks([Task(queue_id="crm", type="sync", payload={}) for _ in range(5)])
    await engine.drain()
    assert calls == {"read_flow": 10, "write_flow": 10, "free_slots": 5}, calls


async def first_held_by_another_run(engine: Engine) -> list[int]:  # noqa: F811
    """Three tasks of one ordered key, the first claimed by another invocation: what ran."""
    ran: list[int] = []

    @engine.registry.task("ledger", "post", ordered=True, partition_key=lambda t: "acct")
    async def post(task: Task, actions: ExecutorActions) -> None:
        ran.append(task.payload["n"])

    await engine.handler.runner.locks.acquire(["post-0"], "another-invocation", timedelta(seconds=20))
    await engine.handler.add_tasks([Task(id=f"post-{n}", queue_id="ledger", type="post", payload={"n": n})
                                    for n in range(3)])
    await engine.drain()
    return ran


async def test_an_ordered_task_another_run_holds_keeps_its_turn(engine: Engine) -> None:  # noqa: F811
    ran = await first_held_by_another_run(engine)
    assert ran == [], "a later task of the key ran while another run held the first"
    await run_for(engine, 120, step=5)
    assert ran == [0, 1, 2], ran


async def test_mutation_ignoring_tasks_deferred_before_the_gate_breaks_the_order(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    from tq_cloud.flow_control.gate import FlowGate

    original = FlowGate.run_ordered

    async def forgetful(self: FlowGate, pairs: Any, recorder: Any, run_unit: Any, width: int, in_batch: Any = ()) -> None:
        await original(self, pairs, recorder, run_unit, width)

    monkeypatch.setattr(FlowGate, "run_ordered", forgetful)
    ran = await first_held_by_another_run(engine)
    assert ran[:1] == [1], ran
