"""The kept-counters port on every backend: batches add up exactly (concurrent ones too), per
minute and in all; the lateness histogram and the run time add up with them; a read asks for a
bounded range of minutes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tq_cloud.domain.outcomes import Outcome, Verdict
from tq_cloud.domain.tally import OUTCOMES, BatchTally, lateness_bucket
from tq_cloud.domain.task import Task

T0 = datetime(2026, 12, 7, 10, 0, 30, tzinfo=UTC)


def tally(queue: str, task_type: str, verdicts: list[Verdict], late_ms: float = 0.0, run_ms: float = 5.0
          ) -> BatchTally:
    due = T0 - timedelta(minutes=5)
    outcomes = []
    for i, verdict in enumerate(verdicts):
        started = due + timedelta(milliseconds=late_ms)
        outcome = Outcome(task=Task(id=f"{task_type}-{i}", type=task_type, queue_id=queue, payload={}, execute_at=due),
                          succeeded=verdict is Verdict.EXECUTED, started_at=started,
                          finished_at=started + timedelta(milliseconds=run_ms))
        outcome.verdict = verdict
        outcomes.append(outcome)
    return BatchTally.of(outcomes)


async def test_batches_add_up_per_minute_and_in_all(counters: Any) -> None:
    billing = ("billing", "charge")
    await asyncio.gather(*(counters.add(tally(*billing, [Verdict.EXECUTED] * 3 + [Verdict.RETRY], late_ms=40), T0)
                           for _ in range(5)))
    await counters.add(tally(*billing, [Verdict.FAILED, Verdict.CANCELLED], late_ms=2_000, run_ms=1.5),
                       T0 + timedelta(minutes=2))
    await counters.add(tally("mail", "send", [Verdict.DISCARDED]), T0)

    seen = await counters.read([billing, ("mail", "send"), ("none", "such")], T0 - timedelta(minutes=1),
                               T0 + timedelta(minutes=3))
    total = seen.totals[billing]
    assert {n: total.counts[n] for n in OUTCOMES} == {
        "executed": 15, "failed": 6, "retried": 5, "dead_lettered": 1, "cancelled": 1, "deferred": 0}
    assert total.lateness[lateness_bucket(40)] == 20 and total.lateness[lateness_bucket(2_000)] == 1
    assert sum(total.lateness) == 21, "a cancelled task did not run: it has no lateness"
    assert total.run_ms == pytest.approx(20 * 5.0 + 1.5)
    minute = T0.replace(second=0)
    assert sorted(seen.minutes[billing]) == [minute, minute + timedelta(minutes=2)]
    assert seen.minutes[billing][minute].counts["executed"] == 15
    assert seen.minutes[billing][minute + timedelta(minutes=2)].counts["dead_lettered"] == 1
    assert seen.totals[("mail", "send")].counts["dead_lettered"] == 1
    assert ("none", "such") not in seen.totals and ("none", "such") not in seen.minutes
    every = await counters.read(None, T0, T0)
    assert sorted(every.totals) == [billing, ("mail", "send")], "a reader without the app finds every pair"
    assert every.totals[billing].counts == total.counts


async def test_a_read_is_of_a_bounded_range(counters: Any) -> None:
    with pytest.raises(ValueError, match="at most a day"):
        await counters.read([("q", "t")], T0, T0 + timedelta(days=2))
    with pytest.raises(ValueError, match="at most a day"):
        await counters.read([("q", "t")], T0, T0 - timedelta(minutes=1))
