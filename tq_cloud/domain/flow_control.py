"""The flow-control options of an executor, checked when the executor is built.

Example:
    @app.task("email", "send", concurrency=Concurrency(5, key=lambda t: t.payload["account"]),
              rate_limit=RateLimit(10, per=timedelta(seconds=1), key=lambda t: t.payload["account"]))
    async def send(task: Task[Email], actions: ExecutorActions) -> None: ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from tq_cloud.errors import ConfigurationError

if TYPE_CHECKING:
    from tq_cloud.domain.task import Task

KeyFn = Callable[["Task[Any]"], str]
MAX_CONCURRENCY = 1000
MAX_RATE = 100_000
MAX_PERIOD = timedelta(days=1)
MAX_DEBOUNCE = timedelta(days=1)
MAX_KEY_CHARS = 512


def _check_key(key: object, what: str, required: bool = False) -> None:
    if key is None and not required:
        return
    if not callable(key):
        raise ConfigurationError(f"{what} key must be a callable taking the task and returning a str, got {key!r}")


def _whole(value: object, low: int, high: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigurationError(f"{what} must be a whole number from {low} to {high}, got {value!r}")


def _span(value: object, low: timedelta, high: timedelta, what: str) -> None:
    if not isinstance(value, timedelta) or not low <= value <= high:
        raise ConfigurationError(f"{what} must be a timedelta from {low} to {high}, got {value!r}")


@dataclass(frozen=True)
class Concurrency:
    """At most `limit` tasks of one key run at any moment, system-wide (`key` None: one key for
    the executor). A run holds a slot until it ends, or at the latest until its invocation's
    deadline, so a crashed holder frees its slot. A task over the limit waits (deferred with
    jittered back-off, using no attempt).

    Example:
        @app.task("crm", "sync", concurrency=Concurrency(2, key=lambda t: t.payload["tenant"]))
    """

    limit: int
    key: KeyFn | None = None

    def __post_init__(self) -> None:
        _whole(self.limit, 1, MAX_CONCURRENCY, "Concurrency.limit")
        _check_key(self.key, "Concurrency")


@dataclass(frozen=True)
class RateLimit:
    """At most `limit` starts of one key in any window of length `per`, system-wide. Excess
    waits, deferred until the window has room (using no attempt). The window is kept as ten
    counted slices, so the bound is exact and throughput under it at least 10/11 of the limit.

    Example:
        @app.task("email", "send", rate_limit=RateLimit(10, per=timedelta(seconds=1),
                                                        key=lambda t: t.payload["account"]))
    """

    limit: int
    per: timedelta
    key: KeyFn | None = None

    def __post_init__(self) -> None:
        _whole(self.limit, 1, MAX_RATE, "RateLimit.limit")
        _span(self.per, timedelta(milliseconds=100), MAX_PERIOD, "RateLimit.per")
        _check_key(self.key, "RateLimit")


@dataclass(frozen=True)
class Debounce:
    """Of tasks of one key arriving less than `window` apart, only the last runs, `window` after
    the last arrival (or `max_wait` after the first, whichever is sooner); the others end
    cancelled, with the id of the task that superseded them as the reason.

    Example:
        @app.task("search", "reindex", debounce=Debounce(timedelta(seconds=30), key=lambda t: t.payload["doc"],
                                                         max_wait=timedelta(minutes=5)))
    """

    window: timedelta
    key: KeyFn
    max_wait: timedelta | None = None

    def __post_init__(self) -> None:
        _span(self.window, timedelta(seconds=1), MAX_DEBOUNCE, "Debounce.window")
        _check_key(self.key, "Debounce", required=True)
        if self.max_wait is not None:
            _span(self.max_wait, self.window, MAX_DEBOUNCE, "Debounce.max_wait")


def key_of(fn: KeyFn | None, task: Task[Any], what: str) -> str:
    """The key a task counts under: `fn(task)`, a str of at most MAX_KEY_CHARS (else ValueError
    naming the option: the task's own failure, recorded), or "" for one key per executor."""
    if fn is None:
        return ""
    key = fn(task)
    if not isinstance(key, str) or len(key) > MAX_KEY_CHARS:
        raise ValueError(f"the {what} key function must return a str of at most {MAX_KEY_CHARS} characters, "
                         f"got {type(key).__name__} of {len(key) if isinstance(key, str) else '?'}")
    return key
