"""Seeded faults at every port call, and the invocation a call belongs to.

A call may fail before its effect (throttled, timed out) or after it (the write happened, the
response was lost); an invocation may die at one of its calls, before or after its effect
(`InvocationCrash`, a BaseException that no handler code can swallow). Once an
invocation crashed, every later call it makes fails without effect: a dead process writes
nothing, whatever its `finally` blocks try. A queue publish may also be partial (some records
written, the rest throttled), as PutRecords is.
Conditional writes on one flow's barrier that overlap in time cancel each other, as DynamoDB
transactions on one item do.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tq_cloud.domain.task import Task
from tq_cloud.errors import QueueWriteError, TransientError


class InvocationCrash(BaseException):
    """The invocation's process died here."""


class Throttled(TransientError):
    pass


class ResponseLost(TransientError):
    pass


class TransactionConflict(TransientError):
    pass


@dataclass(eq=False)
class Invocation:
    """One invocation: it dies at its `crash_at`-th port call, if it has that many."""

    name: str
    crashed: bool = False
    crash_at: int | None = None
    calls: int = 0


CURRENT: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar("tq_sim_invocation", default=None)


@dataclass
class FaultPlan:
    """`rate`: the probability that a port call fails (before or after its effect), and, with
    `crash_share` of it, that an invocation dies, at a port call drawn among its first 32."""

    rng: random.Random
    rate: float
    crash_share: float = 0.25
    counts: Counter[str] = field(default_factory=Counter)
    conflicts: int = 0
    on_fault: Callable[[str, str], None] | None = None

    def invocation(self, name: str) -> Invocation:
        crashes = self.rate > 0 and self.rng.random() < self.rate * self.crash_share
        return Invocation(name, crash_at=self.rng.randrange(1, 33) if crashes else None)

    def draw(self, where: str, writes: bool) -> str | None:
        """None, or the kind of fault for this call."""
        invocation = CURRENT.get()
        if invocation is not None and invocation.crash_at is not None:
            invocation.calls += 1
            if invocation.calls == invocation.crash_at:
                return self._count("crash_after" if writes and self.rng.random() < 0.5 else "crash_before", where)
        if self.rate <= 0 or self.rng.random() >= self.rate:
            return None
        roll = self.rng.random()
        if writes and roll < 0.5:
            return self._count("lost_after", where)
        return self._count("throttled" if roll < 0.75 else "timeout_before", where)

    def _count(self, kind: str, where: str) -> str:
        self.counts[kind] += 1
        if self.on_fault is not None:
            self.on_fault(kind, where)
        return kind


def check_alive() -> None:
    invocation = CURRENT.get()
    if invocation is not None and invocation.crashed:
        raise InvocationCrash(invocation.name)


def crash() -> None:
    invocation = CURRENT.get()
    assert invocation is not None
    invocation.crashed = True
    raise InvocationCrash(invocation.name)


READS = {"get", "get_step_results", "step_results_page", "step_counts", "next_due", "receive"}
TRANSACTIONS: set[str] = set()
"""Port methods that run as DynamoDB transactions, which DynamoDB cancels when another touches
the same item at once. None since the flow barrier counts steps in sets without transactions
(flows at scale); the model stays for any port method that takes one again."""


class Faulty:
    """A port whose async methods go through the fault plan. `yields` lets other coroutines run
    at a call (a seeded number of times), which is where interleavings differ between seeds."""

    def __init__(self, inner: Any, name: str, plan: FaultPlan, rng: random.Random) -> None:
        self._inner = inner
        self._name = name
        self._plan = plan
        self._rng = rng
        self._in_flight: Counter[str] = Counter()

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self._inner, attr)
        if not asyncio.iscoroutinefunction(target):
            return target
        writes = attr not in READS

        async def call(*args: Any, **kwargs: Any) -> Any:
            check_alive()
            where = f"{self._name}.{attr}"
            for _ in range(self._rng.randrange(3)):
                await asyncio.sleep(0)
            check_alive()
            kind = self._plan.draw(where, writes)
            if kind == "crash_before":
                crash()
            if kind in ("throttled", "timeout_before"):
                raise Throttled(f"{where}: {kind}")
            if attr in TRANSACTIONS:
                return await self._transaction(target, args, kwargs, kind, where)
            if attr == "publish" and kind is None and self._rng.random() < self._plan.rate:
                return await self._partial_publish(target, args[0])
            result = await target(*args, **kwargs)
            return self._after(kind, where, result)

        setattr(self, attr, call)
        return call

    def _after(self, kind: str | None, where: str, result: Any) -> Any:
        if kind == "crash_after":
            crash()
        if kind == "lost_after":
            raise ResponseLost(f"{where}: response lost after the effect")
        return result

    async def _transaction(self, target: Callable[..., Awaitable[Any]], args: Sequence[Any],
                           kwargs: dict[str, Any], kind: str | None, where: str) -> Any:
        item = str(args[0]) if args else ""
        if self._in_flight[item]:
            self._plan.conflicts += 1
            raise TransactionConflict(f"{where}: a concurrent transaction on {item}")
        self._in_flight[item] += 1
        try:
            await asyncio.sleep(0)
            result = await target(*args, **kwargs)
        finally:
            self._in_flight[item] -= 1
        return self._after(kind, where, result)

    async def _partial_publish(self, target: Callable[..., Awaitable[Any]], tasks: Sequence[Task]) -> Any:
        if len(tasks) < 2:
            return await target(tasks)
        refused = {t.key for t in tasks if self._rng.random() < 0.3}
        if not refused:
            return await target(tasks)
        self._plan.counts["partial_publish"] += 1
        try:
            await target([t for t in tasks if t.key not in refused])
        except QueueWriteError as exc:
            raise QueueWriteError("partial write", [*exc.task_ids, *sorted(refused)], exc.rejected) from exc
        raise QueueWriteError("partial write", sorted(refused))
