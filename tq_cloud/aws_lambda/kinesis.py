"""The worker Lambda: a Kinesis batch handler with partial batch responses.

    handler = kinesis_handler(app)

It returns `{"batchItemFailures": [...]}` naming only records whose effects were not committed
(redelivered by Lambda from the first one named). Executor failures are not among them: the
framework retries those itself. Near the invocation's deadline it stops taking work and names
the records it did not start; handed-off async tasks get until the deadline, then are failed
with a retry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from tq_cloud.aws_lambda.runtime import LambdaRuntime
from tq_cloud.backends.aws.kinesis import decode_lambda_record
from tq_cloud.core.codec import UndecodableRecord
from tq_cloud.core.models import Task
from tq_cloud.core.registry import TaskQueuesManager

if TYPE_CHECKING:
    from tq_cloud.backends.aws.settings import AwsSettings

log = logging.getLogger("tq_cloud.lambda")

LambdaHandler = Callable[[Mapping[str, Any], Any], dict[str, Any]]


class KinesisBatchHandler:
    def __init__(self, runtime: LambdaRuntime, *, safety_margin_ms: int = 10_000, chunk_size: int = 100,
                 commit_retries: int = 2) -> None:
        self.runtime = runtime
        self.safety_margin_ms = safety_margin_ms
        self.chunk_size = chunk_size
        self.commit_retries = commit_retries

    def __call__(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        self.runtime.observability()
        try:
            return self.runtime.run(self.handle(event, context))
        finally:
            if self.runtime.metrics is not None:
                self.runtime.metrics.flush_metrics()

    def _time_left_ms(self, context: Any) -> float:
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        return float(remaining()) if callable(remaining) else float("inf")

    async def handle(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        stack = await self.runtime.stack()
        records = list(event.get("Records", []))
        decoded = [(str(r.get("kinesis", {}).get("sequenceNumber", "?")), decode_lambda_record(r)) for r in records]
        failed: list[str] = []
        for start in range(0, len(decoded), self.chunk_size):
            chunk = decoded[start:start + self.chunk_size]
            if self._time_left_ms(context) < self.safety_margin_ms:
                log.warning("%d records left unstarted near the deadline; reported for redelivery",
                            len(decoded) - start)
                failed += [seq for seq, _ in decoded[start:]]
                break
            failed += await self._process(stack.handler, chunk, context)
        manager = stack.handler.async_manager
        if manager is not None:
            budget = max(self._time_left_ms(context) - self.safety_margin_ms / 2, 0.0)
            if budget != float("inf"):
                await manager.settle(stack.handler.clock.now() + timedelta(milliseconds=budget))
        return {"batchItemFailures": [{"itemIdentifier": seq} for seq in failed]}

    async def _process(self, handler: Any, chunk: list[tuple[str, Any]], context: Any) -> list[str]:
        """Process a chunk; if its commit fails, retry the uncommitted records one by one (while
        time allows), so one failing write does not send the whole chunk back to Kinesis.
        Returns the sequence numbers still not committed."""
        pending = chunk
        for attempt in range(1 + self.commit_retries):
            if attempt and self._time_left_ms(context) < self.safety_margin_ms:
                break
            groups = [pending] if attempt == 0 else [[r] for r in pending]
            still: list[tuple[str, Any]] = []
            for group in groups:
                report = await handler.process_records([r for _, r in group], "lambda")
                self._metrics(report)
                uncommitted = {t.key for t in report.not_committed} | {u.record_id for u in report.unrecorded}
                still += [(seq, rec) for seq, rec in group if _key(seq, rec) in uncommitted]
            pending = still
            if not pending:
                break
        return [seq for seq, _ in pending]

    def _metrics(self, report: Any) -> None:
        metrics = self.runtime.metrics
        if metrics is None:
            return
        from aws_lambda_powertools.metrics import MetricUnit

        metrics.add_metric(name="TasksSucceeded", unit=MetricUnit.Count, value=report.succeeded)
        metrics.add_metric(name="TasksFailed", unit=MetricUnit.Count, value=report.failed)
        metrics.add_metric(name="RecordsNotCommitted", unit=MetricUnit.Count,
                           value=len(report.not_committed) + len(report.unrecorded))


def _key(sequence: str, record: Task | UndecodableRecord) -> str:
    return record.record_id if isinstance(record, UndecodableRecord) else (record.id or sequence)


def kinesis_handler(app: TaskQueuesManager, aws: AwsSettings | None = None, *, safety_margin_ms: int = 10_000,
                    chunk_size: int = 100, commit_retries: int = 2, **handler_options: Any) -> LambdaHandler:
    """The worker Lambda's handler for `app`; `aws` defaults to the TQ_* environment, and
    `handler_options` go to TaskHandler (settings=HandlerSettings(...), lifecycle providers...)."""
    runtime = LambdaRuntime(app, aws, **handler_options)
    return KinesisBatchHandler(runtime, safety_margin_ms=safety_margin_ms, chunk_size=chunk_size,
                               commit_retries=commit_retries)
