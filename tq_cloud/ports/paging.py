"""Pages of a listing (tasks, flows): newest first, each page ending at a cursor that the next
one starts below, and never more than MAX_PAGE items, so no listing reads a whole table."""

from __future__ import annotations

MAX_PAGE = 1000


def page_cursor(ms: int, item_id: str) -> str:
    return f"{ms}:{item_id}"


def after_cursor(cursor: str | None) -> tuple[int, str] | None:
    """The (ms, id) a page ended at; listings go on below it, newest first."""
    if not cursor:
        return None
    ms, sep, item_id = cursor.partition(":")
    if not sep or not ms.isdigit():
        raise ValueError(f"{cursor!r} is not a cursor this store gave out")
    return int(ms), item_id
