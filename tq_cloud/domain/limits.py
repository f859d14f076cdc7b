"""The limits a task must respect, and the bounded forms of what the framework records.

Every limit is checked where the caller can first know it (`add_tasks`, `actions.*`). What can
only be known at commit (an executed row with its result over the item limit, a huge error
text) is bounded here, so that the row recording a failure can always be written: error texts
are truncated, details made JSON-safe and capped, and as a last resort the payload itself is
replaced by a note saying how large it was.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from pydantic_core import to_json, to_jsonable_python

from tq_cloud.domain.task import Task, TaskStatus
from tq_cloud.errors import InvalidDelayError

MAX_ID_CHARS = 256
"""Ids and partition keys: Kinesis allows 256 characters in a partition key, the default key."""
RESERVED_ID_PREFIX = "_tq#"
"""Ids the stores keep for their own bookkeeping (the tasks table's `_tq#meta#buckets`): no task
may have one, so no task can overwrite or be lost as such an item."""
MAX_ERROR_CHARS = 4096
MAX_DETAILS_BYTES = 8192
ROW_HEADROOM_BYTES = 16 * 1024
"""A stored task must leave this much room under the item limit for its execution stats
(a bounded error and details), so that its failure can always be recorded."""
MAX_RESULT_BYTES = 256 * 1024
MAX_DELAY = timedelta(days=366)
"""The longest delay, deferral or timeout a caller may give (a computed Retry-After of 1e12 s
is a bug to report where it is made, not a date past the year 9999 at commit)."""


def checked_delay(seconds: float, what: str) -> float:
    """`seconds` if it is a finite number from 0 to MAX_DELAY, else InvalidDelayError saying so
    (raised in the caller's own call: an executor's error fails only its task)."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds) \
            or not 0 <= seconds <= MAX_DELAY.total_seconds():
        raise InvalidDelayError(f"{what}: {seconds!r} is not a delay; give a finite number of seconds "
                                f"from 0 to {MAX_DELAY.total_seconds():.0f} ({MAX_DELAY.days} days)")
    return float(seconds)


def clamped_delay(seconds: float | None) -> float:
    """A delay the commit can always write: NaN and negatives as 0, the rest at most MAX_DELAY."""
    if seconds is None or not seconds > 0:
        return 0.0
    return min(float(seconds), MAX_DELAY.total_seconds())


def bounded_error(text: str | None) -> str | None:
    """At most MAX_ERROR_CHARS, saying how long it was (bounding twice changes nothing)."""
    if text is None or len(text) <= MAX_ERROR_CHARS:
        return text
    return text[:MAX_ERROR_CHARS - 64] + f"... (truncated, {len(text)} characters in all)"


def json_safe_details(details: dict[str, Any] | None) -> dict[str, Any] | None:
    """Details as JSON values (anything else as its repr), at most MAX_DETAILS_BYTES."""
    if not details:
        return details
    safe = to_jsonable_python(details, fallback=repr)
    size = len(to_json(safe))
    if size <= MAX_DETAILS_BYTES:
        return dict(safe)
    return {"_truncated": f"details of {size} bytes exceed the {MAX_DETAILS_BYTES}-byte limit",
            "keys": sorted(map(str, details))[:50]}


def checked_result(result: Any) -> tuple[Any, str | None]:
    """Return the JSON form of a result, or None and why it was dropped (too large, not JSON)."""
    if result is None or isinstance(result, bool | int | float):
        return result, None
    try:
        jsonable = to_jsonable_python(result)
        size = len(to_json(jsonable))
    except Exception as exc:  # noqa: BLE001 - any serialisation failure means "drop and say why"
        return None, f"result is not JSON-serialisable: {str(exc)[:300]}"
    if size > MAX_RESULT_BYTES:
        return None, f"result of {size} bytes exceeds the {MAX_RESULT_BYTES}-byte limit"
    return jsonable, None


def describe_validation_error(exc: ValidationError) -> str:
    """What is wrong, field by field, without quoting the values (payloads may hold secrets)."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(map(str, error.get("loc", ()))) or "(root)"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return f"{exc.error_count()} validation error(s) for {exc.title}: " + "; ".join(parts)


def failure_row(task: Task, status: TaskStatus, at: datetime, reason: str | None, max_bytes: int,
                **stats: Any) -> Task:
    """The row that records a final failure (or an ignored task), bounded so that it fits
    `max_bytes`: error and details bounded, result dropped, and, if the task alone is still
    too large, the payload replaced by a note."""
    current = task.execution_stats
    update: dict[str, Any] = {"last_error": bounded_error(reason if reason is not None else current.last_error),
                              "details": json_safe_details(current.details) or {}, **stats}
    row = task.model_copy(update={
        "status": status, "updated_at": at, "force_store": True, "execution_result": None,
        "execution_stats": current.model_copy(update=update)})
    try:
        size = len(row.model_dump_json(exclude_defaults=True))
    except (ValueError, TypeError):  # a payload that is not JSON cannot be kept either
        size = max_bytes + 1
    if size <= max_bytes:
        return row
    note = {"_tq_payload_dropped": f"the task did not fit the store ({size} bytes); payload not kept"}
    kept = row.execution_stats.model_copy(update={"not_redrivable": (
        f"the row keeps a note instead of the payload ({size} bytes did not fit the store): "
        "send the task again from its source")})
    return row.model_copy(update={"payload": note, "execution_stats": kept, "metadata": row.metadata.model_copy(
        update={"log_context": None})})
