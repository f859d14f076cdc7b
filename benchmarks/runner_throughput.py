"""No-op tasks through TaskHandler + TaskRunner on the in-memory backends, per executor kind.

    python benchmarks/runner_throughput.py --tasks 100000

Prints, per kind, tasks/s for processing (receive, claim, run, commit) and end to end (also
add_tasks). Targets on a 2-core machine: 20,000/s for single-task executors, 100,000/s for
batch executors (processing).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass

from tq_cloud import ExecutorActions, Task
from tq_cloud.testing import InMemoryStack

KINDS = ("single", "parallel", "batch")
TARGETS = {"single": 20_000, "parallel": 20_000, "batch": 100_000}


@dataclass
class Figures:
    kind: str
    tasks: int
    add_s: float
    process_s: float

    @property
    def process_rate(self) -> float:
        return self.tasks / self.process_s

    @property
    def end_to_end_rate(self) -> float:
        return self.tasks / (self.add_s + self.process_s)


def build(kind: str, round_trip: bool) -> InMemoryStack:
    stack = InMemoryStack.create(round_trip=round_trip)
    reg = stack.registry
    if kind == "batch":
        @reg.batch_task("bench", "noop")
        async def noop_batch(tasks: list[Task], actions: ExecutorActions) -> None:
            for task in tasks:
                actions.success(task)
    else:
        options = {"parallel": True, "chunk_size": 50} if kind == "parallel" else {}

        @reg.task("bench", "noop", **options)  # type: ignore[arg-type]
        async def noop(task: Task, actions: ExecutorActions) -> None:
            actions.success(task)
    return stack


async def measure(kind: str, tasks: int, batch_size: int, round_trip: bool) -> Figures:
    stack = build(kind, round_trip)
    started = time.perf_counter()
    for start in range(0, tasks, 1000):
        await stack.handler.add_tasks([Task(type="noop", queue_id="bench", payload={"n": i})
                                       for i in range(start, min(start + 1000, tasks))])
    added = time.perf_counter()
    processed = await stack.process_ready(batch_size)
    finished = time.perf_counter()
    if processed != tasks or stack.handler.stats.worker.tasks_succeeded != tasks:
        raise SystemExit(f"{kind}: processed {processed} of {tasks}")
    return Figures(kind, tasks, added - started, finished - added)


async def run(tasks: int, batch_size: int, round_trip: bool, kinds: list[str]) -> list[Figures]:
    return [await measure(kind, tasks, batch_size, round_trip) for kind in kinds]


def main(argv: list[str] | None = None) -> list[Figures]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--mode", choices=["object", "json", "both"], default="both",
                        help="object: tasks pass through the in-memory queue as objects; "
                             "json: serialised and parsed as through Kinesis")
    parser.add_argument("--kinds", nargs="*", default=list(KINDS), choices=KINDS)
    args = parser.parse_args(argv)
    results = []
    for mode in (["object", "json"] if args.mode == "both" else [args.mode]):
        figures = asyncio.run(run(args.tasks, args.batch_size, mode == "json", args.kinds))
        print(f"{args.tasks} no-op tasks, batches of {args.batch_size}, in-memory queue, {mode} mode")
        print(f"{'kind':<10}{'processing tasks/s':>20}{'end-to-end tasks/s':>20}{'target':>10}  met")
        for f in figures:
            target = TARGETS[f.kind]
            met = "yes" if f.process_rate >= target else "NO"
            print(f"{f.kind:<10}{f.process_rate:>20,.0f}{f.end_to_end_rate:>20,.0f}{target:>10,}  {met}")
        if mode == "json":  # issue #28's figure: the fastest kind end to end, and enqueueing alone
            best = max(figures, key=lambda f: f.end_to_end_rate)
            print(f"json end to end: {best.end_to_end_rate:,.0f} tasks/s "
                  f"(add_tasks alone: {best.tasks / best.add_s:,.0f} tasks/s)")
        results += figures
    return results


if __name__ == "__main__":
    main()
