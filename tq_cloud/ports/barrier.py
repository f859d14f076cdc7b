"""The flow barrier port: counts a flow's final step outcomes, once each.

Contract: a step result is recorded only if its index is new (set-if-absent, first write
wins) and counted exactly once however often it is reported; a flow closes exactly once
(complete, aborted or timed out). `join_dispatched` lets a redelivered batch finish a join
dispatch that a crash interrupted. A report's cost must not grow with the flow: no backend
reads every recorded step to count one more, and the join reads the results by reference,
page by page (`step_results_page`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from tq_cloud.domain.flows import FlowStepResult, StepCounts


class BarrierState(StrEnum):
    ACTIVE = "active"
    COMPLETE = "complete"
    ABORTED = "aborted"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    """Closed by `handler.cancel_flow`: it has no join (closing marks it dispatched)."""


@dataclass(frozen=True, slots=True)
class BarrierDecrementResult:
    """`remaining`: 0 = met by this call, >0 = steps pending (a backend may know only a lower
    bound), -1 = closed before, or an unknown flow. `closed` is True only for the call that
    closed the barrier (met, or aborted by a failure)."""

    remaining: int
    state: BarrierState | None = None
    join_dispatched: bool = False
    closed: bool = False


@dataclass(frozen=True, slots=True)
class BarrierSnapshot:
    flow_id: str
    total_steps: int
    remaining: int
    """Steps not yet counted (an upper bound on DynamoDB, which counts in shards)."""
    state: BarrierState
    started_at: datetime
    join_dispatched: bool
    deadline: datetime | None = None
    """The flow's timeout, as the first start of the flow set it (a parent run again later
    starts the same flow with later times, which the barrier ignores)."""


@dataclass(frozen=True, slots=True)
class FlowPage:
    flows: list[BarrierSnapshot]
    cursor: str | None = None
    """Where the next page starts; None when this page is the last."""


class FlowBarrierProvider(Protocol):
    async def init_barrier(self, flow_id: str, total_steps: int, started_at: datetime,
                           deadline: datetime | None = None) -> None:
        """Create the barrier if absent; a second call changes nothing. `deadline` (the flow's
        timeout) bounds how long its items must be kept."""
        ...

    async def batch_decrement_and_check(
        self, flow_id: str, results: Sequence[FlowStepResult], *, abort_on_failure: bool = False,
        abort_steps: Collection[int] = (), keep_until: datetime | None = None,
    ) -> BarrierDecrementResult:
        """Record new results and count each step once. A recorded failure (this report's, or
        an earlier one of the same step: a replay after a crash) closes an active flow as
        ABORTED when `abort_on_failure` or its index is in `abort_steps`. `keep_until` (the
        later of the flow's start and its deadline) bounds how long step items are kept; None
        (a flow without a deadline) keeps them until `retire` after the close. A
        report to an unknown flow (never started, or expired) counts nothing and returns -1; it
        may leave its results behind, to expire."""
        ...

    async def retire(self, flow_id: str, after: int = -1, limit: int = 100) -> int | None:
        """After a flow without a deadline closed: give its items (kept while it was active)
        their expiry, the shards' first, then the steps' after index `after`, at most `limit`;
        the last step index done, or None once every item has one. Idempotent."""
        ...

    async def step_results_page(self, flow_id: str, after: int = -1, limit: int = 100) -> list[FlowStepResult]:
        """Recorded results of steps after index `after`, by index, at most `limit`; [] for
        an unknown flow."""
        ...

    async def get_step_results(self, flow_id: str) -> list[FlowStepResult]:
        """Every recorded result, by step index (all pages; for small flows and tools)."""
        ...

    async def step_counts(self, flow_id: str) -> StepCounts:
        """How many steps were counted, by status, without reading their results."""
        ...

    async def close(self, flow_id: str, state: BarrierState) -> bool:
        """Close an ACTIVE flow as ABORTED, TIMED_OUT or CANCELLED; True only for the call that
        closed it. CANCELLED marks the join dispatched in the same write: a cancelled flow has
        none, and a step reported after the close must not send one."""
        ...

    async def get(self, flow_id: str) -> BarrierSnapshot | None:
        ...

    async def mark_join_dispatched(self, flow_id: str) -> None:
        ...

    async def list_flows(self, limit: int = 50, cursor: str | None = None) -> FlowPage:
        """Flows, active and closed (until they expire), newest start first: from a sparse
        index on DynamoDB, never a scan."""
        ...
