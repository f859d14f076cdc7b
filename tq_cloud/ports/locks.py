"""The lock port: short-lived claims so one task is not run twice at the same time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol


class LockProvider(Protocol):
    async def acquire(self, keys: Sequence[str], owner: str, ttl: timedelta) -> set[str]:
        """Claim each key that is free, expired or already `owner`'s (a claim retried after its
        response was lost stays the owner's); return the keys `owner` holds now."""
        ...

    async def release(self, keys: Sequence[str], owner: str) -> None:
        """Release keys still held by `owner`; keys another owner took over stay theirs."""
        ...
