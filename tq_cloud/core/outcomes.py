"""What one run of a batch produced, before post-processing commits it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic_core import to_json, to_jsonable_python

from tq_cloud.core.models import Task

if TYPE_CHECKING:
    from tq_cloud.flows.models import StartedFlow

MAX_RESULT_BYTES = 256 * 1024


@dataclass(slots=True)
class Outcome:
    task: Task
    succeeded: bool
    started_at: datetime
    finished_at: datetime
    error: str | None = None
    error_type: str | None = None
    details: dict[str, Any] | None = None
    retryable: bool = True
    retry_delay: float | None = None
    consume_attempt: bool = True

    @property
    def processing_ms(self) -> float:
        return (self.finished_at - self.started_at).total_seconds() * 1000


@dataclass(slots=True)
class RunResult:
    outcomes: list[Outcome] = field(default_factory=list)
    new_tasks: list[Task] = field(default_factory=list)
    ignored: list[Task] = field(default_factory=list)
    deferred: list[Task] = field(default_factory=list)
    handed_off: list[Task] = field(default_factory=list)
    flows: list[StartedFlow] = field(default_factory=list)

    @property
    def successes(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.succeeded]

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.succeeded]


def checked_result(result: Any) -> tuple[Any, str | None]:
    """Return the JSON form of a result, or None and why it was dropped (too large, not JSON)."""
    if result is None or isinstance(result, bool | int | float):
        return result, None
    try:
        jsonable = to_jsonable_python(result)
        size = len(to_json(jsonable))
    except Exception as exc:  # noqa: BLE001 - any serialisation failure means "drop and say why"
        return None, f"result is not JSON-serialisable: {exc}"
    if size > MAX_RESULT_BYTES:
        return None, f"result of {size} bytes exceeds the {MAX_RESULT_BYTES}-byte limit"
    return jsonable, None
