"""The kept counters' invariant: every committed batch is counted once, and nothing else is.

`CountsLedger` holds, per (queue, type, outcome), what batches committed (from the tracker's
commit step), what the counters acknowledged adding, and what an add that raised asked for
(applied or not: a response lost after the effect, or a call refused before it). At the end:

    acknowledged <= kept <= acknowledged + raised      (the store holds only what was asked)
    acknowledged <= committed <= acknowledged + raised  (each commit counted at most once,
                                                          and only a failed add is missing)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tq_cloud.domain.tally import OUTCOMES, BatchTally
from tq_cloud.ports.counters import CountsSeen

CountKey = tuple[str, str, str]


def flat_counts(tally: BatchTally) -> Counter[CountKey]:
    return Counter({(q, t, name): n for (q, t), pair in tally.pairs.items() for name, n in pair.counts.items()})


@dataclass
class CountsLedger:
    committed: Counter[CountKey] = field(default_factory=Counter)
    acknowledged: Counter[CountKey] = field(default_factory=Counter)
    raised: Counter[CountKey] = field(default_factory=Counter)

    def check(self, kept: CountsSeen, violate: Callable[[str], None]) -> None:
        stored = Counter({(q, t, name): row.counts[name] for (q, t), row in kept.totals.items() for name in OUTCOMES})
        for key in set(stored) | set(self.committed) | set(self.acknowledged):
            ack, maybe = self.acknowledged[key], self.acknowledged[key] + self.raised[key]
            if not ack <= stored[key] <= maybe:
                violate(f"kept count {key} is {stored[key]}, added {ack} (+{self.raised[key]} uncertain)")
            if not ack <= self.committed[key] <= maybe:
                violate(f"{key}: batches committed {self.committed[key]}, counters added {ack} "
                        f"(+{self.raised[key]} uncertain)")


class ReportingCounters:
    """Tells the ledger what each call of `add` asked, and whether it returned."""

    def __init__(self, inner: Any, ledger: CountsLedger) -> None:
        self.inner = inner
        self.ledger = ledger

    async def add(self, tally: BatchTally, at: datetime) -> None:
        try:
            await self.inner.add(tally, at)
        except BaseException:
            self.ledger.raised.update(flat_counts(tally))
            raise
        self.ledger.acknowledged.update(flat_counts(tally))

    async def read(self, *args: Any) -> CountsSeen:
        seen: CountsSeen = await self.inner.read(*args)
        return seen

