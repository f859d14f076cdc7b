"""In-process claims with expiry, measured on the injected clock."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from tq_cloud.clock import Clock, SystemClock


class InMemoryLockProvider:
    """Claims in memory, expiring on the injected clock.

    Example:
        locks = InMemoryLockProvider(clock=ManualClock())
    """
    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self._held: dict[str, tuple[str, datetime]] = {}

    async def acquire(self, keys: Sequence[str], owner: str, ttl: timedelta) -> set[str]:
        now = self.clock.now()
        expires = now + ttl
        held = self._held
        claimed: set[str] = set()
        for key in keys:
            current = held.get(key)
            if current is None or current[1] <= now or current[0] == owner:
                held[key] = (owner, expires)
                claimed.add(key)
        return claimed

    async def release(self, keys: Sequence[str], owner: str) -> None:
        held = self._held
        for key in keys:
            current = held.get(key)
            if current is not None and current[0] == owner:
                del held[key]

    def is_held(self, key: str) -> bool:
        current = self._held.get(key)
        return current is not None and current[1] > self.clock.now()
