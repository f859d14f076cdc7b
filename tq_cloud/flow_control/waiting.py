"""Tasks waiting on a limit, per executor and key, for `tq-cloud status` and the console.

Each runner counts the tasks its gate turned away and, at most every FLUSH seconds, merges the
counts into one mark per executor (`flow-waiting:<queue>/<type>`: key -> [count, when]), keeping
the TOP keys seen within the last WINDOW. A read-modify-write from many invocations may lose a
count to a concurrent one: it is a gauge for people, never used to decide anything.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass

from tq_cloud.clock import Clock
from tq_cloud.domain.task import Task
from tq_cloud.ports.storage import TaskStorage

log = logging.getLogger("tq_cloud.flow_control")
FLUSH = 10.0
WINDOW = 300.0
TOP = 20
MARK_PREFIX = "flow-waiting:"


@dataclass(frozen=True)
class WaitingKey:
    queue: str
    type: str
    key: str
    count: int
    at: float


class WaitingBoard:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.counts: dict[tuple[str, str], Counter[str]] = {}
        self.flushed_at = 0.0

    def note(self, task: Task, key: str) -> None:
        self.counts.setdefault((task.queue_id, task.type), Counter())[key] += 1

    async def flush(self, storage: TaskStorage, force: bool = False) -> None:
        now = self.clock.now().timestamp()
        if not self.counts or (not force and now - self.flushed_at < FLUSH):
            return
        counts, self.counts, self.flushed_at = self.counts, {}, now
        try:
            marks = await storage.get_marks([_mark(q, t) for q, t in counts])
            for (queue, task_type), seen in counts.items():
                board = {k: v for k, v in json.loads(marks.get(_mark(queue, task_type), "{}")).items()
                         if now - float(v[1]) < WINDOW}
                for key, count in seen.items():
                    board[key] = [count, now]
                top = dict(sorted(board.items(), key=lambda kv: -int(kv[1][0]))[:TOP])
                await storage.set_mark(_mark(queue, task_type), json.dumps(top))
        except Exception:
            log.warning("could not record the tasks waiting on limits", exc_info=True)


async def waiting_on_limits(storage: TaskStorage, executors: list[tuple[str, str]], now: float) -> list[WaitingKey]:
    """The keys with tasks turned away by a limit within the last WINDOW, most first."""
    marks = await storage.get_marks([_mark(q, t) for q, t in executors])
    rows = [WaitingKey(q, t, key, int(v[0]), float(v[1]))
            for q, t in executors for key, v in json.loads(marks.get(_mark(q, t), "{}")).items()
            if now - float(v[1]) < WINDOW]
    return sorted(rows, key=lambda r: -r.count)


def _mark(queue: str, task_type: str) -> str:
    return f"{MARK_PREFIX}{queue}/{task_type}"
