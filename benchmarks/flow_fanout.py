"""One flow of many steps through the pipeline: what its barrier costs per step, and how soon
the join follows the last step.

    python benchmarks/flow_fanout.py --backend aws --steps 1000
    python benchmarks/flow_fanout.py --backend aws --steps 10000
    python benchmarks/flow_fanout.py --backend memory --steps 100000     # peak RSS of a huge flow

The engine runs on the in-memory stack (queue, clock) with its task store and flow barriers on
DynamoDB on moto's server (`--backend aws`), or in memory. Steps are delivered in batches of
`--batch-size` from `--lanes` lanes (4 shards x ParallelizationFactor 10 by default), each step
in a lane by a hash of its key, as Lambda's batches of a fan-out hold steps spread over the
flow. Every DynamoDB call is counted; moto reports fixed capacity
units, so read and write units are estimated from each item's size by DynamoDB's rules (a
write: 1 unit per KB of the item, a conditional write that fails included; a strongly
consistent read: 1 unit per 4 KB read). The join reads every step's result, and that is
counted too. Last line:
`steps N: X calls/step, Y RRU/step, Z WRU/step, join after W ms`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import math
import resource
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tq_cloud import ExecutorActions, FlowConfig, JoinTarget, Task, TaskHandler
from tq_cloud.backends.memory import InMemoryQueue
from tq_cloud.testing import InMemoryStack


@dataclass
class Meter:
    """Counts calls and estimates capacity units of a DynamoDB client's calls."""

    calls: Counter[str] = field(default_factory=Counter)
    rru: float = 0.0
    wru: float = 0.0

    def read(self, items: list[dict[str, Any]]) -> None:
        self.rru += max(math.ceil(sum(map(item_bytes, items)) / 4096), 1)

    def write(self, item: dict[str, Any] | None) -> None:
        self.wru += max(math.ceil(item_bytes(item or {}) / 1024), 1)


def item_bytes(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it: names plus values (numbers about half their digits)."""
    def size(value: dict[str, Any]) -> int:
        (kind, v), = value.items()
        if kind == "S":
            return len(v.encode())
        if kind == "N":
            return len(v) // 2 + 1
        if kind in ("NS", "SS"):
            return sum(len(x) // 2 + 1 if kind == "NS" else len(x.encode()) for x in v)
        return 1
    return sum(len(name.encode()) + size(value) for name, value in item.items())


class MeteredDynamoDb:
    def __init__(self, client: Any, meter: Meter) -> None:
        self._client = client
        self._meter = meter
        self.exceptions = client.exceptions

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._client, name)
        meter = self._meter

        async def call(**kwargs: Any) -> Any:
            meter.calls[name] += 1
            try:
                response = await target(**kwargs)
            except Exception as exc:
                if name in ("put_item", "update_item"):
                    meter.write(kwargs.get("Item") or getattr(exc, "response", {}).get("Item"))
                raise
            if name == "put_item":
                meter.write(kwargs["Item"])
            elif name == "update_item":
                meter.write(response.get("Attributes"))
            elif name == "get_item":
                meter.read([response["Item"]] if "Item" in response else [])
            elif name == "query":
                meter.read(response.get("Items", []))
            elif name == "batch_get_item":
                meter.read([i for items in response.get("Responses", {}).values() for i in items])
            elif name in ("batch_write_item", "delete_item"):
                meter.write(None)
            return response

        return call


class LaneQueue(InMemoryQueue):
    """Delivers records as Kinesis lanes do: each task goes to a lane by a hash of its key
    (Kinesis shards x ParallelizationFactor), and a batch holds one lane's records in the order
    they were published, so a batch of a large fan-out holds every `lanes`-th step or so."""

    def __init__(self, *args: Any, lanes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lanes = lanes
        self._lane = 0
        order = itertools.count()
        self._seq = iter(lambda: (self._lane, next(order)), None)  # type: ignore[assignment]

    async def publish(self, tasks: Any) -> None:
        for task in tasks:
            self._lane = zlib.crc32(task.key.encode()) % self._lanes
            await super().publish([task])


@dataclass
class Figures:
    steps: int
    meter: Meter
    join_after_ms: float
    last_batch_ms: float
    peak_mb: float

    @property
    def total_calls(self) -> int:
        return sum(self.meter.calls.values())

    def line(self) -> str:
        n = self.steps
        return (f"steps {n}: {self.total_calls / n:.2f} calls/step, {self.meter.rru / n:.2f} RRU/step, "
                f"{self.meter.wru / n:.2f} WRU/step, join after {self.join_after_ms:.0f} ms")


async def one_flow(steps: int, batch_size: int, lanes: int, ports: dict[str, Any]) -> tuple[float, float, int]:
    """Run the flow: the ms from the commit of the last step (the barrier report that closed
    the flow) to the join's dispatch, the ms from the last step's run to that dispatch (the
    whole commit of the last batch), and how many results the join read."""
    stack = InMemoryStack.create()
    stack.queue = LaneQueue(stack.clock, lanes=lanes)
    barriers = ports.get("barriers", stack.barriers)
    stack.handler = TaskHandler(queue=stack.queue, registry=stack.registry, clock=stack.clock, locks=stack.locks,
                                storage=ports.get("storage", stack.storage), flow_barriers=barriers, timer=stack.timer)
    last_step, closed_at, dispatched, read = 0.0, 0.0, 0.0, 0
    report = barriers.batch_decrement_and_check

    async def timed_report(*args: Any, **kwargs: Any) -> Any:
        nonlocal closed_at
        outcome = await report(*args, **kwargs)
        if outcome.closed:
            closed_at = time.perf_counter()
        return outcome

    barriers.batch_decrement_and_check = timed_report

    @stack.registry.task("f", "parent")
    async def parent(task: Task, actions: ExecutorActions) -> None:
        actions.start_flow([{"type": "step", "queue_id": "f", "payload": i} for i in range(steps)],
                           FlowConfig(join=JoinTarget(type="join", queue_id="f"), timeout_ms=3_600_000))
        # with a timeout, as long flows should have: one without pays a retire pass after its
        # close (one more write per pack item; docs/operating.md, Running it for months)
        actions.success(task)

    @stack.registry.task("f", "step", parallel=True, chunk_size=50)
    async def step(task: Task, actions: ExecutorActions) -> None:
        nonlocal last_step
        actions.success(task, {"i": task.payload})
        last_step = time.perf_counter()

    @stack.registry.task("f", "join", store_on_failure=True)
    async def join(task: Task, actions: ExecutorActions) -> None:
        nonlocal read
        read = sum([1 async for _ in actions.flow_results(task).steps(page_size=1000)])
        actions.success(task)

    original_publish = stack.queue.publish

    async def publish(tasks: Any) -> None:  # the join's dispatch is its publish
        nonlocal dispatched
        if any(t.type == "join" for t in tasks):
            dispatched = time.perf_counter()
        await original_publish(tasks)

    stack.queue.publish = publish  # type: ignore[method-assign]
    await stack.handler.add_tasks([Task(type="parent", queue_id="f", payload=None)])
    await stack.run_until_idle(batch_size=batch_size)
    return (dispatched - closed_at) * 1000, (dispatched - last_step) * 1000, read


async def run(backend: str, steps: int, batch_size: int, lanes: int) -> Figures:
    meter = Meter()
    if backend == "memory":
        join_ms, batch_ms, read = await one_flow(steps, batch_size, lanes, {})
    else:
        from tests.aws_support import aws_resources, fresh_settings
        from tq_cloud.backends.aws import DynamoDbAdapter, DynamoDbFlowBarrierProvider
        from tq_cloud.local.moto import moto_server

        with moto_server(own_process=True) as endpoint:
            settings = fresh_settings(endpoint)
            async with aws_resources(settings) as clients:
                dynamodb = MeteredDynamoDb(clients.dynamodb, meter)
                ports = {"storage": DynamoDbAdapter(dynamodb, settings.tasks_table),
                         "barriers": DynamoDbFlowBarrierProvider(dynamodb, settings.barriers_table)}
                join_ms, batch_ms, read = await one_flow(steps, batch_size, lanes, ports)
    if read != steps:
        raise SystemExit(f"the join read {read} results of {steps} steps")
    return Figures(steps, meter, join_ms, batch_ms, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main(argv: list[str] | None = None) -> Figures:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("memory", "aws"), default="memory")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lanes", type=int, default=40, help="Kinesis shards x ParallelizationFactor")
    args = parser.parse_args(argv)
    logging.getLogger("tq_cloud").setLevel(logging.ERROR)
    started = time.perf_counter()
    figures = asyncio.run(run(args.backend, args.steps, args.batch_size, args.lanes))
    print(f"backend {args.backend}, {args.steps} steps in batches of {args.batch_size} over {args.lanes} lanes, "
          f"{time.perf_counter() - started:.1f} s, peak RSS {figures.peak_mb:.0f} MB")
    print(f"the last batch, from its steps' run to the join's dispatch: {figures.last_batch_ms:.0f} ms")
    if figures.meter.calls:
        print("DynamoDB calls: " + ", ".join(f"{k} {v}" for k, v in sorted(figures.meter.calls.items())))
    print(figures.line())
    return figures


if __name__ == "__main__":
    main()
