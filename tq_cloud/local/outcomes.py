"""`tq-cloud dev`'s terminal: one readable line per task outcome (status, type, id, attempt,
duration, error), and totals of every task, stored or not. A lifecycle listener of the worker
handlers the local runtime runs in this process; they run in threads, so it locks around its
counts and lines."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, TextIO

from tq_cloud.domain.events import TaskCancelled, TaskCompleted, TaskExhausted, TaskFailed
from tq_cloud.local.terminal import escape_controls


class OutcomeLog:
    """Example:
        log = OutcomeLog(sys.stdout)
        worker = kinesis_handler(app, task_lifecycle=log)
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.totals: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _line(self, outcome: str, event: Any, detail: str = "", ms: float | None = None) -> None:
        if event.task_type.startswith("_"):  # the framework's own (a flow's timeout sentinel, a firing)
            return
        took = f"{ms:.0f} ms" if ms is not None else ""
        line = escape_controls(f"  {outcome:<10} {event.task_type:<14} {event.task_id:<36} attempt {event.attempt:<3} "
                               f"{took:>8}{('  ' + detail) if detail else ''}")
        with self._lock:
            self.totals[outcome] += 1
            print(line.rstrip(), file=self.out, flush=True)

    async def on_task_completed(self, event: TaskCompleted) -> None:
        self._line("executed", event, ms=event.timing.processing_duration_ms)

    async def on_task_failed(self, event: TaskFailed) -> None:
        if event.will_retry:
            when = f" (retry at {event.next_attempt_at:%H:%M:%S})" if event.next_attempt_at else ""
            self._line("retrying", event, f"{event.error}{when}", event.timing.processing_duration_ms)

    async def on_task_exhausted(self, event: TaskExhausted) -> None:
        kept = "stored" if event.stored else "discarded"
        self._line("failed", event, f"{event.error} ({kept}, after {event.total_attempts} attempts)",
                   event.timing.processing_duration_ms)

    async def on_task_cancelled(self, event: TaskCancelled) -> None:
        self._line("ignored", event, event.reason)

    def summary(self) -> str:
        """Totals since the start, in words that say they are totals ("3 retries so far", not
        "retrying=3", which reads as three retrying now)."""
        with self._lock:
            totals = Counter(self.totals)
        if not totals:
            return "so far: no task has run"
        words = {"executed": "executed", "retrying": "retries", "failed": "failed for good",
                 "ignored": "ignored or cancelled"}
        return "so far: " + ", ".join(f"{totals[k]} {w}" for k, w in words.items() if totals[k])
