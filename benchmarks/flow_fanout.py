"""Flows of many steps through the in-memory pipeline.

    python benchmarks/flow_fanout.py --flows 3 --steps 1000 --batch-size 100

Prints, per flow, the wall time from the last step's completion to the join's dispatch, and
the barrier calls made against the target of one per flow per processed batch.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from dataclasses import dataclass

from tq_cloud import ExecutorActions, FlowConfig, JoinTarget, LifecycleConfig, Task, TaskLifecycleProvider
from tq_cloud.lifecycle.events import TaskContext
from tq_cloud.testing import InMemoryStack


@dataclass
class FlowFigures:
    steps: int
    batches_with_steps: int
    barrier_calls: int
    last_step_to_join_ms: float


class JoinWatch(TaskLifecycleProvider):
    def __init__(self) -> None:
        self.dispatched_at: dict[str, float] = {}

    def on_task_scheduled(self, event: TaskContext) -> None:
        if event.task_type == "join":
            self.dispatched_at[event.task_id] = time.perf_counter()


async def one_flow(steps: int, batch_size: int) -> FlowFigures:
    watch = JoinWatch()
    stack = InMemoryStack.create(task_lifecycle=watch, lifecycle_config=LifecycleConfig(mode="sync"))
    last_step = 0.0
    joined: list[int] = []

    @stack.registry.task("f", "parent")
    async def parent(task: Task, actions: ExecutorActions) -> None:
        actions.start_flow([{"type": "step", "queue_id": "f", "payload": i} for i in range(steps)],
                           FlowConfig(join=JoinTarget(type="join", queue_id="f")))
        actions.success(task)

    @stack.registry.task("f", "step", parallel=True, chunk_size=50)
    async def step(task: Task, actions: ExecutorActions) -> None:
        nonlocal last_step
        actions.success(task, task.payload)
        last_step = time.perf_counter()

    @stack.registry.task("f", "join")
    async def join(task: Task, actions: ExecutorActions) -> None:
        joined.append(len(task.payload["flow_results"]["steps"]))
        actions.success(task)

    await stack.handler.add_tasks([Task(type="parent", queue_id="f", payload=None)])
    await stack.run_until_idle(batch_size=batch_size)
    if joined != [steps]:
        raise SystemExit(f"expected one join with {steps} results, got {joined}")
    assert stack.handler.flows is not None
    [dispatched] = watch.dispatched_at.values()
    return FlowFigures(steps, math.ceil(steps / batch_size), stack.handler.flows.barrier_calls,
                       (dispatched - last_step) * 1000)


def main(argv: list[str] | None = None) -> list[FlowFigures]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args(argv)
    results = [asyncio.run(one_flow(args.steps, args.batch_size)) for _ in range(args.flows)]
    print(f"{args.flows} flows of {args.steps} steps, batches of {args.batch_size}")
    print(f"{'flow':<6}{'last step -> join (ms)':>24}{'barrier calls':>15}{'batches':>9}  one per batch")
    for n, f in enumerate(results, 1):
        ok = "yes" if f.barrier_calls == f.batches_with_steps else "NO"
        print(f"{n:<6}{f.last_step_to_join_ms:>24.2f}{f.barrier_calls:>15}{f.batches_with_steps:>9}  {ok}")
    return results


if __name__ == "__main__":
    main()
