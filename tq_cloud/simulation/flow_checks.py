"""The simulator's flow-control invariants (#27), checked as runs start and end:

- never more than the limit of `fc` runs of one tenant at any virtual instant;
- never more than the rate limit of `fc` starts of one tenant in any window of its length;
- an `ord` task starts only when every earlier task of its key has ended for good (so the
  key's tasks run in the order they were sent, one at a time);
- of a debounced burst only its last task runs, and it does; the others end cancelled;
- nothing waits for ever: every limited task ran (the final checks' verdicts), and the longest
  wait from send to first start is reported.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from tq_cloud.clock import Clock
from tq_cloud.domain.task import Task


class Tracker(Protocol):
    """What the checks need of the simulation's tracker."""

    clock: Clock

    def now(self) -> float: ...

    def violate(self, message: str) -> None: ...

FC_LIMIT = 2
FC_RATE, FC_PER = 4, 10.0


@dataclass
class FlowChecks:
    running: dict[str, int] = field(default_factory=dict)
    starts: dict[str, deque[float]] = field(default_factory=dict)
    ended: dict[str, set[int]] = field(default_factory=dict)
    """Per ordered key: the positions whose task has ended for good."""
    bursts: dict[str, set[int]] = field(default_factory=dict)
    """Per debounce key: the positions that ran."""
    first_start: dict[str, float] = field(default_factory=dict)
    over_limit: int = 0
    out_of_order: int = 0
    max_wait: float = 0.0

    def _started(self, tracker: Tracker, task: Task) -> None:
        if task.key not in self.first_start:
            self.first_start[task.key] = tracker.now()
            if task.created_at is not None:
                self.max_wait = max(self.max_wait, (tracker.clock.now() - task.created_at).total_seconds())

    def fc_started(self, tracker: Tracker, task: Task) -> None:
        tenant, now = str(task.payload["tenant"]), tracker.now()
        self._started(tracker, task)
        self.running[tenant] = self.running.get(tenant, 0) + 1
        window = self.starts.setdefault(tenant, deque())
        window.append(now)
        while window and window[0] < now - FC_PER:
            window.popleft()
        if self.running[tenant] > FC_LIMIT:
            self.over_limit += 1
            tracker.violate(f"tenant {tenant}: {self.running[tenant]} fc runs at once, limit {FC_LIMIT}")
        if len(window) > FC_RATE:
            self.over_limit += 1
            tracker.violate(f"tenant {tenant}: {len(window)} fc starts within {FC_PER:g} s, limit {FC_RATE}")

    def fc_ended(self, task: Task) -> None:
        self.running[str(task.payload["tenant"])] -= 1

    def ord_started(self, tracker: Tracker, task: Task) -> None:
        key, n = str(task.payload["key"]), int(task.payload["n"])
        self._started(tracker, task)
        ended = self.ended.setdefault(key, set())
        missing = [m for m in range(n) if m not in ended]
        if missing:
            self.out_of_order += 1
            tracker.violate(f"ordered key {key}: task {n} started before {missing} ended")

    def ord_ended(self, task: Task) -> None:
        self.ended.setdefault(str(task.payload["key"]), set()).add(int(task.payload["n"]))

    def deb_ran(self, tracker: Tracker, task: Task) -> None:
        self._started(tracker, task)
        self.bursts.setdefault(str(task.payload["key"]), set()).add(int(task.payload["n"]))
        if not task.payload["last"]:
            tracker.violate(f"debounce key {task.payload['key']}: task {task.payload['n']} ran, "
                            "though a later one superseded it")

    def summary(self, limited: int) -> dict[str, float]:
        return {"limited": limited, "over": self.over_limit, "out_of_order": self.out_of_order,
                "max_wait": self.max_wait}
