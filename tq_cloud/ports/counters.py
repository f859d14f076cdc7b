"""The kept-counters port: what every committed batch did, added up per queue and task type,
per minute (the console's charts) and in all (its exact counts, however many tasks there
are: a capped scan of stored rows could not say, and most tasks leave no row).

A batch adds its tally once, after its commit: one write per (queue, type) it touched per
minute and one to the totals, whatever the batch's size (on DynamoDB, two `UpdateItem` of
`ADD`s: about 0.02 WRU a task in batches of 100; and once per container and pair, one more
that records the pair, so that a reader without the app's code knows what to read). A batch redelivered after its commit
counts its runs again, as they ran again; counts are of runs, as the worker saw them.

Example:
    await counters.add(BatchTally.of(batch.outcomes), clock.now())
    seen = await counters.read([("billing", "charge")], since=now - timedelta(hours=1), until=now)
    seen.totals[("billing", "charge")].counts["executed"]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from tq_cloud.domain.limits import RESERVED_ID_PREFIX
from tq_cloud.domain.tally import LATENESS_BOUNDS_MS, BatchTally, PairTally

MINUTE_ROWS_KEPT = timedelta(days=2)
"""How long a minute's row is kept (the console charts the last hours)."""


@dataclass(slots=True)
class CountsRow:
    """Counts, the lateness histogram and the summed run time of one (queue, type), in one
    minute or in all."""
    counts: Counter[str] = field(default_factory=Counter)
    lateness: list[int] = field(default_factory=lambda: [0] * (len(LATENESS_BOUNDS_MS) + 1))
    run_ms: float = 0.0

    def add(self, other: CountsRow | PairTally) -> None:
        if isinstance(other, PairTally):
            other = CountsRow(other.counts, other.histogram(), sum(other.run_ms))
        self.counts.update(other.counts)
        self.lateness = [a + b for a, b in zip(self.lateness, other.lateness, strict=True)]
        self.run_ms += other.run_ms


@dataclass(slots=True)
class CountsSeen:
    """What `read` found: all-time totals per pair, and per pair the minutes (their start) that
    had any count, in the range read."""
    totals: dict[tuple[str, str], CountsRow] = field(default_factory=dict)
    minutes: dict[tuple[str, str], dict[datetime, CountsRow]] = field(default_factory=dict)
    lateness: dict[datetime, dict[str, float]] = field(default_factory=dict)
    """Per minute, lateness percentiles (`p50`, `p99`, ms) as a store that keeps no histogram
    reads them (CloudWatch); empty where the rows' histograms say it."""


def minute_of(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def minutes_between(since: datetime, until: datetime) -> list[datetime]:
    first, last = minute_of(since), minute_of(until)
    return [first + timedelta(minutes=i) for i in range(int((last - first).total_seconds() // 60) + 1)]


def check_range(since: datetime, until: datetime) -> None:
    if not since <= until <= since + timedelta(days=1):
        raise ValueError(f"read minutes from a time to a later one at most a day after, not {since} to {until}")


PAIRS_ID = f"{RESERVED_ID_PREFIX}counts#pairs"
"""The reserved id of the row listing every (queue, type) counted so far."""


def counter_id(queue: str, task_type: str, minute: datetime | None) -> str:
    """The reserved id of a pair's row: in all (`minute` None), or of a minute."""
    return f"{RESERVED_ID_PREFIX}counts#{minute.strftime('%Y%m%d%H%M') if minute else 'all'}#{queue}#{task_type}"


class TaskCounters(Protocol):
    async def add(self, tally: BatchTally, at: datetime) -> None:
        """Add a committed batch's tally to the totals and to the minute of `at`."""
        ...

    async def read(self, pairs: Sequence[tuple[str, str]] | None, since: datetime, until: datetime) -> CountsSeen:
        """The totals of `pairs` (None: of every pair counted so far), and their minutes from
        `since` to `until` (at most a day)."""
        ...
