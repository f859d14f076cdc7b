"""Where the runner meets flow control: which of a batch's tasks may start now.

- `screen`, once per executor group: debounced tasks that a later one superseded end
  cancelled (naming it); the latest is marked started.
- `admit`, around each start (a task, a parallel chunk, a batch call): concurrency slots
  and rate-window starts per key; the rest wait, deferred with jittered back-off (using no
  attempt). Slots are freed when the start's runs end, or at their deadline if the holder dies.
- `run_ordered`: ordered keys, one task at a time per key, stopping at the first failure.

Executors without these options never reach the store here: they pay nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta

from tq_cloud.clock import Clock
from tq_cloud.core.actions import RunRecorder
from tq_cloud.core.admission import Pair, RunUnit
from tq_cloud.core.executors import Executor
from tq_cloud.core.retry import retry_delay_ms
from tq_cloud.domain.flow_control import Concurrency, RateLimit, key_of
from tq_cloud.domain.outcomes import Outcome
from tq_cloud.domain.task import Task
from tq_cloud.flow_control.ordered import KeyTurn, settle_step
from tq_cloud.flow_control.state import KEEP, change, debounce_start_step, scope, slots_step, starts_step
from tq_cloud.flow_control.waiting import WaitingBoard
from tq_cloud.ports.storage import TaskStorage

log = logging.getLogger("tq_cloud.flow_control")

MaxRetries = Callable[[Task], int]
MAX_BACKOFF = 30.0
SLOT_MARGIN = timedelta(seconds=5)
"""A slot outlives its run's deadline by this much: the free write comes after the run."""


def jitter(task: Task) -> float:
    """A fraction in [0, 1) that differs between tasks and between a task's deferrals, with no
    random state (SnapStart clones a seeded generator into every container)."""
    seed = f"{task.key}:{task.execution_stats.deferrals}:{task.retry_count}".encode()
    return int.from_bytes(hashlib.sha256(seed).digest()[:4], "big") / 2**32


def backoff(task: Task) -> float:
    """Seconds a refused task waits: doubling with its deferrals from 1 s to MAX_BACKOFF, jittered."""
    return min(2.0 ** min(task.execution_stats.deferrals, 8), MAX_BACKOFF) * (0.5 + jitter(task))


class FlowGate:
    def __init__(self, storage: TaskStorage | None, clock: Clock, max_retries: MaxRetries,
                 stale_after: timedelta) -> None:
        self.storage = storage
        self.clock = clock
        self.max_retries = max_retries
        self.stale_after = stale_after
        self.waiting = WaitingBoard(clock)

    def _keys(self, fn: Callable[[Task], str] | None, pairs: Sequence[Pair], recorder: RunRecorder,
              what: str) -> dict[str, list[Pair]]:
        """The pairs by key; a task whose key function raises fails for good (its own bug)."""
        keyed: dict[str, list[Pair]] = {}
        for pair in pairs:
            try:
                keyed.setdefault(key_of(fn, pair[0], what), []).append(pair)
            except Exception as exc:  # noqa: BLE001 - a user's key function failing fails its task
                recorder.record(pair[0], error=f"its {what} key function raised {exc!r}", retryable=False)
        return keyed

    def _wait(self, task: Task, recorder: RunRecorder, why: str, seconds: float, key: str) -> None:
        recorder.record(task, error=f"{why}; deferred without using an attempt", retry_delay=seconds,
                        consume_attempt=False)
        self.waiting.note(task, key)

    async def screen(self, executor: Executor, pairs: list[Pair], recorder: RunRecorder) -> list[Pair]:
        """Debounce: only each key's latest task goes on (see the module)."""
        debounce = executor.options.debounce
        if debounce is None or self.storage is None:
            return pairs
        kept: list[Pair] = []
        for key, group in self._keys(debounce.key, pairs, recorder, "debounce").items():
            for pair in group:
                task = pair[0]
                busy: str | None = ""
                latest = await change(self.storage, scope("debounce", task, key), debounce_start_step(task.key),
                                      self.clock.now() + debounce.window + KEEP, busy)
                if latest is None:
                    kept.append(pair)
                elif latest:
                    recorder.record(task, cancelled=f"debounced: superseded by {latest}")
                else:
                    self._wait(task, recorder, "its debounce key is busy", backoff(task), key)
        return kept

    @asynccontextmanager
    async def admit(self, executor: Executor, pairs: list[Pair], recorder: RunRecorder,
                    owner: str) -> AsyncIterator[list[Pair]]:
        """The pairs that may start now (see the module); their slots are freed on exit."""
        concurrency, rate = executor.options.concurrency, executor.options.rate_limit
        if self.storage is None or not pairs or (concurrency is None and rate is None):
            yield pairs
            return
        held: dict[str, list[str]] = {}
        try:
            admitted = pairs
            if concurrency is not None:
                admitted = await self._slots(executor, concurrency, admitted, recorder, owner, held)
            if rate is not None:
                admitted = await self._starts(rate, admitted, recorder)
            yield admitted
        finally:
            await self._free(held)

    async def _slots(self, executor: Executor, limit: Concurrency, pairs: list[Pair], recorder: RunRecorder,
                     owner: str, held: dict[str, list[str]]) -> list[Pair]:
        assert self.storage is not None
        now = self.clock.now()
        spans = [s for s in (executor.options.timeout, recorder.seconds_left()) if s is not None]
        until = now + (timedelta(seconds=min(spans)) if spans else self.stale_after) + SLOT_MARGIN
        admitted: list[Pair] = []
        for key, group in self._keys(limit.key, pairs, recorder, "concurrency").items():
            where = scope("concurrency", group[0][0], key)
            holders = {f"{pair[0].key}@{owner}": pair for pair in group}
            none: list[str] = []
            granted = await change(self.storage, where, slots_step(limit.limit, list(holders), now, until),
                                   until + KEEP, none)
            held[where] = granted
            admitted += [holders[h] for h in granted]
            for holder in [h for h in holders if h not in granted]:  # in order: runs replay alike
                task = holders[holder][0]
                self._wait(task, recorder, f"at its concurrency limit of {limit.limit} for key {key!r}",
                           backoff(task), key)
        return _kept(pairs, admitted)

    async def _starts(self, rate: RateLimit, pairs: list[Pair], recorder: RunRecorder) -> list[Pair]:
        assert self.storage is not None
        now = self.clock.now()
        per = rate.per.total_seconds()
        admitted: list[Pair] = []
        for key, group in self._keys(rate.key, pairs, recorder, "rate_limit").items():
            where = scope("rate", group[0][0], key)
            count, wait = await change(self.storage, where, starts_step(rate.limit, rate.per, len(group), now),
                                       now + rate.per + KEEP, (0, per))
            admitted += group[:count]
            for rank, (task, _) in enumerate(group[count:]):
                spread = per * (rank // rate.limit) + per * jitter(task) * min(1 + task.execution_stats.deferrals, 4)
                self._wait(task, recorder, f"at its rate limit of {rate.limit} per {per:g} s for key {key!r}",
                           wait + spread, key)
        return _kept(pairs, admitted)

    async def _free(self, held: dict[str, list[str]]) -> None:
        assert self.storage is not None
        for where, holders in held.items():
            try:
                await self.storage.free_slots(where, holders)
            except Exception:
                log.exception("could not free %d concurrency slots; they free at their deadline", len(holders))

    async def run_ordered(self, pairs: list[Pair], recorder: RunRecorder, run_unit: RunUnit, width: int,
                          in_batch: Sequence[Task] = ()) -> None:
        """Each partition key's tasks one at a time in order, `width` keys at once (see `ordered`).
        `in_batch`: the executor's tasks in the batch's order, with those the runner deferred
        before they got here (claimed by another run, early): such a task holds its key's turn
        as a failure does, so no later task of its key runs before it."""
        runnable = {p[0].key: p for p in pairs}
        by_key: dict[str, list[Pair | Task]] = {}
        for item in [runnable.get(t.key, t) for t in in_batch if t.key in runnable or t.key in recorder.outcomes] \
                or pairs:
            task = item[0] if isinstance(item, tuple) else item
            by_key.setdefault(task.partition_key or task.key, []).append(item)
        scopes = {k: scope("order", _task(group[0]), k) for k, group in by_key.items()}
        states = await self.storage.read_flow(list(scopes.values())) if self.storage else {}
        gate = asyncio.Semaphore(width)

        async def one_key(key: str, group: list[Pair | Task]) -> None:
            async with gate:
                await self._run_key(scopes[key], KeyTurn.of(states.get(scopes[key]), self.clock.now()), group,
                                    recorder, run_unit, key)

        await asyncio.gather(*(one_key(k, g) for k, g in by_key.items()))

    async def _run_key(self, where: str, turn: KeyTurn, group: list[Pair | Task], recorder: RunRecorder,
                       run_unit: RunUnit, key: str) -> None:
        head: str | None = None
        blocked, done, due, blocked_for = False, False, None, 0.0
        waiting: list[Task] = []
        for item in group:
            task = _task(item)
            later = blocked or done or (turn.head is not None and task.key != turn.head)
            if isinstance(item, tuple):
                if later:
                    waiting.append(task)
                    continue
                await run_unit([item])
            elif later:  # deferred before it got here: it waits in the key's queue, in its place
                if self._retried_in(recorder.outcomes[task.key]) is not None:
                    waiting.append(task)
                continue
            outcome = recorder.outcomes.get(task.key)
            again = self._retried_in(outcome) if outcome is not None else None
            if again is not None:
                head, due, blocked, blocked_for = task.key, self.clock.now() + timedelta(seconds=again), True, again
            elif turn.head == task.key:
                head, done = task.key, True
        if turn.queue and not blocked and not done:
            blocked_for = max(turn.due - self.clock.now().timestamp(), 0.0)
        for task in waiting:
            self._wait(task, recorder, f"waiting for an earlier task of ordered key {key!r}",
                       blocked_for + backoff(task), key)
        if (head is not None or waiting) and self.storage is not None:
            await change(self.storage, where, settle_step(head, done, due, [t.key for t in waiting],
                                                          self.clock.now(), self.stale_after),
                         self.clock.now() + self.stale_after + KEEP, None)

    def _retried_in(self, outcome: Outcome) -> float | None:
        """Seconds until the task runs again if its outcome will be retried or deferred, else None
        (it succeeded, was cancelled, or failed for good)."""
        if outcome.succeeded or outcome.cancel_reason is not None:
            return None
        task = outcome.task
        if not outcome.consume_attempt:
            return max(outcome.retry_delay or 0.0, 0.0)
        used = task.retry_count - task.execution_stats.redrive_base
        if outcome.retryable and used < self.max_retries(task):
            return retry_delay_ms(task.retry_after, used) / 1000
        return None

    async def flush_waiting(self) -> None:
        if self.storage is not None:
            await self.waiting.flush(self.storage)


def _task(item: Pair | Task) -> Task:
    return item[0] if isinstance(item, tuple) else item


def _kept(pairs: list[Pair], admitted: list[Pair]) -> list[Pair]:
    """`pairs` that are in `admitted`, in their order (by identity: no deep comparison of tasks)."""
    ids = {id(p) for p in admitted}
    return [p for p in pairs if id(p) in ids]
