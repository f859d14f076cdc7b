"""A chaos run at full size: a seeded workload through the local runtime (moto's server, the
emulated event source mapping, the real handlers) while AWS calls and invocations fail.

    python benchmarks/chaos.py --tasks 20000 --rate 0.05 --seed 1

Prints tasks, faults injected by kind, records redelivered, and the invariants' results; exits
non-zero if any invariant is violated. A failing seed is reproduced by running it again.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.chaos.harness import ChaosReport, run_chaos  # noqa: E402
from tq_cloud.local.moto import moto_server  # noqa: E402


def main(argv: list[str] | None = None) -> list[ChaosReport]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rate", type=float, action="append", help="fault rate; repeat for several")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=3 * 3600)
    parser.add_argument("--wave", type=int, default=250, help="tasks enqueued at a time (see run_chaos)")
    parser.add_argument("--sweep-interval", type=float, default=2.0)
    parser.add_argument("--view-interval", type=float, default=5.0)
    parser.add_argument("--due-buckets", type=int, default=2)
    parser.add_argument("--live", action="store_true", help="print the runtime's live view to stderr")
    parser.add_argument("--stale-after", type=float, default=30.0, help="seconds before processing is stale")
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")  # no EMF line per invocation
    reports = []
    with moto_server(own_process=True) as endpoint:
        for rate in args.rate or [0.05, 0.2]:
            report = asyncio.run(run_chaos(endpoint, seed=args.seed, rate=rate, tasks=args.tasks,
                                           max_seconds=args.max_seconds, template=ROOT / "template.yaml",
                                           wave=args.wave, stale_after=args.stale_after,
                                           sweep_interval=args.sweep_interval, view_interval=args.view_interval,
                                           due_buckets=args.due_buckets,
                                           out=sys.stderr if args.live else None))
            print(report.render(), flush=True)
            reports.append(report)
    logging.disable(logging.NOTSET)
    return reports


if __name__ == "__main__":
    sys.exit(1 if any(r.violations for r in main()) else 0)
