"""Retry back-off: base x (attempt)^2, capped. The base is the task's `retry_after` in ms."""

from __future__ import annotations

DEFAULT_RETRY_AFTER_MS = 2_000
MAX_RETRY_DELAY_MS = 300_000


def retry_delay_ms(retry_after: int | None, retry_count: int) -> int:
    """Delay before retry number `retry_count + 1`. `retry_after=None` uses 2 s; an explicit 0
    means no back-off (the reference library silently turned 0 into 2 s)."""
    base = DEFAULT_RETRY_AFTER_MS if retry_after is None else max(retry_after, 0)
    return min(base * (retry_count + 1) ** 2, MAX_RETRY_DELAY_MS)
