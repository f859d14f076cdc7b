"""Deterministic simulation of the whole system: concurrency, crashes and faults, on virtual time.

    python benchmarks/simulate.py --tasks 100000 --fault-rate 0.2 --seed 1
    python benchmarks/simulate.py --tasks 3000 --fault-rate 0.2 --seeds 1..20
    python benchmarks/simulate.py --tasks 2000 --fault-rate 0.2 --sweep 60     # fresh seeds for 60 s

Prints the figures of each run; a run with violations prints them and the command that replays
it (the same seed gives the same trace hash). The last line is
`simulated N tasks, F faults, V violations, T tasks/s, trace <hash>` (over all runs). Exits 1 if
any run had a violation.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tq_cloud.simulation import SimConfig, SimReport, Simulation


def seeds_of(text: str) -> list[int]:
    if ".." in text:
        first, last = text.split("..", 1)
        return list(range(int(first), int(last) + 1))
    return [int(part) for part in text.split(",")]


def replay_command(config: SimConfig) -> str:
    return (f"python benchmarks/simulate.py --tasks {config.tasks} --fault-rate {config.fault_rate} "
            f"--seed {config.seed} --shards {config.shards} --parallelization {config.parallelization} "
            f"--max-flow-steps {config.max_flow_steps} --aggregate-bytes {config.aggregate_bytes}")


def show(report: SimReport) -> None:
    faults = ", ".join(f"{kind} {n}" for kind, n in sorted(report.faults.items())) or "none"
    print(f"seed {report.config.seed}: {report.tasks} tasks in {report.wall_seconds:.1f} s "
          f"({report.tasks_per_second:.0f} tasks/s; {report.virtual_seconds:.0f} s simulated), "
          f"{report.invocations} invocations, {report.redelivered} records redelivered, peak RSS {report.peak_mb:.0f} MB")
    print(f"  faults injected: {faults}")
    print(f"  stream: {report.records} records ({report.records / max(report.tasks, 1):.3f} a task), "
          f"{report.put_back} uncommitted tasks of aggregated batches put back")
    print(f"  operator: {report.redrives} tasks re-driven (stale records of their old attempts put back)")
    if report.schedules:
        n = report.schedules
        print(f"  schedules: {n['occurrences']} occurrences, {n['duplicates']} duplicate firings, {n['twice']} run twice, "
              f"{n['lost']} lost")
        print(f"  schedules: {n['skipped']} occurrences skipped by overlap='skip' (recorded on their rows)")
    if report.flow_control:
        f = report.flow_control
        print(f"  flow control: {f['limited']:.0f} limited tasks, {f['over']:.0f} over limit, "
              f"{f['out_of_order']:.0f} out of order, max wait {f['max_wait']:.0f} s")
    if report.lane_lateness:
        lane = sorted(report.lane_lateness)
        handled = sorted(report.lane_handled_lateness) or [0.0]
        print(f"  delay lane: {report.lane_messages} messages; delay-lane lateness (due to forwarded) p50 "
              f"{lane[len(lane) // 2]:.2f} s, p99 {lane[int(len(lane) * 0.99)]:.2f} s, max {lane[-1]:.2f} s; "
              f"p99 {handled[int(len(handled) * 0.99)]:.2f} s leaving out {len(lane) - len(report.lane_handled_lateness)} "
              "received by an invocation that crashed (back after the 300 s visibility timeout)")
    if report.lateness:
        late = sorted(report.lateness)
        print(f"  delayed runs (lane, store and flow-control deferrals, behind the stream's backlog): lateness p50 "
              f"{late[len(late) // 2]:.2f} s, p99 {late[int(len(late) * 0.99)]:.2f} s over {len(late)}")
    if report.violations:
        print(f"  {len(report.violations)} violations:")
        for violation in report.violations[:20]:
            print(f"    - {violation}")
        print(f"  replay: {replay_command(report.config)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--fault-rate", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seeds", help="A..B or a,b,c: run each")
    parser.add_argument("--sweep", type=float, help="run fresh seeds for this many seconds")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--parallelization", type=int, default=10)
    parser.add_argument("--max-flow-steps", type=int, default=5000)
    parser.add_argument("--aggregate-bytes", type=int, default=25 * 1024,
                        help="pack tasks into KPL aggregated records up to this size; 0: a record per task")
    args = parser.parse_args(argv)
    logging.getLogger("tq_cloud").setLevel(logging.CRITICAL)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)

    def config(seed: int) -> SimConfig:
        return SimConfig(tasks=args.tasks, fault_rate=args.fault_rate, seed=seed, shards=args.shards,
                         parallelization=args.parallelization, max_flow_steps=args.max_flow_steps,
                         aggregate_bytes=args.aggregate_bytes)

    reports: list[SimReport] = []
    if args.sweep:
        seed = int.from_bytes(os.urandom(3), "big")
        deadline = time.monotonic() + args.sweep
        while time.monotonic() < deadline:
            reports.append(Simulation(config(seed)).run())
            show(reports[-1])
            seed += 1
    else:
        for seed in seeds_of(args.seeds) if args.seeds else [args.seed]:
            reports.append(Simulation(config(seed)).run())
            show(reports[-1])
    tasks = sum(r.tasks for r in reports)
    faults = sum(sum(r.faults.values()) for r in reports)
    violations = sum(len(r.violations) for r in reports)
    wall = sum(r.wall_seconds for r in reports)
    trace = reports[0].trace if len(reports) == 1 else hashlib.blake2b(
        "".join(r.trace for r in reports).encode(), digest_size=16).hexdigest()
    print(f"simulated {tasks} tasks, {faults} faults, {violations} violations, "
          f"{tasks / wall if wall else 0:.0f} tasks/s, trace {trace}")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
