"""Fairness under a limit: key B's tasks start promptly however large key A's backlog.

    python benchmarks/fairness.py [--a-tasks 10000] [--b-tasks 10] [--moto-a-tasks 2000] [--skip-moto]

A sends its backlog; two windows later, while it waits on its limit, B sends a few; both under
one executor with
`rate_limit=RateLimit(20, per=5 s, key=account)` and `concurrency=Concurrency(10, key=account)`.
Time is the engine's (manual) clock, moved half a second after each round of polling and sweeping,
so the figure is the engine's scheduling, not this machine's speed. B's start delay is from its
send to its run's start. Prints, per backend, a line saying which, then
`fairness: B p99 start delay X s with A backlog N` (target: X <= 2 windows, 10 s).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tq_cloud import Concurrency, ExecutorActions, ManualClock, RateLimit, Task
from tq_cloud.core.registry import TaskQueuesManager

PER = timedelta(seconds=5)
STEP = 0.5


def build_app(clock: ManualClock, started: dict[str, list[float]], sent: dict[str, datetime]) -> TaskQueuesManager:
    app = TaskQueuesManager()

    @app.task("mail", "send", parallel=True, chunk_size=50, rate_limit=RateLimit(20, per=PER, key=lambda t: t.payload["account"]),
              concurrency=Concurrency(10, key=lambda t: t.payload["account"]))
    async def send(task: Task, actions: ExecutorActions) -> None:
        account = task.payload["account"]
        started[account].append((clock.now() - sent[account]).total_seconds())

    return app


async def drive(a_tasks: int, b_tasks: int, clock: ManualClock, add: Callable[[list[Task]], Awaitable[object]],
                step: Callable[[], Awaitable[object]], started: dict[str, list[float]],
                sent: dict[str, datetime]) -> float:
    sent["a"] = clock.now()
    for start in range(0, a_tasks, 500):
        await add([Task(queue_id="mail", type="send", payload={"account": "a", "n": i})
                   for i in range(start, min(start + 500, a_tasks))])
    for _ in range(int(2 * PER.total_seconds() / STEP)):  # B comes while A's backlog waits on its limit
        await step()
        await clock.advance(STEP)
    sent["b"] = clock.now()
    await add([Task(queue_id="mail", type="send", payload={"account": "b", "n": i}) for i in range(b_tasks)])
    for _ in range(int(600 / STEP)):
        await step()
        if len(started["b"]) >= b_tasks:
            break
        await clock.advance(STEP)
    delays = sorted(started["b"])
    if len(delays) < b_tasks:
        raise SystemExit(f"only {len(delays)} of B's {b_tasks} tasks started within 600 s")
    return delays[min(len(delays) - 1, int(len(delays) * 0.99))]


async def in_memory(a_tasks: int, b_tasks: int) -> float:
    from tq_cloud.testing import InMemoryStack

    clock, started, sent = ManualClock(), {"a": [], "b": []}, {}
    stack = InMemoryStack.create(build_app(clock, started, sent), clock=clock)

    async def step() -> None:
        await stack.process_ready()
        await stack.handler.process_mature_tasks()

    return await drive(a_tasks, b_tasks, clock, stack.handler.add_tasks, step, started, sent)


async def on_moto(a_tasks: int, b_tasks: int) -> float:
    from tests.aws_support import aws_resources, fresh_settings
    from tq_cloud.backends.aws import build_stack, open_clients
    from tq_cloud.local.moto import moto_server
    from tq_cloud.local.poller import KinesisShardPoller

    clock, started, sent = ManualClock(), {"a": [], "b": []}, {}
    with moto_server() as endpoint:
        settings = fresh_settings(endpoint)
        async with aws_resources(settings) as clients, open_clients(settings) as esm:
            stack = await build_stack(build_app(clock, started, sent), settings, clients, clock=clock)
            poller = KinesisShardPoller(esm.kinesis, settings.stream_name, stack.handler, batch_size=1000)

            async def step() -> None:
                while await poller.poll_once():
                    pass
                await stack.handler.process_mature_tasks()

            return await drive(a_tasks, b_tasks, clock, stack.handler.add_tasks, step, started, sent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a-tasks", type=int, default=10_000)
    parser.add_argument("--b-tasks", type=int, default=10)
    parser.add_argument("--moto-a-tasks", type=int, default=2_000)
    parser.add_argument("--skip-moto", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(f"memory: RateLimit(20 per {PER.total_seconds():g} s) and Concurrency(10) per account")
    x = asyncio.run(in_memory(args.a_tasks, args.b_tasks))
    print(f"fairness: B p99 start delay {x:.1f} s with A backlog {args.a_tasks}")
    if not args.skip_moto:
        print("moto: the same, on moto's server (DynamoDB, Kinesis)")
        x = asyncio.run(on_moto(args.moto_a_tasks, args.b_tasks))
        print(f"fairness: B p99 start delay {x:.1f} s with A backlog {args.moto_a_tasks}")


if __name__ == "__main__":
    main()
