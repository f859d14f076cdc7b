"""What a committed batch did, per queue and task type: the figures EMF metrics publish and the
kept counters add up (the console's exact counts and its charts over time).

The outcome of a run counts once in the batch that commits it:

- `executed`: runs that succeeded;
- `failed`: runs that failed, whether they will run again or not (`retried` + `dead_lettered`);
- `retried`: failed runs that will run again (after their back-off);
- `dead_lettered`: tasks failed for good (retries exhausted, or failed without retry): the
  stored ones are what `tq-cloud redrive` sends back;
- `cancelled`: tasks cancelled, or ignored (no executor for their type);
- `deferred`: tasks put back without using an attempt (a concurrency or rate limit, an ordered
  key's turn): not a failure, and not a run (no lateness, no run time).

Lateness is how long after it was due a run started (`started_at - execute_at`, or its
creation for a task due at once); run time is how long the executor ran. Both go into a
histogram of fixed buckets (`LATENESS_BOUNDS_MS`), which sums across batches and minutes, so
the console can read percentiles from kept counters.

Example:
    tally = BatchTally.of(batch.outcomes)
    tally.pairs[("billing", "charge")].counts["executed"]       # 98
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tq_cloud.domain.outcomes import Outcome, Verdict

OUTCOMES = ("executed", "failed", "retried", "dead_lettered", "cancelled", "deferred")
"""The counted outcomes, in the order the console shows them."""

METRIC_NAMES = {"executed": "TasksExecuted", "failed": "TasksFailed", "retried": "TasksRetried",
                "dead_lettered": "TasksDeadLettered", "cancelled": "TasksCancelled", "deferred": "TasksDeferred"}
"""Each outcome's EMF metric name (per queue and type: aws_lambda/metrics.py prints them, the
template's dashboard charts them, backends/aws/metric_counters.py reads them back)."""

LATENESS_BOUNDS_MS = (10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000, 3_600_000)
"""Upper bounds of the lateness histogram's buckets, in milliseconds; one more bucket holds the rest."""

_VERDICT_COUNTS: dict[Verdict | None, tuple[str, ...]] = {
    Verdict.EXECUTED: ("executed",), Verdict.RETRY: ("failed", "retried"),
    Verdict.FAILED: ("failed", "dead_lettered"), Verdict.DISCARDED: ("failed", "dead_lettered"),
    Verdict.IGNORED: ("cancelled",), Verdict.CANCELLED: ("cancelled",), None: ()}


def lateness_bucket(ms: float) -> int:
    """The histogram bucket of a lateness (0 for on time or within 10 ms)."""
    return bisect_left(LATENESS_BOUNDS_MS, ms)


def percentile(histogram: Sequence[int], fraction: float) -> float | None:
    """The upper bound (ms) of the bucket holding the `fraction` quantile of `histogram`; None
    when it is empty, `inf` when it falls in the last, open bucket."""
    total = sum(histogram)
    if not total:
        return None
    rank, seen = fraction * total, 0
    for index, count in enumerate(histogram):
        seen += count
        if seen >= rank and count:
            return float(LATENESS_BOUNDS_MS[index]) if index < len(LATENESS_BOUNDS_MS) else float("inf")
    return float("inf")


@dataclass(slots=True)
class PairTally:
    """One queue and task type's figures in a batch."""
    counts: Counter[str] = field(default_factory=Counter)
    lateness_ms: list[float] = field(default_factory=list)
    run_ms: list[float] = field(default_factory=list)

    def histogram(self) -> list[int]:
        buckets = [0] * (len(LATENESS_BOUNDS_MS) + 1)
        for ms in self.lateness_ms:
            buckets[lateness_bucket(ms)] += 1
        return buckets


@dataclass(slots=True)
class BatchTally:
    """A committed batch's figures by (queue, task type)."""
    pairs: dict[tuple[str, str], PairTally] = field(default_factory=dict)

    @classmethod
    def of(cls, outcomes: Iterable[Outcome]) -> BatchTally:
        tally = cls()
        for outcome in outcomes:
            deferred = outcome.verdict is Verdict.RETRY and not outcome.consume_attempt
            names = ("deferred",) if deferred else _VERDICT_COUNTS[outcome.verdict]
            if not names:
                continue
            task = outcome.task
            pair = tally.pairs.get((task.queue_id, task.type))
            if pair is None:
                pair = tally.pairs[(task.queue_id, task.type)] = PairTally()
            pair.counts.update(names)
            if deferred or outcome.verdict in (Verdict.IGNORED, Verdict.CANCELLED):
                continue  # it did not run
            due = task.execute_at or task.created_at or outcome.started_at
            pair.lateness_ms.append(max(0.0, (outcome.started_at - due).total_seconds() * 1000))
            pair.run_ms.append(outcome.processing_ms)
        return tally

    def __bool__(self) -> bool:
        return bool(self.pairs)
