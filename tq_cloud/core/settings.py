"""Tunables of the engine, with the reference library's values as defaults."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from tq_cloud.errors import ConfigurationError


@dataclass(frozen=True, kw_only=True)
class HandlerSettings:
    """`stale_after`: a `processing` row older than this is offered again (its worker died).
    It must exceed the longest time a task can wait in the stream plus run, and defaults to
    the lock TTL so a live claim is never recovered under a running task.

    Example:
        handler = TaskHandler(queue=queue, registry=app, storage=storage, locks=locks,
                              settings=HandlerSettings(stale_after=timedelta(minutes=10), history=True))
    """

    immediate_window: timedelta = timedelta(minutes=2)
    lock_ttl: timedelta = timedelta(minutes=30)
    stale_after: timedelta = timedelta(minutes=30)
    mature_batch_limit: int = 1000
    mature_interval: float = 5.0
    receive_batch_size: int = 100
    poll_interval: float = 0.05
    stats_threshold: int = 1000
    stats_failure_threshold: int = 100
    history: bool = False
    """Keep every outcome as a row for the finished-task TTL (TQ_HISTORY): successes of tasks
    without a row are stored as executed, and failures they would discard as failed, so that
    any task can be found. Off by default when deployed (it costs a write per task)."""

    def __post_init__(self) -> None:
        for name in ("mature_batch_limit", "receive_batch_size", "stats_threshold",
                     "stats_failure_threshold"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("mature_interval", "poll_interval"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be > 0 seconds, got {getattr(self, name)!r}")
        if self.stale_after < self.lock_ttl:
            raise ConfigurationError(
                "stale_after must be at least lock_ttl, or a task still running could be recovered "
                "and run twice at once"
            )
