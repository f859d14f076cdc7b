"""How late do tasks that wait run? Delays from 1 s to 15 minutes and retries with back-off,
through the delay lane, on the deterministic simulation's virtual time.

    python benchmarks/delay_latency.py --tasks 20000
    python benchmarks/delay_latency.py --tasks 20000 --no-lane       # before the lane: the sweeper's minute

Lateness is a delayed run's start less its due time. What is emulated, and how (see
tq_cloud/simulation): SQS `DelaySeconds` in whole seconds (the lane rounds down; the worker
holds a task that arrives early, so none runs early: the simulator checks it), five pollers of
Lambda's SQS mapping returning within 100 ms once a message is visible, the forward through the
real worker handler onto the stream, and Kinesis's mapping with its 1 s batching window
(template.yaml), K shards x P lanes; without the lane, the sweeper every 60 s. Virtual time:
15-minute delays cost no wall time. Last line:
`lateness p50 X s, p99 Y s, max Z s over N tasks`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tq_cloud.simulation import SimConfig, SimReport, Simulation


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * share), len(ordered) - 1)]


def main(argv: list[str] | None = None) -> SimReport:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--no-lane", action="store_true", help="every wait in the store, swept each minute")
    args = parser.parse_args(argv)
    logging.getLogger("tq_cloud").setLevel(logging.CRITICAL)
    report = Simulation(SimConfig(tasks=args.tasks, seed=args.seed, fault_rate=args.fault_rate,
                                  workload="delays", delay_lane=not args.no_lane)).run()
    late = report.lateness
    if report.violations or not late:
        print("\n".join(report.violations[:20]) or "no delayed run was measured")
        raise SystemExit(1)
    print(f"{report.tasks} tasks, {report.lane_messages} through the delay lane, {report.wall_seconds:.1f} s "
          f"({report.virtual_seconds:.0f} s simulated), 0 violations (none ran early)")
    print(f"lateness p50 {percentile(late, 0.5):.2f} s, p99 {percentile(late, 0.99):.2f} s, "
          f"max {max(late):.2f} s over {len(late)} tasks")
    return report


if __name__ == "__main__":
    main()
