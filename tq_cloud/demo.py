"""The in-memory demo: a small shop's task queue, run on simulated time so it finishes at once.

It registers each kind of executor, adds tasks down every path (immediate, delayed, retried,
exhausted, a flow with a join and an entity, an unknown type) and prints what happened.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import TextIO

from pydantic import BaseModel

from tq_cloud import (
    EntityRef,
    ExecutorActions,
    FlowConfig,
    JoinTarget,
    LifecycleConfig,
    Task,
    TaskLifecycleProvider,
)
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.domain.events import TaskCompleted, TaskExhausted, TaskFailed, TaskStarted
from tq_cloud.testing import InMemoryStack


class Email(BaseModel):
    to: str
    subject: str


class Counts(TaskLifecycleProvider):
    def __init__(self) -> None:
        self.events: Counter[str] = Counter()

    def on_task_started(self, event: TaskStarted) -> None:
        self.events["started"] += 1

    def on_task_completed(self, event: TaskCompleted) -> None:
        self.events["completed"] += 1

    def on_task_failed(self, event: TaskFailed) -> None:
        self.events["failed (will retry)" if event.will_retry else "failed (final)"] += 1

    def on_task_exhausted(self, event: TaskExhausted) -> None:
        self.events["exhausted"] += 1


def build_app() -> TaskQueuesManager:
    app = TaskQueuesManager()
    flaky_attempts: Counter[str] = Counter()

    @app.task("email", "send", retries=3, store_on_failure=True)
    async def send_email(task: Task[Email], actions: ExecutorActions) -> None:
        flaky_attempts[task.key] += 1
        if task.payload.to.endswith("@flaky.example") and flaky_attempts[task.key] < 3:
            raise ConnectionError("SMTP server busy")
        actions.success(task, {"message_id": f"m-{task.key[:6]}"})

    @app.task("media", "resize", parallel=True, chunk_size=4)
    async def resize(task: Task, actions: ExecutorActions) -> None:
        actions.success(task, {"thumb": f"{task.payload['image']}-200px.jpg"})

    @app.batch_task("analytics", "track")
    async def track(tasks: list[Task], actions: ExecutorActions) -> None:
        for task in tasks:
            actions.success(task)

    @app.task("orders", "fulfil", store_on_failure=True)
    async def fulfil(task: Task, actions: ExecutorActions) -> None:
        order = task.payload["order"]
        skus = task.payload["skus"]
        steps = [{"type": "reserve", "queue_id": "orders", "payload": {"sku": s}} for s in skus]
        actions.start_flow(
            steps,
            FlowConfig(join=JoinTarget(type="ship", queue_id="orders"), failure_policy="abort",
                       timeout_ms=300_000, entity=EntityRef(id=order, type="order")),
        )
        actions.success(task)

    @app.task("orders", "reserve", parallel=True, chunk_size=10)
    async def reserve(task: Task, actions: ExecutorActions) -> None:
        actions.success(task, {"sku": task.payload["sku"], "reserved": True})

    @app.task("orders", "ship", store_on_failure=True)
    async def ship(task: Task, actions: ExecutorActions) -> None:
        steps = actions.flow_results(task).steps()
        actions.success(task, {"shipped": [s.result["sku"] async for s in steps]})

    @app.task("billing", "charge", retries=1, store_on_failure=True)
    async def charge(task: Task, actions: ExecutorActions) -> None:
        actions.fail(task, "card declined", {"code": "do_not_honor"})

    return app


async def run_demo(out: TextIO) -> InMemoryStack:
    counts = Counts()
    stack = InMemoryStack.create(build_app(), task_lifecycle=counts,
                                 lifecycle_config=LifecycleConfig(mode="sync"))
    now = stack.clock.now()
    await stack.handler.add_tasks([
        Task(type="send", queue_id="email", payload={"to": "ada@example.com", "subject": "Welcome"}),
        Task(type="send", queue_id="email", payload={"to": "bob@flaky.example", "subject": "Receipt"}),
        Task(type="send", queue_id="email", payload={"to": "cy@example.com", "subject": "Reminder"},
             execute_at=now + timedelta(hours=1)),
        *[Task(type="resize", queue_id="media", payload={"image": f"img{i}"}) for i in range(6)],
        *[Task(type="track", queue_id="analytics", payload={"event": "view", "n": i}) for i in range(20)],
        Task(type="fulfil", queue_id="orders", payload={"order": "o-42", "skus": ["A", "B", "C"]}),
        Task(type="charge", queue_id="billing", payload={"amount": 12},
             entity=EntityRef(id="u-7", type="user")),
        Task(type="refund", queue_id="billing", payload={"amount": 3}),
    ], allow_unknown=True)
    processed = await stack.run_until_idle()
    elapsed = stack.clock.now() - now
    print(f"tq-cloud in-memory demo: {processed} task runs in {elapsed} of simulated time", file=out)
    print("\nstored tasks by status (immediate successes leave no row):", file=out)
    rows = stack.storage.snapshot().values()
    for (type_, status), n in sorted(Counter((r.type, r.status.value) for r in rows).items()):
        print(f"  {type_:<14} {status:<10} {n}", file=out)
    for row in rows:
        if row.type == "ship":
            print(f"\nflow join 'ship' result: {row.execution_result}", file=out)
        if row.type == "charge":
            print(f"exhausted 'charge': {row.execution_stats.last_error} "
                  f"after {row.retry_count + 1} attempts", file=out)
        if row.type == "refund":
            print(f"unknown type 'refund': {row.status.value} ({row.execution_stats.ignored_reason})",
                  file=out)
    print("\nentity projections:", file=out)
    for p in sorted(stack.projections.all(), key=lambda p: (p.entity_type, p.entity_id)):
        print(f"  {p.entity_type}:{p.entity_id} {p.task_type:<8} {p.status.value:<9} "
              f"{p.error or p.result or ''}", file=out)
    print("\nlifecycle events: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.events.items())), file=out)
    return stack


def main(out: TextIO | None = None) -> InMemoryStack:
    import sys

    return asyncio.run(run_demo(out or sys.stdout))
