"""The flow-control decisions, each one read and one conditional write of a small item.

Every decision is a pure step over a `FlowState` (a document, slots and version), applied by
`change`: read, decide, write only if the item is still the version read; on a conflict (another
invocation decided first), read again. A step that changes nothing writes nothing, so a refused
start costs one read. Backends store the items; the rules live here, once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TypeVar

from tq_cloud.domain.task import Task
from tq_cloud.ports.storage import FlowState, TaskStorage

R = TypeVar("R")
Step = Callable[[FlowState], tuple[FlowState | None, R]]
TRIES = 6
SLICES = 10
"""A rate window is counted in this many slices: exact bound, constant item size."""
KEEP = timedelta(hours=1)
"""How long an item outlives its last use (its TTL): past it, a fresh one means the same."""


def scope(kind: str, task: Task, key: str) -> str:
    """What a flow-control item counts: one kind of limit, of one executor, for one key."""
    return "\x1f".join((kind, task.queue_id, task.type, key))


async def change(storage: TaskStorage, scope: str, step: Step[R], expires_at: datetime, refused: R) -> R:
    """Apply `step` to the item of `scope` (see the module); `refused` when every try met a
    newer version (heavy contention: the caller waits, as for a refusal, and tries later)."""
    for _ in range(TRIES):
        state = (await storage.read_flow([scope])).get(scope) or FlowState()
        new, result = step(state)
        if new is None or await storage.write_flow(scope, new, expires_at):
            return result
    return refused


def slots_step(limit: int, holders: Sequence[str], now: datetime, until: datetime) -> Step[list[str]]:
    """Concurrency: a slot for each holder while fewer than `limit` are live (a slot past its
    `until` is a crashed holder's, and free); the holders granted, in order."""
    def step(state: FlowState) -> tuple[FlowState | None, list[str]]:
        live = {h: u for h, u in state.slots.items() if u > now}
        granted = [h for h in holders if h in live]
        room = limit - len(live)
        for holder in holders:
            if holder not in live and room > 0:
                live[holder], room = until, room - 1
                granted.append(holder)
        changed = len(live) != len(state.slots) or any(h not in state.slots for h in live)
        return (replace(state, slots=live) if changed else None), granted
    return step


def starts_step(limit: int, per: timedelta, count: int, now: datetime) -> Step[tuple[int, float]]:
    """Rate: admit up to `count` starts now so that no window of length `per` holds more than
    `limit`; (admitted, seconds until another start fits). The window is counted in SLICES
    slices: every slice overlapping (now - per, now] counts whole, so the bound is exact."""
    width = per.total_seconds() / SLICES

    def step(state: FlowState) -> tuple[FlowState | None, tuple[int, float]]:
        current = math.floor(now.timestamp() / width)
        counts = {int(k): int(v) for k, v in state.doc.get("slices", {}).items() if int(k) >= current - SLICES}
        admitted = max(0, min(count, limit - sum(counts.values())))
        if admitted:
            counts[current] = counts.get(current, 0) + admitted
        wait = 0.0
        if admitted < count:
            oldest = min((k for k, v in counts.items() if v), default=current)
            wait = max((oldest + SLICES + 1) * width - now.timestamp(), width / 10)
        new = replace(state, doc={**state.doc, "slices": {str(k): v for k, v in counts.items()}})
        return (new if admitted else None), (admitted, wait)
    return step


def debounce_note_step(task_id: str, now: datetime) -> Step[datetime | None]:
    """A debounced task is sent: it becomes its key's latest (the one it replaced is kept, for
    `debounce_undo_step`); the burst's first arrival. A burst begins when the last one's latest
    has started (or none was)."""
    def step(state: FlowState) -> tuple[FlowState | None, datetime | None]:
        doc = state.doc
        fresh = not doc or doc.get("ran") == doc.get("latest")
        first = now.timestamp() if fresh else float(doc["first"])
        new = replace(state, doc={"latest": task_id, "first": first, "ran": None if fresh else doc.get("ran"),
                                  "previous": doc.get("latest")})
        return new, datetime.fromtimestamp(first, now.tzinfo)
    return step


def debounce_undo_step(task_id: str) -> Step[None]:
    """A debounced task could not be sent: the one it replaced is its key's latest again."""
    def step(state: FlowState) -> tuple[FlowState | None, None]:
        if state.doc.get("latest") != task_id:
            return None, None
        previous = state.doc.get("previous")
        doc = {**state.doc, "latest": previous} if previous else {}
        return replace(state, doc=doc), None
    return step


def debounce_start_step(task_id: str) -> Step[str | None]:
    """A debounced task is about to run: None if it is its key's latest (marked as started, so
    the next arrival begins a new burst), else the id of the task that superseded it. A key
    with no item (expired long after its burst) runs: waiting never loses the last task."""
    def step(state: FlowState) -> tuple[FlowState | None, str | None]:
        latest = state.doc.get("latest")
        if latest is None or latest == task_id:
            started = state.doc.get("ran") == task_id or latest is None
            return (None if started else replace(state, doc={**state.doc, "ran": task_id})), None
        return None, str(latest)
    return step
