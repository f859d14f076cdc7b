"""The simulated application and its seeded workload.

Every task carries its plan in its payload (`{"k": kind, ...}`), so the checker knows, for any
task it sees (roots, children, flow steps, joins, records of other producers), the final state
the design implies: `expected(task)`. Executors are deterministic in (plan, attempt).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from tq_cloud.core.actions import ExecutorActions
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.domain.flow_control import Concurrency, Debounce, RateLimit
from tq_cloud.domain.flows import FLOW_RETIRE_TYPE, FLOW_TIMEOUT_TYPE, FlowConfig
from tq_cloud.domain.outcomes import Verdict
from tq_cloud.domain.schedules import SCHEDULE_FIRE_TYPE
from tq_cloud.domain.task import EntityRef, JoinTarget, Task
from tq_cloud.errors import TaskCancelledError, TaskRejectedError
from tq_cloud.simulation.checks import Seen, Tracker
from tq_cloud.simulation.flow_checks import FC_LIMIT, FC_PER, FC_RATE

Q = "sim"
KB = 1024
STORED_TYPES = {"seq_s", "slow", "join", "cx"}
RETRIES = {"seq": 2, "seq_s": 2, "par": 2, "bulk": 1, "slow": 1, "step": 1, "join": 2, "typed": 0, "cx": 1,
           "tick": 0, "limited": 1, "fc": 1, "ord": 2, "deb": 0}
LIMIT = 100.0
"""The `limited` executor's time limit: its `hang` tasks outlive it on their first attempt (two in
one batch leave a third too little of the invocation's 300 s: it is handed back)."""
DEB_WINDOW = 30.0
FLOW_CONTROLLED = frozenset({"fc", "ord", "deb"})
CX = (Q, "cx")
"""The cancellable executor: its tasks are sent through `handler.send`, and some cancelled."""


class Typed(BaseModel):
    n: int


def build_app(tracker: Tracker) -> TaskQueuesManager:
    app = TaskQueuesManager()

    async def perform(task: Task, actions: ExecutorActions) -> None:
        tracker.ran(task)
        await _perform(task, actions)

    async def bulk(tasks: list[Task], actions: ExecutorActions) -> None:
        for task in tasks:
            tracker.ran(task)
        for task in tasks:
            await _perform(task, actions)

    async def join(task: Task, actions: ExecutorActions) -> None:
        tracker.ran(task)
        reader = actions.flow_results(task)
        steps = [(s.step_index, s.status, s.result) async for s in reader.steps()]
        tracker.joined(task, reader.summary, steps)
        actions.success(task, {"steps": len(steps)})

    app.task(Q, "seq", retries=RETRIES["seq"])(perform)
    app.task(Q, "seq_s", retries=RETRIES["seq_s"], store_on_failure=True)(perform)
    app.task(Q, "par", retries=RETRIES["par"], parallel=True, chunk_size=4,
             partition_key=lambda t: t.payload.get("tenant"))(perform)
    app.batch_task(Q, "bulk", retries=RETRIES["bulk"])(bulk)
    app.task(Q, "slow", retries=RETRIES["slow"], store_on_failure=True, handoff_timeout=10.0)(perform)
    app.task(Q, "step", retries=RETRIES["step"])(perform)
    app.task(Q, "typed", payload_model=Typed)(perform)
    app.task(Q, "join", retries=RETRIES["join"], store_on_failure=True)(join)

    @app.task(Q, "cx", retries=RETRIES["cx"], cancellable=True, keep_result=timedelta(hours=1), parallel=True,
              chunk_size=10)
    async def cancellable(task: Task, actions: ExecutorActions) -> dict[str, Any]:
        """Works for `d` seconds, a second at a time; on a cancel it stops (`stop`) or finishes."""
        tracker.ran(task)
        tracker.cx_started(task)
        try:
            for second in range(int(task.payload["d"])):
                if actions.is_cancelled(task):
                    if task.payload["stop"]:
                        raise TaskCancelledError("stopped on a cancel")
                    break
                actions.progress(task, second / task.payload["d"])
                await asyncio.sleep(1.0)
            return {"v": "done"}
        finally:
            tracker.cx_running.discard(task.key)

    @app.task(Q, "limited", retries=RETRIES["limited"], timeout=LIMIT)
    async def limited(task: Task, actions: ExecutorActions) -> dict[str, int]:
        tracker.ran(task)
        started = tracker.now()
        try:
            if task.payload.get("k") == "hang" and task.retry_count == 0:
                await asyncio.sleep(LIMIT * 3)
            return {"v": 1}
        finally:
            tracker.limited_ended(task, tracker.now() - started, LIMIT)

    @app.task(Q, "tick")
    async def tick(task: Task, actions: ExecutorActions) -> None:
        """An occurrence of a schedule; the `slow` schedule's take up to 3 minutes (they overlap)."""
        tracker.ran(task)
        tracker.occurrence_ran(task)
        if task.payload.get("slow"):
            meta = task.metadata.schedule
            await asyncio.sleep((meta.scheduled_at.minute * 37 % 180) if meta else 0)

    @app.task(Q, "fc", retries=RETRIES["fc"], parallel=True, chunk_size=8,
              concurrency=Concurrency(FC_LIMIT, key=lambda t: t.payload["tenant"]),
              rate_limit=RateLimit(FC_RATE, per=timedelta(seconds=FC_PER), key=lambda t: t.payload["tenant"]))
    async def limited_per_tenant(task: Task, actions: ExecutorActions) -> None:
        """Calls a tenant's rate-limited API for `d` seconds."""
        tracker.ran(task)
        tracker.flow.fc_started(tracker, task)
        try:
            await asyncio.sleep(task.payload["d"])
        finally:
            tracker.flow.fc_ended(task)

    @app.task(Q, "ord", retries=RETRIES["ord"], ordered=True, partition_key=lambda t: t.payload["key"])
    async def ordered(task: Task, actions: ExecutorActions) -> None:
        """Posts to a ledger in order; its first `f` attempts fail (at most its retries)."""
        tracker.ran(task)
        tracker.flow.ord_started(tracker, task)
        if task.retry_count < task.payload["f"]:
            raise RuntimeError(f"ledger busy {task.retry_count}")
        tracker.flow.ord_ended(task)

    @app.task(Q, "deb", debounce=Debounce(timedelta(seconds=DEB_WINDOW), key=lambda t: t.payload["key"]))
    async def debounced(task: Task, actions: ExecutorActions) -> None:
        tracker.ran(task)
        tracker.flow.deb_ran(tracker, task)

    app.schedule("every-minute", task=tick, every=timedelta(minutes=1))
    app.schedule("paris", task=tick, cron="*/7 * * * *", timezone="Europe/Paris")  # across the DST change
    app.schedule("overlapping", task=tick, every=timedelta(minutes=2), payload={"slow": True}, overlap="skip")
    return app


async def _perform(task: Task, actions: ExecutorActions) -> None:
    plan: dict[str, Any] = task.payload if isinstance(task.payload, dict) else {"k": "ok"}
    kind, attempt = plan.get("k", "ok"), task.retry_count
    if kind == "ok":
        actions.success(task, {"v": plan.get("v", 0)})
    elif kind == "flaky":
        actions.fail(task, f"flaky {attempt}") if attempt < plan["f"] else actions.success(task, {"v": 1})
    elif kind == "doomed":
        actions.fail(task, "doomed")
    elif kind == "final":
        actions.fail(task, "refused for good", retry=False)
    elif kind == "bigresult":
        actions.success(task, "r" * (300 * KB))
    elif kind == "hugeerror":
        raise RuntimeError("e" * (450 * KB))
    elif kind == "badmeta":
        actions.fail(task, "odd details", {"when": object()})
    elif kind == "badchild":
        try:
            actions.add_tasks([Task(type="typed", queue_id=Q, payload={"n": "not a number"})])
        except TaskRejectedError:
            actions.success(task, {"v": "refused child"})
    elif kind == "parent":
        actions.add_tasks([Task(type="seq", queue_id=Q, payload={"k": "ok", "v": i}) for i in range(plan["n"])])
        actions.success(task)
    elif kind == "flow":
        steps = [{"type": s.pop("t", "step"), "queue_id": Q, "on_failure": s.pop("o", None), "payload": s}
                 for s in flow_steps(plan)]
        actions.start_flow(steps, FlowConfig(join=JoinTarget(type="join", queue_id=Q), failure_policy=plan["p"],
                                             timeout_ms=plan.get("timeout"),
                                             entity=EntityRef(type="order", id=task.key) if plan.get("e") else None))
        actions.success(task)
    elif kind == "slow":
        await asyncio.sleep(plan["d"])
        actions.add_tasks([Task(type="seq", queue_id=Q, payload={"k": "ok", "v": "after slow"})])
        actions.success(task, {"v": "late"})
    else:
        actions.fail(task, f"unknown plan {kind!r}", retry=False)


def expected(task: Task, *, lane: bool) -> Verdict:
    """The final verdict a task's plan implies (`lane`: retries of tasks without a row wait in
    the delay lane, not in the store)."""
    if task.type in (FLOW_TIMEOUT_TYPE, FLOW_RETIRE_TYPE, SCHEDULE_FIRE_TYPE, "join"):
        return Verdict.EXECUTED
    if task.type not in RETRIES:
        return Verdict.IGNORED
    plan = task.payload if isinstance(task.payload, dict) else {}
    if task.type in FLOW_CONTROLLED:  # limits only make them wait; a superseded debounced task is cancelled
        return Verdict.CANCELLED if task.type == "deb" and not plan.get("last") else Verdict.EXECUTED
    kind = plan.get("k", "ok")
    retries = task.retries if task.retries is not None else RETRIES[task.type]
    failing = kind in ("doomed", "final", "hugeerror", "badmeta") or (kind == "flaky" and plan["f"] > retries)
    if not failing:
        return Verdict.EXECUTED
    if kind == "final":  # failed for good by the executor: always stored
        return Verdict.FAILED
    retried = kind != "final" and retries > 0 and not lane  # a retry on Kinesis alone waits in the store
    return Verdict.FAILED if task.force_store or task.type in STORED_TYPES or retried else Verdict.DISCARDED


def describe(task: Task, *, lane: bool) -> Seen:
    """What the checker keeps of a task: its expected verdict, a label, whether it has a row
    and a projection."""
    kind = task.payload.get("k") if isinstance(task.payload, dict) else None
    meta = task.flow_meta
    return Seen(want=expected(task, lane=lane), label=sys.intern(f"{task.type}, {kind}"),
                has_row=task.force_store and task.type != FLOW_TIMEOUT_TYPE,  # sentinels live in the timer
                kept=task.type in STORED_TYPES,
                bound=task.entity is not None and task.force_store,
                step=meta is not None and meta.step_index >= 0)


@dataclass
class Workload:
    """Roots to add (in waves) and raw records of other producers to put on the stream."""

    roots: list[tuple[Task, float]] = field(default_factory=list)
    """Each root with its delay in seconds (due at add time + delay)."""
    raw: list[tuple[bytes, str]] = field(default_factory=list)
    rejected_at_add: list[Task] = field(default_factory=list)
    sends: list[Send] = field(default_factory=list)
    """Tasks sent through `handler.send` (with when to cancel, for some)."""
    expected_tasks: int = 0


@dataclass(frozen=True, slots=True)
class Send:
    id: str
    executor: tuple[str, str]
    payload: dict[str, Any]
    delay: float
    cancel_after: float | None = None
    """Seconds after it is sent that it is cancelled (before, while or after it runs), if it is."""
    dedup_key: str | None = None


def generate(rng: random.Random, tasks: int, max_flow_steps: int, edge_inputs: bool,
             new_id: Callable[[], str], waves: int = 300) -> Iterator[Workload]:
    """The workload in about `waves` waves, made as they are needed (a million tasks are never
    all in memory at once)."""
    per_wave, done = max(1, tasks // waves), 0
    max_flow_steps = min(max_flow_steps, max(1, tasks // 4))  # one flow never is the whole run
    work = Workload()
    while done + work.expected_tasks < tasks:
        if work.expected_tasks >= per_wave:
            done += work.expected_tasks
            yield work
            work = Workload()
        roll = rng.random()
        retries_type = rng.choice(["seq", "seq", "par", "bulk", "seq_s"])
        payload: dict[str, Any] = {"k": "ok", "v": rng.randrange(1000)}
        extra: dict[str, Any] = {}
        count = 1
        if roll < 0.03:  # sent through handler.send: cancellable, some of them cancelled
            delay = rng.choice([0.0, rng.uniform(1, 300)])
            d = rng.uniform(1, 20)
            work.sends.append(Send(new_id(), CX, {"k": "cx", "d": d, "stop": rng.random() < 0.5}, delay,
                                   rng.uniform(0, delay + d + 30) if rng.random() < 0.5 else None))
            work.expected_tasks += 1
            continue
        if roll < 0.04:
            work.sends.append(Send(new_id(), (Q, "seq"), {"k": "ok", "v": rng.randrange(1000)}, 0.0))
            work.expected_tasks += 1
            continue
        if roll < 0.05:  # the same webhook, two or three times: one task runs
            key = f"hook-{rng.getrandbits(32):08x}"
            work.sends += [Send(new_id(), (Q, "seq"), {"k": "ok", "v": n}, 0.0, dedup_key=key)
                           for n in range(rng.randrange(2, 4))]
            work.expected_tasks += 1
            continue
        if roll < 0.06:  # a time limit: `hang` runs are stopped at it, then retried
            work.roots.append((Task(id=new_id(), type="limited", queue_id=Q,
                                    payload={"k": rng.choice(["ok", "hang"])}), 0.0))
            work.expected_tasks += 1
            continue
        if roll < 0.085:
            batch = _flow_controlled(rng, roll, new_id)
            work.roots += batch
            work.expected_tasks += len(batch)
            continue
        if roll < 0.45:
            pass
        elif roll < 0.55:
            payload = {"k": "flaky", "f": rng.randrange(1, 4)}
            if rng.random() < 0.3:  # retried at once: the retry lands in the stream beside its attempt
                extra = {"force_store": True, "retry_after": 0}
        elif roll < 0.60:
            payload = {"k": rng.choice(["doomed", "final"])}
        elif roll < 0.65:
            extra = {"execute_at_s": rng.uniform(1, 600)}
        elif roll < 0.70:
            extra = {"force_store": True}
            if rng.random() < 0.5:
                extra["entity"] = EntityRef(type="thing", id=f"e{rng.randrange(50)}")
        elif roll < 0.76:
            n = rng.randrange(1, 8)
            payload, count = {"k": "parent", "n": n}, n + 1
        elif roll < 0.80:
            retries_type = "slow"
            payload = {"k": "slow", "d": rng.uniform(10.5, 19.5)}  # handed off; within its 20 s limit
            count = 2
            extra = {"force_store": rng.random() < 0.5}  # its late commit then writes
        elif roll < 0.85 or not edge_inputs:
            n = max(1, min(max_flow_steps, int(rng.paretovariate(1.2)) if rng.random() < 0.99 else max_flow_steps))
            payload = {"k": "flow", "n": n, "seed": rng.getrandbits(32), "p": rng.choice(["continue", "abort"]),
                       "e": rng.random() < 0.3}
            if rng.random() < 0.3:
                payload["timeout"] = rng.choice([rng.randrange(200, 3_000), rng.randrange(5_000, 120_000)])
            retries_type, count = "seq", n + 2
        else:
            _edge(rng, work, new_id)
            continue
        if retries_type == "par":
            payload["tenant"] = f"t{rng.randrange(20)}"
        delay = extra.pop("execute_at_s", 0.0)
        work.roots.append((Task(id=new_id(), type=retries_type, queue_id=Q, payload=payload, **extra), delay))
        work.expected_tasks += count
    yield work


def _flow_controlled(rng: random.Random, roll: float, new_id: Callable[[], str]) -> list[tuple[Task, float]]:
    """A tenant's calls under its limits, an ordered key's postings (some failing first), or
    a debounced burst (sent in one call: its last one runs)."""
    if roll < 0.07:
        tenant = f"ft{rng.randrange(4)}"
        return [(_task("fc", {"k": "fc", "tenant": tenant, "d": rng.uniform(0.5, 15)}, new_id()), 0.0)
                for _ in range(rng.randrange(1, 7))]
    if roll < 0.08:
        key = f"o-{rng.getrandbits(40):010x}"
        return [(_task("ord", {"k": "ord", "key": key, "n": n, "f": rng.choice([0, 0, 0, 1, 2])}, new_id()), 0.0)
                for n in range(rng.randrange(2, 6))]
    key, count = f"d-{rng.getrandbits(40):010x}", rng.randrange(1, 4)
    return [(_task("deb", {"k": "deb", "key": key, "n": n, "last": n == count - 1}, new_id()), 0.0)
            for n in range(count)]


def generate_delays(rng: random.Random, tasks: int, new_id: Callable[[], str], waves: int = 300
                    ) -> Iterator[Workload]:
    """Tasks that wait: four in five due 1 s to 15 minutes after they are added (log-uniform),
    one in five failing once and retried after a back-off of 1 to 60 s (the lateness benchmark)."""
    per_wave = max(1, tasks // waves)
    for start in range(0, tasks, per_wave):
        work = Workload()
        for _ in range(min(per_wave, tasks - start)):
            if rng.random() < 0.8:
                work.roots.append((Task(id=new_id(), type="seq", queue_id=Q, payload={"k": "ok"}),
                                   math.exp(rng.uniform(0.0, math.log(900.0)))))
            else:
                work.roots.append((Task(id=new_id(), type="seq", queue_id=Q, payload={"k": "flaky", "f": 1},
                                        retry_after=rng.randrange(1000, 60_000)), 0.0))
            work.expected_tasks += 1
        yield work


def flow_steps(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """A flow's step plans, from its seed (so the root's payload stays small)."""
    rng = random.Random(plan["seed"])
    return [_step(rng, plan.get("depth", 0)) for _ in range(plan["n"])]


def _step(rng: random.Random, depth: int) -> dict[str, Any]:
    """A step's plan; one in ten has a failure policy of its own (`o`)."""
    step = _step_kind(rng, depth)
    if rng.random() < 0.1:
        step["o"] = rng.choice(["abort", "continue", "ignore"])
    return step


def _step_kind(rng: random.Random, depth: int) -> dict[str, Any]:
    roll = rng.random()
    if depth < 2 and roll < 0.01:  # a step that starts a flow of its own
        return {"k": "flow", "n": rng.randrange(1, 6), "seed": rng.getrandbits(32), "depth": depth + 1,
                "p": rng.choice(["continue", "abort"]), "e": False}
    if roll < 0.8:
        return {"k": "ok", "v": rng.randrange(100)}
    if roll < 0.9:
        return {"k": "flaky", "f": rng.randrange(1, 3)}
    if roll < 0.97:
        return {"k": "doomed"}
    return {"k": "ok", "t": "no-such-type"}


def _task(type_: str, payload: dict[str, Any], task_id: str, **extra: Any) -> Task:
    return Task(id=task_id, type=type_, queue_id=Q, payload=payload, **extra)


def _edge(rng: random.Random, work: Workload, new_id: Callable[[], str]) -> None:
    kind = rng.choice(["bigresult", "hugeerror", "badmeta", "badchild", "unknown", "oversize", "foreign",
                       "foreign_empty", "foreign_long", "garbage", "typed_bad", "long_id"])
    work.expected_tasks += kind not in ("oversize", "typed_bad", "long_id")  # those never run
    if kind in ("bigresult", "hugeerror", "badmeta", "badchild"):
        work.roots.append((_task("seq_s", {"k": kind}, new_id(), force_store=kind == "bigresult"), 0.0))
    elif kind == "unknown":
        work.roots.append((_task("no-executor", {"k": "ok"}, new_id()), 0.0))
    elif kind == "oversize":
        work.rejected_at_add.append(_task("seq", {"k": "ok", "pad": "x" * (1100 * KB)}, new_id()))
    elif kind == "typed_bad":
        work.rejected_at_add.append(_task("typed", {"n": "secret"}, new_id()))
    elif kind == "long_id":
        work.rejected_at_add.append(_task("seq", {"k": "ok"}, "i" * 300))
    elif kind == "garbage":
        work.raw.append((b"\x00\x01 not a task", new_id()))
    else:
        body: dict[str, Any] = {"type": "seq", "queue_id": Q, "payload": {"k": "ok"}}
        if kind == "foreign_empty":
            body["id"] = ""
        elif kind == "foreign_long":
            body["id"] = "L" * 400
        work.raw.append((json.dumps(body).encode(), new_id()))
