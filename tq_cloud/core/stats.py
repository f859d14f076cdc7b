"""Counters a worker keeps for heartbeats and the notification provider."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from tq_cloud.core.settings import HandlerSettings
from tq_cloud.domain.events import ConsumerStats, WorkerStats
from tq_cloud.domain.outcomes import RunResult, Verdict
from tq_cloud.domain.task import Task
from tq_cloud.ports.notifications import NotificationProvider, QueueStats

log = logging.getLogger("tq_cloud.stats")


class StatsBook:
    def __init__(
        self, worker_id: str, settings: HandlerSettings, notifications: NotificationProvider | None
    ) -> None:
        self.worker_id = worker_id
        self.settings = settings
        self.notifications = notifications
        self.worker = WorkerStats()
        self.consumers: dict[str, ConsumerStats] = {}
        self.discarded_total = 0
        self._queues: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    async def batch(
        self, result: RunResult, consumer_id: str | None, started: datetime, finished: datetime,
    ) -> None:
        ran = [o for o in result.outcomes if o.verdict not in (Verdict.IGNORED, Verdict.CANCELLED)]
        succeeded = sum(1 for o in ran if o.succeeded)
        failed = len(ran) - succeeded
        w = self.worker
        w.tasks_processed += succeeded + failed
        w.tasks_succeeded += succeeded
        w.tasks_failed += failed
        w.total_processing_ms += (finished - started).total_seconds() * 1000
        if consumer_id is not None and consumer_id in self.consumers:
            c = self.consumers[consumer_id]
            c.tasks_processed += succeeded + failed
            c.tasks_succeeded += succeeded
            c.tasks_failed += failed
            c.last_task_at = finished
        touched = set()
        for outcome in result.outcomes:
            counts = self._queues[outcome.task.queue_id]
            kind = (outcome.verdict.value if outcome.verdict in (Verdict.IGNORED, Verdict.CANCELLED)
                    else "succeeded" if outcome.succeeded else "failed")
            counts[kind] += 1
            touched.add(outcome.task.queue_id)
        for task in result.handed_off:
            self._queues[task.queue_id]["handed_off"] += 1
        for queue_id in touched:
            await self._maybe_report(queue_id)

    async def _maybe_report(self, queue_id: str) -> None:
        counts = self._queues[queue_id]
        total = sum(counts.values())
        if self.notifications is None:
            return
        s = self.settings
        if total >= s.stats_threshold or counts["failed"] >= s.stats_failure_threshold:
            await self._notify(self.notifications.on_queue_stats(self._snapshot(queue_id)), "queue_stats")
            counts.clear()

    def _snapshot(self, queue_id: str) -> QueueStats:
        c = self._queues[queue_id]
        return QueueStats(queue_id=queue_id, succeeded=c["succeeded"], failed=c["failed"],
                          handed_off=c["handed_off"], ignored=c["ignored"], worker_id=self.worker_id)

    async def discarded(self, tasks: Sequence[Task]) -> None:
        count = len(tasks)
        self.discarded_total += count
        named = ", ".join(f"{t.type}:{t.key}" for t in tasks[:20]) + (" ..." if count > 20 else "")
        log.warning("%d unstored tasks exhausted their retries and were discarded (%d so far): %s",
                    count, self.discarded_total, named)
        if self.notifications is not None:
            await self._notify(self.notifications.on_tasks_discarded(count, self.discarded_total),
                               "tasks_discarded")

    async def error(self, error: BaseException, context: str) -> None:
        if self.notifications is not None:
            await self._notify(self.notifications.on_task_error(error, context), "task_error")

    async def final(self) -> None:
        if self.notifications is not None:
            stats = [self._snapshot(q) for q in sorted(self._queues)]
            await self._notify(self.notifications.on_final_stats(stats), "final_stats")

    async def _notify(self, call: object, what: str) -> None:
        try:
            await call  # type: ignore[misc]
        except Exception:
            log.exception("notification provider failed on %s", what)
