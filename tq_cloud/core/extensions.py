"""What the pipeline asks of the features plugged into it, as protocols, so the engine never
imports a feature: the assembly (`tq_cloud.assembly.handler`) hands in the async hand-off
manager, the flow starter, debounce's send screen, the cancelling of flows and tracing. Flow
control's gate, which speaks of executors and recorders, is in `admission`; the built-in
executors of flows and schedules are a `BuiltinExecutors` map, in `executors`.

A handler built without a feature gets the neutral form (no screen, no tracing, an open gate, no
built-ins), and the pipeline behaves as if the feature's options were never set."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import Any, Protocol

from tq_cloud.domain.flows import FlowConfig, FlowStep, StartedFlow
from tq_cloud.domain.outcomes import Outcome
from tq_cloud.domain.task import FlowMeta, Task
from tq_cloud.ports.barrier import BarrierSnapshot, FlowBarrierProvider


class Handoff(Protocol):
    """Takes over a task that outlived its executor's `handoff_timeout` (the async task manager)."""

    def handoff(self, task: Task, job: asyncio.Future[Any], finish: Callable[[], Awaitable[None]],
                timeout: float | None = None) -> bool: ...


class FlowStarting(Protocol):
    """Builds a flow's tasks for `actions.start_flow` (the flows feature)."""

    def start(self, *, flow_id: str, steps: Sequence[FlowStep | Mapping[str, Any]], config: FlowConfig,
              log_context: Mapping[str, str] | None) -> StartedFlow: ...


class FlowClosing(Protocol):
    """What `handler.cancel_flow` needs of the flows feature: the barriers, and the work that
    follows a flow closed by cancel (its sentinel, its items' expiry, its join's events)."""

    @property
    def barriers(self) -> FlowBarrierProvider: ...

    async def cancelled(self, snapshot: BarrierSnapshot, meta: FlowMeta | None) -> None: ...


class SendScreen(Protocol):
    """Marks tasks at send before they are routed, and takes the mark back when their send
    fails (flow control's debounce: each task becomes its key's latest)."""

    async def note(self, tasks: Sequence[Task], skip: Collection[int], now: datetime) -> list[Task]: ...

    async def undo(self, tasks: Sequence[Task], now: datetime) -> None: ...


class NoScreen:
    """Sends every task as given."""

    async def note(self, tasks: Sequence[Task], skip: Collection[int], now: datetime) -> list[Task]:
        return list(tasks)

    async def undo(self, tasks: Sequence[Task], now: datetime) -> None:
        return None


NO_SCREEN = NoScreen()


class RunSpan(Protocol):
    """The span of one run, open while the executor runs."""

    @property
    def traceparent(self) -> str | None: ...

    def ended(self, outcome: Outcome | None, error: BaseException | None) -> None:
        """Mark how the run ended: a failure records its exception and an error status."""
        ...


class Tracing(Protocol):
    """Trace context across tasks (the tracing feature, OpenTelemetry): put the current span's
    context on each task sent, and run each task in a span whose parent is the sender's."""

    def carried(self, log_context: Mapping[str, str] | None) -> Mapping[str, str] | None:
        """The task's log context with the current span's W3C trace context in it (unchanged
        without a current span)."""
        ...

    def execution(self, tasks: Sequence[Task], links: Sequence[str] = ()) -> AbstractContextManager[RunSpan]:
        """The span of a run of `tasks` (one task, or a batch executor's call), linked to the
        spans `links` name (traceparents)."""
        ...


class _NoSpan:
    traceparent = None

    def ended(self, outcome: Outcome | None, error: BaseException | None) -> None:
        return None


class NoTracing:
    """Carries nothing and opens no span: a pipeline without tracing (OpenTelemetry absent)."""

    def carried(self, log_context: Mapping[str, str] | None) -> Mapping[str, str] | None:
        return log_context

    def execution(self, tasks: Sequence[Task], links: Sequence[str] = ()) -> AbstractContextManager[RunSpan]:
        return nullcontext(NO_SPAN)


NO_SPAN = _NoSpan()
NO_TRACING = NoTracing()
