"""Debounce, on the sending side: each new task of a debounced executor becomes its key's
latest (one read and one conditional write) and is sent due `window` after its arrival, or
`max_wait` after its burst's first arrival if that is sooner. At run time only the latest of a
key starts (`FlowGate.screen`); the others end cancelled, naming it. A task whose send fails
hands the key back to the one it replaced, which then runs as if it had never been replaced."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.domain.flow_control import Debounce, key_of
from tq_cloud.domain.task import Task
from tq_cloud.errors import TransientError
from tq_cloud.flow_control.state import KEEP, change, debounce_note_step, debounce_undo_step, scope
from tq_cloud.ports.storage import TaskStorage

log = logging.getLogger("tq_cloud.flow_control")


class DebounceArrivals:
    def __init__(self, registry: TaskQueuesManager, storage: TaskStorage) -> None:
        self.registry = registry
        self.storage = storage

    def _debounce(self, task: Task) -> Debounce | None:
        """The debounce of a task's executor, for a task's first send only (a retry, a deferral
        or a re-drive of it is the same arrival, already counted)."""
        if task.retry_count or task.execution_stats.deferrals or task.execution_stats.redrive_base:
            return None
        executor = self.registry.get_executor(task.queue_id, task.type)
        return executor.options.debounce if executor else None

    async def note(self, tasks: Sequence[Task], skip: Collection[int], now: datetime) -> list[Task]:
        """The tasks, each debounced one (not at a position in `skip`) made its key's latest and
        due at the end of its quiet window (never earlier than it asked to be)."""
        routed = list(tasks)
        for i, task in enumerate(routed):
            debounce = self._debounce(task)
            if debounce is None or i in skip:
                continue
            where = scope("debounce", task, key_of(debounce.key, task, "debounce"))
            contended: datetime | None = None
            first = await change(self.storage, where, debounce_note_step(task.key, now),
                                 now + debounce.window + (debounce.max_wait or timedelta(0)) + KEEP, contended)
            if first is None:  # never sent as not the latest: it would be cancelled for one that ran already
                raise TransientError(f"task {task.key}: its debounce key changed under every try; send it again")
            due = now + debounce.window
            if debounce.max_wait is not None:
                due = min(due, first + debounce.max_wait)
            routed[i] = task.model_copy(update={"execute_at": max(due, task.execute_at or due)})
        return routed

    async def undo(self, tasks: Sequence[Task], now: datetime) -> None:
        for task in tasks:
            debounce = self._debounce(task)
            if debounce is None:
                continue
            try:
                where = scope("debounce", task, key_of(debounce.key, task, "debounce"))
                await change(self.storage, where, debounce_undo_step(task.key), now + debounce.window + KEEP, None)
            except Exception:
                log.exception("could not hand the debounce key of unsent task %s back", task.key)
