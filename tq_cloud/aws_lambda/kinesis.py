"""The worker Lambda: a Kinesis batch handler with partial batch responses.

    handler = kinesis_handler(app)

It returns `{"batchItemFailures": [...]}` naming only records whose effects were not committed
(redelivered by Lambda from the first one named); in a batch holding an aggregated record, the
uncommitted tasks are put back on the stream instead, so the committed ones are not delivered
again (remainders.py). Executor failures are not among them: the
framework retries those itself. Near the invocation's deadline it stops taking work and names
the records it did not start; handed-off async tasks get until the deadline, then are failed
with a retry. A handed-off task whose late commit failed is named too (redelivered, never
dropped), and lifecycle events still in flight are delivered before it returns: Lambda freezes
the environment afterwards, so nothing may be left running.

Claims (with `TQ_DISTRIBUTED_CLAIMS=true`) are owned by the invocation (its request id) and
last no longer than its remaining time, so a killed invocation never holds a task for longer.

Why not Powertools' `process_partial_response`: it commits per record, while tq-cloud commits
a batch's effects together (one barrier call per flow, one write per store transition), then
names only the records whose effects were not committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from tq_cloud.aws_lambda.delay_forwarder import forward_due, is_sqs_event
from tq_cloud.aws_lambda.metrics import publish_tally
from tq_cloud.aws_lambda.remainders import Remainders, record_key, uncommitted_records
from tq_cloud.aws_lambda.runtime import LambdaRuntime, Runtime
from tq_cloud.backends.aws.kinesis import decode_lambda_record
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.domain.task import Task
from tq_cloud.errors import ConfigurationError
from tq_cloud.ids import new_id

if TYPE_CHECKING:
    from tq_cloud.backends.aws.settings import AwsSettings

log = logging.getLogger("tq_cloud.lambda")

LambdaHandler = Callable[[Mapping[str, Any], Any], dict[str, Any]]


class KinesisBatchHandler:
    def __init__(self, runtime: Runtime, *, safety_margin_ms: int = 10_000, chunk_size: int = 100,
                 commit_retries: int = 2) -> None:
        self.runtime = runtime
        self.safety_margin_ms = safety_margin_ms
        self.chunk_size = chunk_size
        self.commit_retries = commit_retries
        self.last = Remainders()
        """What the last batch's uncommitted tasks became (the records named, those put back)."""

    def __call__(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        self.runtime.observability()
        try:
            return self.runtime.run(self.handle(event, context))
        finally:
            if self.runtime.metrics is not None:
                self.runtime.metrics.flush_metrics()

    def new_container(self) -> KinesisBatchHandler:
        """The same handler in a fresh container (its own runtime, clients and async manager),
        as Lambda runs concurrent batches in separate containers."""
        runtime = self.runtime
        if not isinstance(runtime, LambdaRuntime):
            raise TypeError("only a LambdaRuntime handler can be cloned into a new container")
        options = dict(runtime.handler_options)
        manager = options.get("async_manager")
        if manager is not None:
            options["async_manager"] = type(manager)(manager.options, clock=manager.clock)
        return KinesisBatchHandler(LambdaRuntime(runtime.app, runtime.aws, **options),
                                   safety_margin_ms=self.safety_margin_ms, chunk_size=self.chunk_size,
                                   commit_retries=self.commit_retries)

    def _time_left_ms(self, context: Any) -> float:
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        return float(remaining()) if callable(remaining) else float("inf")

    async def handle(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        """A batch of the stream, or of the delay lane (SQS) whose due tasks go to the stream."""
        stack = await self.runtime.stack()
        handler = stack.handler
        records = list(event.get("Records", []))
        if is_sqs_event(event):
            failed_messages = await forward_due(handler, records)
            await self._drain(handler, context)
            return {"batchItemFailures": [{"itemIdentifier": m} for m in failed_messages]}
        self._iterator_age(records, handler.clock.now().timestamp() * 1000)
        decoded = [(str(r.get("kinesis", {}).get("sequenceNumber", "?")), task)
                   for r in records for task in decode_lambda_record(r)]
        owner = f"lambda:{getattr(context, 'aws_request_id', None) or new_id()}"
        left = self._time_left_ms(context)
        _check_stale_after(handler.settings.stale_after, left)
        claim_ttl = None if left == float("inf") else timedelta(milliseconds=left)
        uncommitted: set[str] = set()
        for start in range(0, len(decoded), self.chunk_size):
            chunk = decoded[start:start + self.chunk_size]
            left_now = self._time_left_ms(context)
            if left_now < self.safety_margin_ms:
                log.warning("%d tasks left unstarted near the deadline; reported for redelivery",
                            len(decoded) - start)
                uncommitted |= {record_key(seq, rec) for seq, rec in decoded[start:]}
                break
            uncommitted |= await self._process(handler, chunk, context, owner, claim_ttl, left_now)
        budget = max(self._time_left_ms(context) - self.safety_margin_ms / 2, 0.0)
        if handler.async_manager is not None and budget != float("inf"):
            await handler.async_manager.settle(handler.clock.now() + timedelta(milliseconds=budget))
        uncommitted |= {t.key for t in handler.take_async_uncommitted()}
        left = self._time_left_ms(context) - self.safety_margin_ms / 2
        self.last = await uncommitted_records(handler, decoded, uncommitted,
                                              time_left_s=None if left == float("inf") else max(left, 0.0) / 1000)
        await self._drain(handler, context)
        return {"batchItemFailures": [{"itemIdentifier": seq} for seq in self.last.named]}

    async def _drain(self, handler: Any, context: Any) -> None:
        """Deliver lifecycle events still in flight, within the time left."""
        left = self._time_left_ms(context) - self.safety_margin_ms / 4
        try:
            await asyncio.wait_for(handler.lifecycle.drain(), None if left == float("inf") else max(left, 0) / 1000)
        except TimeoutError:
            log.error("lifecycle events still undelivered at the invocation's deadline")

    async def _process(self, handler: Any, chunk: list[tuple[str, Any]], context: Any, owner: str,
                       claim_ttl: timedelta | None, left_ms: float) -> set[str]:
        """Process a chunk; if its commit fails, retry the uncommitted records one by one (while
        time allows), so one failing write does not send the whole chunk back to Kinesis.
        Returns the keys of the tasks still not committed. Each run gets the time left now
        (its leases end with the invocation; no task starts whose time limit passes it), and
        the whole invocation's time as its budget."""
        pending = chunk
        for attempt in range(1 + self.commit_retries):
            if attempt:
                left_ms = self._time_left_ms(context)
                if left_ms < self.safety_margin_ms:
                    break
            groups = [pending] if attempt == 0 else [[r] for r in pending]
            still: list[tuple[str, Any]] = []
            held: set[tuple[str, str, str]] = set()
            for group in groups:
                if attempt and _ordered_key(handler, group[0][1]) in held:
                    still += group  # an earlier task of its ordered key is not committed: it waits its turn
                    continue
                left = None if claim_ttl is None else timedelta(milliseconds=left_ms)
                report = await handler.process_records([r for _, r in group], owner, left, budget=claim_ttl)
                self._metrics(report)
                uncommitted = {t.key for t in report.not_committed} | {u.record_id for u in report.unrecorded}
                again = [(seq, rec) for seq, rec in group if record_key(seq, rec) in uncommitted]
                held |= {k for _, rec in again if (k := _ordered_key(handler, rec)) is not None}
                still += again
            pending = still
            if not pending:
                break
        return {record_key(seq, rec) for seq, rec in pending}

    def _metrics(self, report: Any) -> None:
        metrics = self.runtime.metrics
        if metrics is None:
            return
        from aws_lambda_powertools.metrics import MetricUnit

        metrics.add_metric(name="TasksSucceeded", unit=MetricUnit.Count, value=report.succeeded)
        metrics.add_metric(name="TasksFailed", unit=MetricUnit.Count, value=report.failed)
        metrics.add_metric(name="TasksExhausted", unit=MetricUnit.Count, value=report.exhausted)
        metrics.add_metric(name="RecordsNotCommitted", unit=MetricUnit.Count,
                           value=len(report.not_committed) + len(report.unrecorded))
        if report.tally:
            publish_tally(report.tally, self.runtime.metrics_namespace, self.runtime.service)

    def _iterator_age(self, records: list[Any], now_ms: float) -> None:
        """How long the oldest record of the batch waited in the stream (as Lambda's own
        IteratorAge, but beside the worker's other figures, and per invocation)."""
        metrics = self.runtime.metrics
        arrivals = [float(a) for r in records if (a := r.get("kinesis", {}).get("approximateArrivalTimestamp"))]
        if metrics is None or not arrivals:
            return
        from aws_lambda_powertools.metrics import MetricUnit

        metrics.add_metric(name="IteratorAgeMs", unit=MetricUnit.Milliseconds,
                           value=max(0.0, round(now_ms - min(arrivals) * 1000, 3)))


def _ordered_key(handler: Any, record: Any) -> tuple[str, str, str] | None:
    """The ordered key a record's task counts under (its executor has `ordered=True`), if any."""
    if not isinstance(record, Task):
        return None
    executor = handler.registry.get_executor(record.queue_id, record.type)
    if executor is None or not executor.options.ordered:
        return None
    return record.queue_id, record.type, record.partition_key or record.key


def _check_stale_after(stale_after: timedelta, left_ms: float) -> None:
    """A run may last as long as the invocation: stale recovery must wait longer than that,
    or it would re-send a task whose run still holds its lease."""
    if left_ms != float("inf") and stale_after.total_seconds() * 1000 <= left_ms:
        raise ConfigurationError(
            f"stale_after ({stale_after}) must be longer than the function's timeout "
            f"({left_ms / 1000:.0f} s left in this invocation): raise HandlerSettings.stale_after or lower Timeout")


def kinesis_handler(app: TaskQueuesManager, aws: AwsSettings | None = None, *, safety_margin_ms: int = 10_000,
                    chunk_size: int = 100, commit_retries: int = 2, **handler_options: Any) -> LambdaHandler:
    """The worker Lambda's handler for `app`; `aws` defaults to the TQ_* environment, and
    `handler_options` go to TaskHandler (settings=HandlerSettings(...), lifecycle providers...).

    Example:
        handler = kinesis_handler(app, settings=HandlerSettings(history=True))
    """
    runtime = LambdaRuntime(app, aws, **handler_options)
    return KinesisBatchHandler(runtime, safety_margin_ms=safety_margin_ms, chunk_size=chunk_size,
                               commit_retries=commit_retries)
