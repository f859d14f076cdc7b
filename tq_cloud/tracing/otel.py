"""The Tracing port on OpenTelemetry's API (imported only here, only when installed)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tq_cloud.core.extensions import NO_SPAN, RunSpan
from tq_cloud.domain.outcomes import Outcome
from tq_cloud.domain.task import Task

CONTEXT_KEYS = ("traceparent", "tracestate")
MAX_LINKS = 128
"""OpenTelemetry SDK's default limit of links per span: a join of more steps links the first."""


class OtelRunSpan:
    def __init__(self, span: Any, propagator: TraceContextTextMapPropagator) -> None:
        self.span = span
        self.propagator = propagator

    @property
    def traceparent(self) -> str | None:
        """Asked only for flow steps (their join links them): not worked out for every run."""
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=trace.set_span_in_context(self.span))
        return carrier.get("traceparent")

    def ended(self, outcome: Outcome | None, error: BaseException | None) -> None:
        if outcome is None or outcome.succeeded or outcome.cancel_reason is not None:
            return
        if error is not None:
            self.span.record_exception(error)
        self.span.set_status(Status(StatusCode.ERROR, outcome.error))
        self.span.set_attribute("tq.retried", outcome.retryable and not outcome.for_good)


class OtelTracing:
    """Example:
        from opentelemetry.sdk.trace import TracerProvider

        handler = TaskHandler(queue=queue, registry=app, storage=storage, locks=locks,
                              tracing=OtelTracing(TracerProvider()))
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        self.tracer = trace.get_tracer("tq_cloud", tracer_provider=tracer_provider)
        self.propagator = TraceContextTextMapPropagator()
        self.given = tracer_provider is not None

    def carried(self, log_context: Mapping[str, str] | None) -> Mapping[str, str] | None:
        if not trace.get_current_span().get_span_context().is_valid:
            return log_context
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier)
        kept = {k: v for k, v in (log_context or {}).items() if k not in CONTEXT_KEYS}
        return {**kept, **carrier}

    def _span_context(self, log_context: Mapping[str, str] | None) -> Any:
        context = self.propagator.extract(dict(log_context or {}))
        span_context = trace.get_current_span(context).get_span_context()
        return span_context if span_context.is_valid else None

    def execution(self, tasks: Sequence[Task], links: Sequence[str] = ()) -> AbstractContextManager[RunSpan]:
        if not links and not self.given and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider) \
                and not any(t.metadata.log_context for t in tasks):
            return nullcontext(NO_SPAN)  # no SDK records spans, and no context to pass on: nothing to do
        return self._execution(tasks, links)

    @contextmanager
    def _execution(self, tasks: Sequence[Task], links: Sequence[str]) -> Iterator[RunSpan]:
        first = tasks[0]
        single = len(tasks) == 1
        parent = self.propagator.extract(dict(first.metadata.log_context or {})) if single else None
        linked = [*links, *([] if single else [t.metadata.log_context.get("traceparent", "")
                                               for t in tasks if t.metadata.log_context])]
        span_links = [Link(c) for c in (self._span_context({"traceparent": tp}) for tp in linked[:MAX_LINKS]) if c]
        attributes: dict[str, Any] = {
            "messaging.system": "tq-cloud", "messaging.operation": "process",
            "messaging.destination.name": first.queue_id, "tq.task.type": first.type,
            "messaging.batch.message_count": len(tasks)}
        if single:
            attributes |= {"tq.task.id": first.key, "tq.task.attempt": first.retry_count + 1,
                           "tq.partition_key": first.partition_key or ""}
            if first.flow_meta is not None:
                attributes["tq.flow.id"] = first.flow_meta.flow_id
        with self.tracer.start_as_current_span(
                f"tq.execute {first.queue_id}/{first.type}", context=parent, kind=SpanKind.CONSUMER,
                links=span_links, attributes=attributes, record_exception=False,
                set_status_on_exception=False) as span:
            yield OtelRunSpan(span, self.propagator)
