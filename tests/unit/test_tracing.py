"""Traces across tasks, with the OpenTelemetry SDK's in-memory exporter: one trace from a
producer's span through an executor, its child task, the child's retry and a two-step flow's
join, whose span links its steps' spans. And the check fails when the context is not carried."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tq_cloud import ExecutorActions, FlowConfig, JoinTarget, Task, TaskQueuesManager
from tq_cloud.core.extensions import NO_TRACING
from tq_cloud.testing import InMemoryStack
from tq_cloud.tracing import default_tracing
from tq_cloud.tracing.otel import OtelTracing


def shop() -> TaskQueuesManager:
    app = TaskQueuesManager()

    @app.task("orders", "place")
    async def place(task: Task, actions: ExecutorActions) -> None:
        actions.add_tasks([Task(type="notify", queue_id="orders", payload={"to": "a@b.c"})])
        actions.start_flow([{"type": "reserve", "queue_id": "orders", "payload": {"sku": sku}} for sku in "AB"],
                           FlowConfig(join=JoinTarget(type="ship", queue_id="orders")))

    @app.task("orders", "notify", retries=1)
    async def notify(task: Task, actions: ExecutorActions) -> None:
        if task.retry_count == 0:
            raise RuntimeError("smtp down")

    @app.task("orders", "reserve")
    async def reserve(task: Task, actions: ExecutorActions) -> None: ...

    @app.task("orders", "ship")
    async def ship(task: Task, actions: ExecutorActions) -> None: ...

    return app


async def traced_run(tracing_of: Any = OtelTracing) -> tuple[ReadableSpan, dict[str, list[ReadableSpan]]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    stack = InMemoryStack.create(shop(), tracing=tracing_of(provider))
    with provider.get_tracer("api").start_as_current_span("POST /orders") as root:
        await stack.handler.send(("orders", "place"), {"order": "o-1"})
    await stack.run_until_idle()
    spans: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        spans.setdefault(span.name, []).append(span)
    [producer] = spans.pop("POST /orders")
    assert producer.context.span_id == root.get_span_context().span_id
    return producer, spans


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def check_one_trace(producer: ReadableSpan, spans: dict[str, list[ReadableSpan]]) -> None:
    [place] = spans["tq.execute orders/place"]
    first, retry = sorted(spans["tq.execute orders/notify"], key=lambda s: s.attributes["tq.task.attempt"])
    reserves = spans["tq.execute orders/reserve"]
    [join] = spans["tq.execute orders/ship"]
    every = [place, first, retry, *reserves, join]
    assert {s.context.trace_id for s in every} == {producer.context.trace_id}, "one trace, from the producer"
    assert parent_of(place) == producer.context.span_id
    assert parent_of(first) == parent_of(retry) == place.context.span_id, "the child, and its retry, under the run"
    assert {parent_of(s) for s in reserves} == {place.context.span_id}
    assert {link.context.span_id for link in join.links} == {s.context.span_id for s in reserves}
    assert first.status.status_code is StatusCode.ERROR and first.status.description == "smtp down"
    assert [e.name for e in first.events] == ["exception"], "a failed attempt records its exception"
    assert retry.status.status_code is StatusCode.UNSET
    assert first.attributes["tq.task.id"] == retry.attributes["tq.task.id"]
    assert place.attributes["messaging.destination.name"] == "orders"


async def test_one_trace_from_the_producer_through_children_retries_and_a_flows_join() -> None:
    producer, spans = await traced_run()
    check_one_trace(producer, spans)


async def test_the_check_fails_when_the_context_is_not_carried() -> None:
    class Forgetful(OtelTracing):
        def carried(self, log_context: Any) -> Any:
            return log_context

    producer, spans = await traced_run(Forgetful)
    with pytest.raises(AssertionError, match="one trace"):
        check_one_trace(producer, spans)


async def test_without_opentelemetry_nothing_is_carried(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "opentelemetry" else real(name, *a))
    assert default_tracing() is NO_TRACING
    stack = InMemoryStack.create(shop())
    task = await stack.handler.send(("orders", "reserve"), {"sku": "A"})
    assert task.metadata.log_context is None


async def test_the_trace_carries_on_through_the_delay_lane_a_redrive_and_a_schedules_children() -> None:
    """A retry that waits in the delay lane, a failed task an operator re-drives: their runs stay
    in the producer's trace. A schedule's occurrence starts a trace of its own (no producer span),
    which its children carry on."""
    from datetime import timedelta

    app = TaskQueuesManager()
    broken = {"charge": True}

    @app.task("billing", "charge", retries=1, store_on_failure=True)
    async def charge(task: Task, actions: ExecutorActions) -> None:
        if broken["charge"]:
            raise RuntimeError("card declined")

    @app.task("billing", "report")
    async def report(task: Task, actions: ExecutorActions) -> None:
        actions.add_tasks([Task(type="mail", queue_id="billing", payload={})])

    @app.task("billing", "mail")
    async def mail(task: Task, actions: ExecutorActions) -> None: ...

    app.schedule("hourly", task=report, every=timedelta(hours=1))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    stack = InMemoryStack.create(app, tracing=OtelTracing(provider), delay_lane=True)
    with provider.get_tracer("api").start_as_current_span("POST /charge") as root:
        sent = await stack.handler.send(charge, {})
    await stack.run_until_idle()  # the first run, and its retry through the delay lane: both fail
    broken["charge"] = False
    assert [t.key for t in (await stack.handler.redrive_report([sent.key])).sent] == [sent.key]
    await stack.run_until_idle()
    await stack.run_until(stack.clock.now() + timedelta(hours=1))
    runs = [s for s in exporter.get_finished_spans() if s.name == "tq.execute billing/charge"]
    assert len(runs) == 3 and {s.context.trace_id for s in runs} == {root.get_span_context().trace_id}, \
        "the first run, its retry (via the delay lane) and the re-driven run"
    [occurrence] = [s for s in exporter.get_finished_spans() if s.name == "tq.execute billing/report"]
    [child] = [s for s in exporter.get_finished_spans() if s.name == "tq.execute billing/mail"]
    assert occurrence.context.trace_id != root.get_span_context().trace_id
    assert parent_of(child) == occurrence.context.span_id


def test_without_an_sdk_a_plain_run_opens_no_span_and_a_carried_context_still_passes_on() -> None:
    """No tracer provider set (OpenTelemetry's API alone, as in a function without ADOT): a run
    of a task that carries no context costs nothing, and one that carries a producer's context
    still hands it to the tasks its executor sends."""
    from opentelemetry import trace

    from tq_cloud.core.extensions import NO_SPAN

    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider), "a test set a global provider"
    tracing = OtelTracing()
    with tracing.execution([Task(id="a", type="t", queue_id="q", payload={})]) as span:
        assert span is NO_SPAN
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    carrying = Task(id="b", type="t", queue_id="q", payload={}, metadata={"log_context": {"traceparent": parent}})
    with tracing.execution([carrying]) as span:
        assert span is not NO_SPAN
        carried = tracing.carried(None) or {}
    assert carried["traceparent"].split("-")[1] == parent.split("-")[1], "the producer's trace goes on"
