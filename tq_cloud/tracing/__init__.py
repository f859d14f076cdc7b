"""Traces across tasks, with OpenTelemetry: the W3C trace context of the span current when a
task is sent travels in the task (its log context, as `traceparent`), and every run is a span
`tq.execute {queue}/{type}` whose parent is the sender's. Children, retries, re-drives, the
delay lane, schedules and flow steps carry it on; a flow's join span links its steps' spans.

The trace context rides in the log context, not a field of its own: a task written by a newer
producer stays readable by an older worker during a deploy, and the context shows in the run's
log records, beside the task's id. With `opentelemetry-api` absent (the `[otel]` extra), nothing
is imported and nothing is added: `default_tracing()` gives the neutral form.

Example:
    handler = TaskHandler(queue=queue, registry=app, storage=storage, locks=locks,
                          tracing=OtelTracing(tracer_provider))   # default: the global provider
"""

from __future__ import annotations

import importlib.util

from tq_cloud.core.extensions import NO_TRACING, Tracing


def default_tracing() -> Tracing:
    """OpenTelemetry's tracing when its API is installed (spans go to whatever provider the
    process set up, the ADOT Lambda layer's on AWS; without one they cost next to nothing),
    else none."""
    if importlib.util.find_spec("opentelemetry") is None:
        return NO_TRACING
    from tq_cloud.tracing.otel import OtelTracing

    return OtelTracing()
