"""AWS API calls and cost per task for a fixed workload, on moto's server.

    python benchmarks/aws_calls.py --tasks 10000

Workload: 80% immediate successes, 10% fail once then succeed, 5% delayed 10 minutes, 5% steps
of flows of 50 steps with an entity. Every API call the engine makes is counted by operation
through botocore's event hooks; the calls of the local event-source emulation (GetRecords,
what Lambda's event source mapping does for free) are counted apart. Cost is estimated from
US-East on-demand list prices (below); shard-hours and Lambda time are not per-call and not
included.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.aws_support import aws_resources, fresh_settings
from tq_cloud import EntityRef, ExecutorActions, FlowConfig, JoinTarget, ManualClock, Task
from tq_cloud.backends.aws import KinesisShardPoller, build_stack, open_clients
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.local.moto import moto_server

# US East (N. Virginia) list prices, USD
PRICE_KINESIS_PUT_UNIT = 0.014 / 1e6  # per 25 KB PUT payload unit (provisioned mode)
PRICE_DDB_WRITE = 0.625 / 1e6  # per on-demand write request unit (1 KB)
PRICE_DDB_READ = 0.125 / 1e6  # per on-demand read request unit (4 KB, strongly consistent)
PRICE_SCHEDULER = 1.00 / 1e6  # per EventBridge Scheduler invocation
DDB_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"}
FLOW_SIZE = 50


@dataclass
class Tally:
    calls: Counter[str] = field(default_factory=Counter)
    kinesis_records: int = 0
    transact_items: int = 0

    def hook(self, service: str) -> Any:
        def count(model: Any, params: dict[str, Any], **_: Any) -> None:
            self.calls[f"{service}.{model.name}"] += 1
            if model.name == "PutRecords":
                self.kinesis_records += len(params["Records"])
            if model.name == "TransactWriteItems":
                self.transact_items += len(params["TransactItems"])
        return count


def build_app(flaky_seen: set[str]) -> TaskQueuesManager:
    app = TaskQueuesManager()

    @app.task("w", "plain")
    async def plain(task: Task, actions: ExecutorActions) -> None:
        actions.success(task)

    @app.task("w", "flaky", retries=2)
    async def flaky(task: Task, actions: ExecutorActions) -> None:
        if task.retry_count == 0:
            actions.fail(task, "transient")
        else:
            actions.success(task)

    @app.task("w", "parent")
    async def parent(task: Task, actions: ExecutorActions) -> None:
        actions.start_flow([{"type": "step", "queue_id": "w", "payload": i} for i in range(FLOW_SIZE)],
                           FlowConfig(join=JoinTarget(type="join", queue_id="w"),
                                      entity=EntityRef(id=task.key, type="order")))
        actions.success(task)

    @app.task("w", "step", parallel=True, chunk_size=50)
    async def step(task: Task, actions: ExecutorActions) -> None:
        actions.success(task, task.payload)

    @app.task("w", "join")
    async def join(task: Task, actions: ExecutorActions) -> None:
        actions.success(task, len(task.payload["flow_results"]["steps"]))

    return app


def workload(total: int, now: Any) -> tuple[list[Task], dict[str, int]]:
    plain, flaky, delayed = int(total * 0.80), int(total * 0.10), int(total * 0.05)
    flows = max(1, (total - plain - flaky - delayed) // FLOW_SIZE)
    tasks = ([Task(type="plain", queue_id="w", payload={"i": i}) for i in range(plain)]
             + [Task(type="flaky", queue_id="w", payload={"i": i}) for i in range(flaky)]
             + [Task(type="plain", queue_id="w", payload={"i": i}, execute_at=now + timedelta(minutes=10))
                for i in range(delayed)]
             + [Task(type="parent", queue_id="w", payload={"i": i}) for i in range(flows)])
    return tasks, {"plain": plain, "flaky": flaky, "delayed": delayed, "flow steps": flows * FLOW_SIZE}


async def run(total: int, endpoint: str) -> tuple[Tally, Tally, dict[str, int], int]:
    settings = fresh_settings(endpoint)
    clock = ManualClock()
    engine, source = Tally(), Tally()
    async with aws_resources(settings) as clients, open_clients(settings) as esm:
        for service in ("kinesis", "dynamodb", "scheduler"):
            getattr(clients, service).meta.events.register("before-parameter-build.*.*", engine.hook(service))
        esm.kinesis.meta.events.register("before-parameter-build.*.*", source.hook("kinesis"))
        stack = await build_stack(build_app(set()), settings, clients, clock=clock)
        poller = KinesisShardPoller(esm.kinesis, settings.stream_name, stack.handler, batch_size=1000)
        tasks, shares = workload(total, clock.now())
        for start in range(0, len(tasks), 500):
            await stack.handler.add_tasks(tasks[start:start + 500])
        end = clock.now() + timedelta(minutes=12)
        while clock.now() < end:  # a minute at a time: the sweeper's schedule is rate(1 minute)
            while await poller.poll_once():
                pass
            await stack.handler.process_mature_tasks()
            while await poller.poll_once():
                pass
            await clock.advance(60)
        return engine, source, shares, poller.committed


def report(engine: Tally, source: Tally, shares: dict[str, int], total: int, committed: int) -> float:
    by_service: Counter[str] = Counter()
    for name, count in engine.calls.items():
        by_service[name.split(".")[0]] += count
    print(f"workload: {total} tasks ({', '.join(f'{v} {k}' for k, v in shares.items())}); "
          f"{committed} records processed")
    print(f"\n{'operation':<34}{'calls':>8}{'per task':>10}")
    for name, count in sorted(engine.calls.items()):
        print(f"{name:<34}{count:>8}{count / total:>10.4f}")
    print(f"\n{'service':<34}{'calls':>8}{'per task':>10}")
    for service, count in sorted(by_service.items()):
        print(f"{service:<34}{count:>8}{count / total:>10.4f}")
    all_calls = sum(by_service.values())
    print(f"{'all engine calls':<34}{all_calls:>8}{all_calls / total:>10.4f}   (target < 0.5)")
    esm = sum(source.calls.values())
    print(f"{'event source (GetRecords etc.)':<34}{esm:>8}{esm / total:>10.4f}   (Lambda's own, not billed)")
    writes = sum(c for n, c in engine.calls.items() if n.split(".")[1] in DDB_WRITES) + 2 * engine.transact_items
    reads = sum(c for n, c in engine.calls.items() if n.split(".")[1] in {"GetItem", "Query", "BatchGetItem"})
    cost = (engine.kinesis_records * PRICE_KINESIS_PUT_UNIT + writes * PRICE_DDB_WRITE
            + reads * PRICE_DDB_READ + engine.calls["scheduler.CreateSchedule"] * PRICE_SCHEDULER)
    print(f"\nestimated cost per million tasks: ${cost / total * 1e6:,.2f} "
          f"({engine.kinesis_records} Kinesis records, ~{writes} DynamoDB write units, ~{reads} read units)")
    return all_calls / total


def plain_immediate_calls(endpoint: str, n: int) -> tuple[float, float]:
    """Calls per task for plain immediate successes alone."""
    async def go() -> tuple[float, float]:
        settings = fresh_settings(endpoint)
        tally = Tally()
        async with aws_resources(settings) as clients, open_clients(settings) as esm:
            for service in ("kinesis", "dynamodb"):
                getattr(clients, service).meta.events.register("before-parameter-build.*.*", tally.hook(service))
            stack = await build_stack(build_app(set()), settings, clients)
            await stack.handler.add_tasks([Task(type="plain", queue_id="w", payload={}) for _ in range(n)])
            poller = KinesisShardPoller(esm.kinesis, settings.stream_name, stack.handler, batch_size=1000)
            while await poller.poll_once():
                pass
        kinesis = sum(c for k, c in tally.calls.items() if k.startswith("kinesis"))
        dynamo = sum(c for k, c in tally.calls.items() if k.startswith("dynamodb"))
        return kinesis / n, dynamo / n
    return asyncio.run(go())


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    for name, value in (("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "x")):
        os.environ.setdefault(name, value)
    with moto_server() as endpoint:
        started = time.perf_counter()
        engine, source, shares, committed = asyncio.run(run(args.tasks, endpoint))
        per_task = report(engine, source, shares, args.tasks, committed)
        k, d = plain_immediate_calls(endpoint, max(1000, args.tasks // 10))
        print(f"plain immediate tasks alone: {k:.4f} Kinesis calls and {d:.4f} DynamoDB calls per task "
              "(targets: <= 0.01 and 0)")
        print(f"(ran in {time.perf_counter() - started:.1f}s)")
    logging.disable(logging.NOTSET)
    return per_task


if __name__ == "__main__":
    main()
