"""Kept counters in memory, for tests, the demo and local development."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from tq_cloud.domain.tally import BatchTally
from tq_cloud.ports.counters import CountsRow, CountsSeen, check_range, minute_of, minutes_between


class InMemoryCounters:
    """The kept-counters port in a dict (minute rows are kept for the process's life).

    Example:
        counters = InMemoryCounters()
        await counters.add(BatchTally.of(outcomes), now)
    """
    def __init__(self) -> None:
        self._rows: dict[tuple[str, str, datetime | None], CountsRow] = {}

    async def add(self, tally: BatchTally, at: datetime) -> None:
        minute = minute_of(at)
        for (queue, task_type), pair in tally.pairs.items():
            for when in (None, minute):
                self._rows.setdefault((queue, task_type, when), CountsRow()).add(pair)

    async def read(self, pairs: Sequence[tuple[str, str]] | None, since: datetime, until: datetime) -> CountsSeen:
        check_range(since, until)
        if pairs is None:
            pairs = sorted({(q, t) for q, t, minute in self._rows if minute is None})
        seen = CountsSeen()
        for queue, task_type in pairs:
            if (total := self._rows.get((queue, task_type, None))) is not None:
                seen.totals[(queue, task_type)] = _copy(total)
            minutes = {m: _copy(row) for m in minutes_between(since, until)
                       if (row := self._rows.get((queue, task_type, m))) is not None}
            if minutes:
                seen.minutes[(queue, task_type)] = minutes
        return seen


def _copy(row: CountsRow) -> CountsRow:
    copied = CountsRow()
    copied.add(row)
    return copied
