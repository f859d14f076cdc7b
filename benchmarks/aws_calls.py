"""AWS API calls and cost per task for a fixed workload, on moto's server.

    python benchmarks/aws_calls.py --tasks 10000 [--history]

Workload: 80% immediate successes, 10% fail once then succeed, 5% delayed 10 minutes, 5% steps
of flows of 50 steps with an entity. Every API call the engine makes is counted by operation
through botocore's event hooks; the calls of the local event-source emulation (GetRecords,
what Lambda's event source mapping does for free) are counted apart. The delay lane's event
source mapping (ReceiveMessage, DeleteMessageBatch) is billed by SQS: it is counted as one
receive and one delete per batch of up to 10 due messages, and the worker invocations it makes
as Lambda requests; its idle long polls are a fixed cost (about 650,000 requests, $0.26, a
month for five pollers), not a per-task one. moto holds SQS messages for their DelaySeconds in
real time, so the benchmark sends them with no delay and forwards each when the engine's
(manual) clock says it is due: the calls are the same. Cost is estimated from US-East list
prices (below), with the stream's capacity: a provisioned shard at full use (1,000 records or
1 MiB a second, whichever the measured records reach first; the floor a sized deployment
approaches), and on-demand per GB (each record rounded up to 1 KB, written once and read once
by the worker). Lambda time is not included. Settings are a deployed stack's (`deployed()`).
The last line is the mixed workload's cost with provisioned capacity: `estimated cost per million tasks: $X`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
import traceback
from collections import Counter
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.aws_support import aws_resources, fresh_settings
from tq_cloud import EntityRef, ExecutorActions, FlowConfig, JoinTarget, ManualClock, Task
from tq_cloud.aws_lambda.delay_forwarder import decode_lane_body, forward_due
from tq_cloud.backends.aws import SqsDelayLane, build_stack, open_clients
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.local.moto import moto_server
from tq_cloud.local.poller import KinesisShardPoller
from tq_cloud.local.provision import create_queue

# US East (N. Virginia) list prices, USD
PRICE_KINESIS_PUT_UNIT = 0.014 / 1e6  # per 25 KB PUT payload unit (provisioned mode)
PRICE_DDB_WRITE = 0.625 / 1e6  # per on-demand write request unit (1 KB)
PRICE_DDB_READ = 0.125 / 1e6  # per on-demand read request unit (4 KB, strongly consistent)
PRICE_SCHEDULER = 1.00 / 1e6  # per EventBridge Scheduler invocation
PRICE_SQS_REQUEST = 0.40 / 1e6  # per SQS request (each 64 KB chunk of a request counts as one)
PRICE_LAMBDA_REQUEST = 0.20 / 1e6  # per Lambda invocation
PRICE_SHARD_HOUR = 0.015  # per provisioned shard-hour
PRICE_ON_DEMAND_GB = 0.08 + 0.04  # per GB written, and read once (on-demand; records rounded up to 1 KB)
SHARD_RECORDS_PER_S, SHARD_BYTES_PER_S = 1000, 1024 * 1024
DDB_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"}
FLOW_SIZE = 50


@dataclass
class Tally:
    calls: Counter[str] = field(default_factory=Counter)
    kinesis_records: int = 0
    kinesis_bytes: int = 0
    kinesis_kb: int = 0
    kinesis_put_units: int = 0
    """25 KB PUT payload units, by which provisioned Kinesis bills each record."""
    """The records' sizes (data and partition key), and in 1 KB units as on-demand bills them."""
    transact_items: int = 0
    lane_batches: int = 0
    """Batches of due messages the delay lane's mapping gave the worker."""
    barrier_write_units: Counter[str] = field(default_factory=Counter)
    """Write units of the flow barrier's puts and updates by its method, by item size (an
    update's item after it, where the call returns it; else one)."""
    barrier_write_calls: int = 0
    read_units: float = 0.0
    """A strongly consistent read unit per GetItem, Query and BatchGetItem key, half a unit for an
    eventually consistent one (every query of an index): the least each is billed (4 KB)."""
    causes: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Calls by (operation, the engine's code that made it)."""

    def hook(self, service: str) -> Any:
        def count(model: Any, params: dict[str, Any], **_: Any) -> None:
            self.calls[f"{service}.{model.name}"] += 1
            self.causes[(f"{service}.{model.name}", CAUSE.get() or cause())] += 1
            if model.name == "PutRecords":
                self.kinesis_records += len(params["Records"])
                for record in params["Records"]:
                    size = len(record["Data"]) + len(record["PartitionKey"].encode())
                    self.kinesis_bytes += size
                    self.kinesis_kb += -(-size // 1024)
                    self.kinesis_put_units += -(-size // (25 * 1024))
            if model.name in ("GetItem", "Query"):
                self.read_units += 1.0 if params.get("ConsistentRead") else 0.5
            if model.name == "BatchGetItem":
                self.read_units += sum(len(t["Keys"]) * (1.0 if t.get("ConsistentRead") else 0.5)
                                       for t in params["RequestItems"].values())
            if model.name == "TransactWriteItems":
                self.transact_items += len(params["TransactItems"])
            if model.name in ("PutItem", "UpdateItem") and "FlowBarrierProvider" in CAUSE.get():
                self.barrier_write_calls += 1
            if model.name == "PutItem" and "FlowBarrierProvider" in CAUSE.get():
                self.barrier_write_units[barrier_method()] += -(-item_size(params["Item"]) // 1024)
        return count

    def after(self, http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name == "UpdateItem" and "FlowBarrierProvider" in CAUSE.get():
            self.barrier_write_units[barrier_method()] += max(1, -(-item_size(parsed.get("Attributes", {})) // 1024))


def barrier_method() -> str:
    return CAUSE.get().split(" <- ")[0].removeprefix("DynamoDbFlowBarrierProvider.")


def item_size(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it (names and values; numbers about half their digits)."""
    def size(value: dict[str, Any]) -> int:
        kind, v = next(iter(value.items()))
        if kind == "S":
            return len(v.encode())
        if kind == "N":
            return len(v) // 2 + 1
        if kind in ("SS", "NS"):
            return sum(len(x) for x in v)
        if kind == "M":
            return 3 + sum(len(k) + size(x) for k, x in v.items())
        if kind == "L":
            return 3 + sum(size(x) for x in v)
        return 1
    return sum(len(name) + size(value) for name, value in item.items())


PLUMBING = ("/backends/aws/", "/core/resilience.py")
CAUSE: ContextVar[str] = ContextVar("cause", default="")
"""The port call under way and the engine's code that made it: calls a port method makes in
tasks of their own (a gathered batch of writes) inherit it, where their stack no longer shows it."""


def trace_port_calls() -> None:
    """Every port call through the engine's retrying wrappers sets CAUSE for the calls it makes."""
    from tq_cloud.core.resilience import RetryingPort

    wrapped = RetryingPort.__getattr__

    def traced(self: RetryingPort, attr: str) -> Any:
        target = wrapped(self, attr)
        if not asyncio.iscoroutinefunction(target):
            return target
        port = type(self._inner).__name__

        async def call(*args: Any, **kwargs: Any) -> Any:
            token = CAUSE.set(f"{port}.{attr} <- {cause()}")
            try:
                return await target(*args, **kwargs)
            finally:
                CAUSE.reset(token)

        setattr(self, attr, call)
        return call

    RetryingPort.__getattr__ = traced  # type: ignore[method-assign]


def cause() -> str:
    """The engine's code that asked for the call: the innermost frame of tq_cloud outside the
    AWS backends and the retrying wrappers, which only pass calls on."""
    for frame in reversed(traceback.extract_stack()):
        where = frame.filename.replace("\\", "/")
        if "/tq_cloud/" in where and not any(part in where for part in PLUMBING):
            return f"{where.split('/tq_cloud/', 1)[1].removesuffix('.py')}.{frame.name}"
    return "(backends)"


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
        actions.success(task, len(await actions.flow_results(task).all()))

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


async def run(total: int, endpoint: str, history: bool = False) -> tuple[Tally, Tally, dict[str, int], int]:
    settings = deployed(endpoint).model_copy(update={"history": history})
    clock = ManualClock()
    engine, source = Tally(), Tally()
    async with aws_resources(settings) as clients, open_clients(settings) as esm:
        settings = settings.model_copy(update={
            "delay_queue_url": await create_queue(clients, f"{settings.stream_name}-delays")})
        for service in ("kinesis", "dynamodb", "scheduler", "sqs"):
            getattr(clients, service).meta.events.register("before-parameter-build.*.*", engine.hook(service))
        clients.dynamodb.meta.events.register("after-call.dynamodb.UpdateItem", engine.after)
        esm.kinesis.meta.events.register("before-parameter-build.*.*", source.hook("kinesis"))
        stack = await build_stack(build_app(set()), settings, clients, clock=clock)
        poller = KinesisShardPoller(esm.kinesis, settings.stream_name, stack.handler, batch_size=1000)
        lane = DueMessages(esm.sqs, settings.delay_queue_url, stack.handler, source)
        tasks, shares = workload(total, clock.now())
        for start in range(0, len(tasks), 500):
            await stack.handler.add_tasks(tasks[start:start + 500])
        end = clock.now() + timedelta(minutes=12)
        while clock.now() < end:  # a minute at a time: the sweeper's schedule is rate(1 minute)
            while await poller.poll_once() + await lane.forward(clock.now()):
                pass
            await stack.handler.process_mature_tasks()
            while await poller.poll_once() + await lane.forward(clock.now()):
                pass
            await clock.advance(60)
        return engine, source, shares, poller.committed


class DueMessages:
    """The delay lane's event source mapping, on the engine's clock: each message is received
    once, and given to the worker (in batches of 10) when its task is due."""

    def __init__(self, sqs: Any, url: str, handler: Any, tally: Tally) -> None:
        self.sqs, self.url, self.handler, self.tally = sqs, url, handler, tally
        self.waiting: dict[str, tuple[Any, dict[str, Any]]] = {}

    async def forward(self, now: Any) -> int:
        while messages := (await self.sqs.receive_message(  # hidden until the benchmark deletes them
                QueueUrl=self.url, MaxNumberOfMessages=10, VisibilityTimeout=43_200)).get("Messages"):
            for m in messages:
                due_at = min(t.execute_at for t in decode_lane_body(m["Body"].encode(), "m") if isinstance(t, Task))
                self.waiting[m["MessageId"]] = (due_at, m)
        due = [m for at, m in self.waiting.values() if at <= now]
        for m in due:
            del self.waiting[m["MessageId"]]
        for start in range(0, len(due), 10):
            batch = due[start:start + 10]
            records = [{"messageId": m["MessageId"], "body": m["Body"], "eventSource": "aws:sqs"} for m in batch]
            assert not await forward_due(self.handler, records)
            await self.sqs.delete_message_batch(QueueUrl=self.url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])
            self.tally.lane_batches += 1
        return len(due)


def send_without_delay(lane: SqsDelayLane, index: int, body: bytes, delay: int) -> dict[str, Any]:
    """moto would hold a message its DelaySeconds in real time: DueMessages keeps the time."""
    return SEND_ENTRY(lane, index, body, 0)


SEND_ENTRY = SqsDelayLane._entry


def capacity(tally: Tally) -> tuple[float, float]:
    """The stream's capacity per task, in dollars: a provisioned shard at full use, and on-demand."""
    if not tally.kinesis_records:
        return 0.0, 0.0
    record_bytes = tally.kinesis_bytes / tally.kinesis_records
    records_per_shard_hour = 3600 * min(SHARD_RECORDS_PER_S, SHARD_BYTES_PER_S / record_bytes)
    provisioned = tally.kinesis_records * PRICE_SHARD_HOUR / records_per_shard_hour
    on_demand = tally.kinesis_kb * 1024 / 1024**3 * PRICE_ON_DEMAND_GB
    return provisioned, on_demand


def report(engine: Tally, source: Tally, shares: dict[str, int], total: int, committed: int) -> tuple[float, str]:
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
    print(f"\n{'operation: port method <- the engine code that called it':<100}{'calls':>8}{'per task':>10}")
    for (operation, why), count in sorted(engine.causes.items(), key=lambda kv: -kv[1]):
        print(f"{operation + ': ' + why:<100}{count:>8}{count / total:>10.4f}")
    all_calls = sum(by_service.values())
    print(f"\n{'all engine calls':<34}{all_calls:>8}{all_calls / total:>10.4f}   (target < 0.5)")
    esm = sum(source.calls.values())
    print(f"{'event source (GetRecords etc.)':<34}{esm:>8}{esm / total:>10.4f}   (Lambda's own, not billed)")
    writes = (sum(c for n, c in engine.calls.items() if n.split(".")[1] in DDB_WRITES) + 2 * engine.transact_items
              + sum(engine.barrier_write_units.values()) - engine.barrier_write_calls)  # the barrier's by size
    reads = engine.read_units
    dynamodb = by_service["dynamodb"]
    print(f"{'DynamoDB calls':<34}{dynamodb:>8}{dynamodb / total:>10.4f}   (target <= 0.1)")
    sqs_requests = by_service["sqs"] + 2 * source.lane_batches  # sends; the mapping's receives and deletes
    calls_cost = (writes * PRICE_DDB_WRITE + reads * PRICE_DDB_READ
                  + engine.calls["scheduler.CreateSchedule"] * PRICE_SCHEDULER
                  + sqs_requests * PRICE_SQS_REQUEST + source.lane_batches * PRICE_LAMBDA_REQUEST)
    provisioned, on_demand = capacity(engine)
    puts = engine.kinesis_put_units * PRICE_KINESIS_PUT_UNIT
    per_million = 1e6 / total
    steps = shares.get("flow steps", 0)
    if steps:
        units = engine.barrier_write_units
        recording = units["batch_decrement_and_check"]
        print(f"\nflow barrier write units per flow step: recording {recording / steps:.3f} (target <= 0.2), "
              f"all {sum(units.values()) / steps:.3f} ({', '.join(f'{k} {v}' for k, v in sorted(units.items()))}; "
              f"by item size, {steps} steps)")
    print(f"\nkinesis records per task: {engine.kinesis_records / total:.3f} "
          f"({engine.kinesis_bytes / max(engine.kinesis_records, 1):.0f} bytes a record)")
    print(f"stream per million tasks: provisioned ${(puts + provisioned) * per_million:.3f} (PUT units and "
          f"shard-hours at full use), on-demand ${on_demand * per_million:.3f} (per GB in and out)")
    print(f"on-demand stream, all in: ${(calls_cost + on_demand) * per_million:,.2f} per million tasks")
    line = (f"estimated cost per million tasks: ${(calls_cost + puts + provisioned) * per_million:,.3f} "
            f"({engine.kinesis_records} Kinesis records on provisioned shards at full use, ~{writes} DynamoDB "
            f"write units, ~{reads:.0f} read units, {sqs_requests} SQS requests, {source.lane_batches} Lambda "
            "invocations for the delay lane)")
    return all_calls / total, line


def plain_immediate_calls(endpoint: str, n: int) -> tuple[float, float, float, tuple[float, float]]:
    """Kinesis records, Kinesis calls and DynamoDB calls per task for plain immediate successes
    alone, sent by `add_tasks` in calls of 500, and their stream's cost per million tasks
    (provisioned, on-demand)."""
    async def go() -> tuple[float, float, float, tuple[float, float]]:
        settings = deployed(endpoint)
        tally = Tally()
        async with aws_resources(settings) as clients, open_clients(settings) as esm:
            for service in ("kinesis", "dynamodb"):
                getattr(clients, service).meta.events.register("before-parameter-build.*.*", tally.hook(service))
            stack = await build_stack(build_app(set()), settings, clients)
            for start in range(0, n, 500):
                await stack.handler.add_tasks([Task(type="plain", queue_id="w", payload={"i": i})
                                               for i in range(start, min(n, start + 500))])
            poller = KinesisShardPoller(esm.kinesis, settings.stream_name, stack.handler, batch_size=1000)
            while await poller.poll_once():
                pass
        kinesis = sum(c for k, c in tally.calls.items() if k.startswith("kinesis"))
        dynamo = sum(c for k, c in tally.calls.items() if k.startswith("dynamodb"))
        provisioned, on_demand = capacity(tally)
        cost = ((provisioned + tally.kinesis_put_units * PRICE_KINESIS_PUT_UNIT) * 1e6 / n, on_demand * 1e6 / n)
        return tally.kinesis_records / n, kinesis / n, dynamo / n, cost
    return asyncio.run(go())


def cancellable_calls(endpoint: str, n: int) -> tuple[float, float, float]:
    """DynamoDB writes and reads per task, and the cost per million, for immediate successes of
    an executor declared `cancellable=True` (each task gets a row: insert, lease, final mark)."""
    async def go() -> tuple[float, float, float]:
        settings = deployed(endpoint)
        tally = Tally()
        app = TaskQueuesManager()

        @app.task("w", "stoppable", cancellable=True)
        async def stoppable(task: Task, actions: ExecutorActions) -> None:
            return None

        async with aws_resources(settings) as clients, open_clients(settings) as esm:
            clients.dynamodb.meta.events.register("before-parameter-build.*.*", tally.hook("dynamodb"))
            clients.kinesis.meta.events.register("before-parameter-build.*.*", tally.hook("kinesis"))
            stack = await build_stack(app, settings, clients)
            for start in range(0, n, 500):
                await stack.handler.add_tasks([Task(type="stoppable", queue_id="w", payload={})
                                               for _ in range(min(500, n - start))])
            poller = KinesisShardPoller(esm.kinesis, settings.stream_name, stack.handler, batch_size=1000)
            while await poller.poll_once():
                pass
        writes = sum(c for k, c in tally.calls.items() if k.split(".")[1] in DDB_WRITES)
        reads = sum(c for k, c in tally.calls.items() if k.split(".")[1] in {"GetItem", "Query", "BatchGetItem"})
        cost = (tally.kinesis_put_units * PRICE_KINESIS_PUT_UNIT + capacity(tally)[0] + writes * PRICE_DDB_WRITE
                + n * PRICE_DDB_READ)
        return writes / n, reads / n, cost / n * 1e6
    return asyncio.run(go())


def deployed(endpoint: str) -> Any:
    """Fresh resources on moto, configured as a deployed stack is: the console's counts come from
    the worker's EMF metrics (`TQ_COUNTERS=metrics`, AWS's default), not from table rows (the
    default on a local endpoint, two UpdateItem a batch per queue and type)."""
    return fresh_settings(endpoint).model_copy(update={"counters": "metrics"})


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--history", action="store_true", help="TQ_HISTORY on: every outcome kept as a row")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    for name, value in (("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "x")):
        os.environ.setdefault(name, value)
    SqsDelayLane._entry = send_without_delay  # type: ignore[method-assign]
    trace_port_calls()
    with moto_server() as endpoint:
        started = time.perf_counter()
        engine, source, shares, committed = asyncio.run(run(args.tasks, endpoint, args.history))
        per_task, cost_line = report(engine, source, shares, args.tasks, committed)
        records, k, d, (provisioned, on_demand) = plain_immediate_calls(endpoint, max(1000, args.tasks // 10))
        print(f"plain immediate tasks alone: {records:.4f} Kinesis records, {k:.4f} Kinesis calls and {d:.4f} "
              f"DynamoDB calls per task (targets: <= 0.05, <= 0.01 and 0); ${provisioned:.4f} per million "
              f"provisioned, ${on_demand:.4f} on-demand")
        w, r, c = cancellable_calls(endpoint, max(1000, args.tasks // 10))
        print(f"cancellable immediate tasks: {w:.2f} DynamoDB write calls and {r:.2f} read calls per task, "
              f"about ${c:.2f} per million tasks (one consistent read unit each; index writes not counted)")
        print(f"(ran in {time.perf_counter() - started:.1f}s)\n")
        print(cost_line)
    logging.disable(logging.NOTSET)
    return per_task


if __name__ == "__main__":
    main()
