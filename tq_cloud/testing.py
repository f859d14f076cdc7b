"""A whole tq-cloud stack in memory, driven deterministically: for tests (ours and users'),
benchmarks and the demo. Time moves only when `run_until_idle` jumps to the next due task, or
`run_until(when)` to the next due task or schedule occurrence."""

from __future__ import annotations

__all__ = ["InMemoryStack"]

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tq_cloud.assembly.handler import BatchReport, TaskHandler
from tq_cloud.asynctasks.manager import AsyncTaskManager
from tq_cloud.backends.memory import (
    InMemoryAdapter,
    InMemoryCounters,
    InMemoryDelayLane,
    InMemoryFlowBarrierProvider,
    InMemoryLockProvider,
    InMemoryProjectionProvider,
    InMemoryQueue,
    InMemoryTimer,
)
from tq_cloud.clock import ManualClock
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.schedules.firing import firing


@dataclass
class InMemoryStack:
    """Every backend in memory, a manual clock, and the TaskHandler built from them.

    Example:
        stack = InMemoryStack.create(app)
        await stack.handler.send(send, {"to": "a@b.c"}, delay=timedelta(minutes=5))
        await stack.run_until_idle()            # jumps the clock to the delayed task and runs it
    """

    registry: TaskQueuesManager
    clock: ManualClock
    queue: InMemoryQueue
    storage: InMemoryAdapter
    locks: InMemoryLockProvider
    barriers: InMemoryFlowBarrierProvider
    projections: InMemoryProjectionProvider
    timer: InMemoryTimer
    handler: TaskHandler
    counters: InMemoryCounters = field(default_factory=InMemoryCounters)
    reports: list[BatchReport] = field(default_factory=list)
    fired_until: datetime | None = None
    """Schedule occurrences up to this time have been fired (None: none yet, from the start)."""

    @classmethod
    def create(
        cls,
        registry: TaskQueuesManager | None = None,
        *,
        clock: ManualClock | None = None,
        round_trip: bool = True,
        honours_execute_at: bool = True,
        async_manager: AsyncTaskManager | None = None,
        projections: InMemoryProjectionProvider | None = None,
        delay_lane: bool = False,
        **handler_options: Any,
    ) -> InMemoryStack:
        registry = registry or TaskQueuesManager()
        clock = clock or ManualClock()
        queue = InMemoryQueue(clock, round_trip=round_trip, honours_execute_at=honours_execute_at)
        storage = InMemoryAdapter()
        locks = InMemoryLockProvider(clock)
        barriers = InMemoryFlowBarrierProvider()
        projections = projections or InMemoryProjectionProvider()
        timer = InMemoryTimer(queue)
        counters = InMemoryCounters()
        handler = TaskHandler(
            queue=queue, registry=registry, storage=storage, locks=locks, clock=clock,
            flow_barriers=barriers, projections=projections, timer=timer, counters=counters,
            async_manager=async_manager, delay_lane=InMemoryDelayLane(queue) if delay_lane else None,
            **handler_options,
        )
        return cls(registry, clock, queue, storage, locks, barriers, projections, timer, handler, counters)

    async def step(self, queue_id: str, batch_size: int = 100) -> BatchReport:
        """Receive and process one batch of one queue (requeueing what was not committed)."""
        tasks = await self.queue.receive(queue_id, batch_size)
        report = await self.handler.process_batch(tasks, f"memory:{queue_id}")
        await self._requeue(report)
        return report

    async def _requeue(self, report: BatchReport) -> None:
        """Give back what was not committed, as an event source would redeliver it: the batch's
        uncommitted records and handed-off tasks whose late commit failed."""
        again = report.not_committed + self.handler.take_async_uncommitted()
        if again:
            await self.queue.requeue(again)

    async def process_ready(self, batch_size: int = 100) -> int:
        """Process every batch that is due now; requeue what was not committed."""
        processed = 0
        late = self.handler.take_async_uncommitted()
        if late:
            await self.queue.requeue(late)
        while True:
            progressed = False
            for queue_id in self.queue.queue_ids():
                tasks = await self.queue.receive(queue_id, batch_size)
                if not tasks:
                    continue
                progressed = True
                report = await self.handler.process_batch(tasks, f"memory:{queue_id}")
                self.reports.append(report)
                processed += len(tasks) - len(report.not_committed)
                await self._requeue(report)
                if report.not_committed and report.error is not None:
                    return processed
            if not progressed:
                return processed

    async def run_until(self, when: datetime, *, batch_size: int = 100, max_rounds: int = 100_000) -> int:
        """Run everything due up to `when`, firing every schedule occurrence in between, in
        order, at its time (as EventBridge Scheduler does); the clock ends at `when`.

        Example:
            app.schedule("hourly", task=report, every=timedelta(hours=1))
            await stack.run_until(stack.clock.now() + timedelta(days=1))   # 24 occurrences, each once
        """
        processed = 0
        for _ in range(max_rounds):
            processed += await self.process_ready(batch_size)
            if await self.handler.process_mature_tasks() or await self.fire_schedules():
                continue
            upcoming = [d for d in (self.next_due(), self.next_occurrence()) if d is not None and d <= when]
            if not upcoming:
                break
            await self.clock.advance(max((min(upcoming) - self.clock.now()).total_seconds(), 0.0))
        else:
            raise RuntimeError(f"still busy after {max_rounds} rounds")
        if when > self.clock.now():
            await self.clock.advance((when - self.clock.now()).total_seconds())
            await self.fire_schedules()
            processed += await self.process_ready(batch_size)
        return processed

    async def fire_schedules(self) -> int:
        """Put a firing on the queue for each occurrence due since the last call (the stack's
        EventBridge Scheduler); how many."""
        now, since = self.clock.now(), self.fired_until or self.handler.started_at
        firings = [firing(s, at) for s in self.registry.schedules.values() for at in s.occurrences(since, now)]
        self.fired_until = max(now, since)
        if firings:
            await self.queue.publish(firings)
        return len(firings)

    def next_occurrence(self) -> datetime | None:
        since = max(self.fired_until or self.handler.started_at, self.clock.now())
        nexts = [next(s.occurrences(since, since + timedelta(days=3660)), None)
                 for s in self.registry.schedules.values()]
        return min((n for n in nexts if n is not None), default=None)

    def next_due(self) -> datetime | None:
        dues = [d for d in (self.queue.next_due(), self.storage.next_due(), self.timer.next_due()) if d]
        return min(dues) if dues else None

    async def run_until_idle(self, *, batch_size: int = 100, max_rounds: int = 10_000) -> int:
        """Process, sweep and jump the clock to the next due task until nothing is pending."""
        processed = 0
        for _ in range(max_rounds):
            processed += await self.process_ready(batch_size)
            if await self.handler.process_mature_tasks():
                continue
            due = self.next_due()
            if due is None:
                return processed
            await self.clock.advance(max((due - self.clock.now()).total_seconds(), 0.0))
        raise RuntimeError(f"still busy after {max_rounds} rounds")
