"""The flow barrier port: counts a flow's final step outcomes, once each.

Contract (the reference's, extended): a step result is recorded only if its index is new
(set-if-absent), `remaining` drops by the number of new indices, and a flow closes exactly once
(complete, aborted or timed out). `join_dispatched` lets a redelivered batch finish a join
dispatch that a crash interrupted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from tq_cloud.flows.models import FlowStepResult


class BarrierState(StrEnum):
    ACTIVE = "active"
    COMPLETE = "complete"
    ABORTED = "aborted"
    TIMED_OUT = "timed_out"


@dataclass(frozen=True, slots=True)
class BarrierDecrementResult:
    """`remaining`: 0 = met by this call, >0 = steps pending, -1 = closed before (or unknown).
    `closed` is True only for the call that closed the barrier (met, or aborted by a failure)."""

    remaining: int
    state: BarrierState | None = None
    join_dispatched: bool = False
    closed: bool = False


@dataclass(frozen=True, slots=True)
class BarrierSnapshot:
    flow_id: str
    total_steps: int
    remaining: int
    state: BarrierState
    started_at: datetime
    join_dispatched: bool


class FlowBarrierProvider(Protocol):
    async def init_barrier(self, flow_id: str, total_steps: int, started_at: datetime,
                           deadline: datetime | None = None) -> None:
        """Create the barrier if absent; a second call changes nothing. `deadline` (the flow's
        timeout) bounds how long its items must be kept."""
        ...

    async def batch_decrement_and_check(
        self, flow_id: str, results: Sequence[FlowStepResult], *, abort_on_failure: bool = False
    ) -> BarrierDecrementResult:
        """Record new results and decrement, atomically. With `abort_on_failure`, a new failed
        result closes an active flow as ABORTED (after its result is recorded)."""
        ...

    async def get_step_results(self, flow_id: str) -> list[FlowStepResult]:
        """Recorded results sorted by step index; [] for an unknown flow."""
        ...

    async def close(self, flow_id: str, state: BarrierState) -> bool:
        """Close an ACTIVE flow as ABORTED or TIMED_OUT; True only for the call that closed it."""
        ...

    async def get(self, flow_id: str) -> BarrierSnapshot | None:
        ...

    async def mark_join_dispatched(self, flow_id: str) -> None:
        ...
