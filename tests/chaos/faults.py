"""Seeded fault injection for AWS calls and Lambda invocations, for chaos runs.

Through botocore's event hooks, each call may fail *before* it takes effect (throttled, or a
connection timeout) or *after* (the effect happened but the caller sees a read timeout, the
hardest case for idempotency); a Lambda invocation may crash after executing its batch and
before returning, so the event source redelivers it.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any


class FaultInjector:
    def __init__(self, seed: int, rate: float) -> None:
        self.rate = rate
        self.counts: Counter[str] = Counter()
        self.calls = 0
        self.enabled = True
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def _roll(self) -> float:
        with self._lock:
            return self._random.random()

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-parameter-build", self._before)
        client.meta.events.register("after-call", self._after)

    def _before(self, model: Any, **_: Any) -> None:
        from botocore.exceptions import ClientError, ConnectTimeoutError

        if not self.enabled:
            return
        self.calls += 1
        roll = self._roll()
        if roll < self.rate / 3:
            self.counts["throttled"] += 1
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "chaos"}}, model.name)
        if roll < 2 * self.rate / 3:
            self.counts["timeout before effect"] += 1
            raise ConnectTimeoutError(endpoint_url=f"chaos:{model.name}")

    def _after(self, model: Any, **_: Any) -> None:
        from botocore.exceptions import ReadTimeoutError

        if self.enabled and self._roll() < self.rate / 3:
            self.counts["lost response after effect"] += 1
            raise ReadTimeoutError(endpoint_url=f"chaos:{model.name}")

    def crashing(self, handler: Callable[[Mapping[str, Any], Any], Any]) -> Callable[[Mapping[str, Any], Any], Any]:
        """The handler, crashing after it executed a batch with probability `rate`."""
        def invoke(event: Mapping[str, Any], context: Any) -> Any:
            result = handler(event, context)
            if self.enabled and self._roll() < self.rate:
                self.counts["invocation crashed before returning"] += 1
                raise RuntimeError("chaos: the invocation died before returning its response")
            return result

        return invoke

    @property
    def total(self) -> int:
        return sum(self.counts.values())
