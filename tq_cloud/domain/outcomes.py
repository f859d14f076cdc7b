"""What one run of a batch produced, before the commit pipeline writes it.

Results and errors travel on the `Outcome`, never on the Task: the task stays as it was
delivered (its payload as sent), so every copy the framework writes (retries, failure rows,
re-drives) carries the payload exactly as the producer sent it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from tq_cloud.domain.task import Task

if TYPE_CHECKING:
    from tq_cloud.domain.flows import StartedFlow


class Verdict(StrEnum):
    """How an outcome is committed: decided from the outcome and the retry settings, and moved
    to a final failure if a write for the task turns out never to be possible."""

    EXECUTED = "executed"
    RETRY = "retry"
    FAILED = "failed"  # final, stored
    DISCARDED = "discarded"  # final, not stored (counted and announced)
    IGNORED = "ignored"  # no executor for its type (stored with the reason)
    CANCELLED = "cancelled"  # stopped by `handler.cancel` (stored with the reason)

    @property
    def is_final(self) -> bool:
        return self is not Verdict.RETRY


@dataclass(slots=True)
class Outcome:
    task: Task
    succeeded: bool
    started_at: datetime
    finished_at: datetime
    result: Any = None
    result_dropped: str | None = None
    error: str | None = None
    error_type: str | None = None
    details: dict[str, Any] | None = None
    retryable: bool = True
    for_good: bool = False
    """The executor failed the task for good (`fail(retry=False)`, NonRetryableError): stored
    as failed whatever its executor's `store_on_failure`."""
    retry_delay: float | None = None
    consume_attempt: bool = True
    cancel_reason: str | None = None
    """Set when the task ends cancelled: its executor stopped on a cancel (TaskCancelledError),
    or its attempt found a cancel asked before it started."""
    verdict: Verdict | None = None
    retry: Task | None = None
    trace: str | None = None
    """The W3C traceparent of the run's span, when the run was traced (a flow's join links the
    spans of its steps through it)."""

    @property
    def processing_ms(self) -> float:
        return (self.finished_at - self.started_at).total_seconds() * 1000

    @property
    def key(self) -> str:
        return self.task.key


@dataclass(slots=True)
class RunResult:
    """`superseded`: copies of a task that a more advanced copy in the same batch (or the
    store) already accounts for; they need no commit of their own. `committed_rows`: the final
    rows of stored tasks redelivered after their commit (their projections are sent again, in
    case the first send was lost)."""

    outcomes: list[Outcome] = field(default_factory=list)
    new_tasks: list[Task] = field(default_factory=list)
    handed_off: list[Task] = field(default_factory=list)
    superseded: list[Task] = field(default_factory=list)
    committed_rows: list[Task] = field(default_factory=list)
    flows: list[StartedFlow] = field(default_factory=list)

    @property
    def successes(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.succeeded]

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.succeeded]
