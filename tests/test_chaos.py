"""The chaos run at CI size: faults at 5% and 20% of AWS calls and invocations, every invariant
checked (see tests/chaos/harness.py). The full size runs on demand: benchmarks/chaos.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.harness import run_chaos

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.wall_clock


@pytest.mark.timeout(300)  # each run is capped at 150 s by max_seconds, and settles well before
@pytest.mark.parametrize(("seed", "rate", "wave"), [(11, 0.05, None), (12, 0.2, 40)])
async def test_invariants_hold_under_faults(moto_endpoint: str, seed: int, rate: float, wave: int | None) -> None:
    """The second run enqueues its workload in two waves, as the full-size run does."""
    report = await run_chaos(moto_endpoint, seed=seed, rate=rate, tasks=80, max_seconds=150,
                             template=ROOT / "template.yaml", wave=wave)
    print(report.render())
    assert report.faults, "the run injected faults"
    assert report.violations == [], report.render()
