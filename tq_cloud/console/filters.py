"""A listing's filters from a request's query parameters (the `/tasks` page, `/api/tasks`, the
count a bulk re-drive confirms, and the re-drive itself read them alike): `status`, `queue`,
`type`, `since`, `until` (ISO 8601; without a zone, UTC), `q` (text in the id or the error),
`limit`, `cursor`. Anything else wrong is a ValueError that names the parameter (a 400)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import urlencode

from tq_cloud.domain.task import TaskStatus
from tq_cloud.ports.paging import MAX_PAGE
from tq_cloud.ports.storage import TaskQuery

STATUSES = [s.value for s in TaskStatus]
FILTERS = ("status", "queue", "type", "since", "until", "q")


def parse_time(name: str, text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name} must be a time in ISO 8601 (2026-12-07T10:00, or with a zone), not {text[:40]!r}"
                         ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def task_query(params: Mapping[str, str], default_status: str = "failed", limit: int = 50) -> TaskQuery:
    """The TaskQuery the parameters ask for."""
    status = params.get("status") or default_status
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status[:40]!r}")
    text = params.get("limit") or str(limit)
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_PAGE}, not {text[:40]!r}")
    search = (params.get("q") or "").strip()
    if len(search) > 200:
        raise ValueError("q must be at most 200 characters")
    since, until = params.get("since"), params.get("until")
    return TaskQuery(status=TaskStatus(status), queue=params.get("queue") or None, type=params.get("type") or None,
                     since=parse_time("since", since) if since else None,
                     until=parse_time("until", until) if until else None, search=search or None,
                     limit=int(text), cursor=params.get("cursor") or None)


def filter_values(params: Mapping[str, str], default_status: str = "failed") -> dict[str, str]:
    """The filters as given (for the form, the links and the bulk re-drive), status filled in."""
    values = {name: params.get(name) or "" for name in FILTERS}
    values["status"] = values["status"] or default_status
    return values


def link(path: str, values: Mapping[str, str], **more: str) -> str:
    """`path` with the non-empty filters and `more` as its query."""
    return path + "?" + urlencode({k: v for k, v in {**values, **more}.items() if v})
