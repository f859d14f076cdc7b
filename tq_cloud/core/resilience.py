"""Transient failures of a port call are retried at the call, a few times with jittered
exponential back-off, before they fail the batch.

The AWS SDK does this for AWS's own throttling; doing it here too makes every backend behave the
same (the in-memory ones included, which the simulator fails at will) and keeps one flaky call
from sending a whole batch back to the stream. Only errors that say they are transient are
retried: throttling, timeouts, lost responses, cancelled transactions. Every port write is
idempotent (set-if-absent, conditional), so a call retried after its response was lost replays
into the same state. A publish is retried whole: a record written twice is a duplicate delivery,
which the engine tolerates (at-least-once).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from tq_cloud.errors import TransientError

_TRANSIENT_CODES = frozenset({
    "ThrottlingException", "ProvisionedThroughputExceededException", "RequestLimitExceeded",
    "TransactionConflictException", "InternalServerError", "ServiceUnavailable", "InternalFailure",
    "LimitExceededException", "KMSThrottlingException",
    "ResourceInUseException",  # a table or stream being updated (a new index, a reshard): it passes
})
_TRANSIENT_CLASSES = frozenset({"ReadTimeoutError", "ConnectTimeoutError", "EndpointConnectionError",
                                "ConnectionClosedError", "ServerDisconnectedError"})


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TransientError):
        return True
    if type(exc).__name__ in _TRANSIENT_CLASSES:
        return True
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code", "") if isinstance(response, dict) else ""
    if code == "TransactionCanceledException":
        reasons = response.get("CancellationReasons", []) if isinstance(response, dict) else []
        return all(r.get("Code") in ("None", "TransactionConflict", "ThrottlingError") for r in reasons)
    return code in _TRANSIENT_CODES


P = TypeVar("P")


def retrying(port: P, policy: RetryPolicy) -> P:
    """`port`, its async methods retrying transient failures under `policy`."""
    return port if isinstance(port, RetryingPort) else cast(P, RetryingPort(port, policy))


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """`attempts` in all (1 = no retry); delays of `base_delay` x 2^n, jittered, capped."""

    attempts: int = 4
    base_delay: float = 0.05
    max_delay: float = 1.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delay(self, retry: int) -> float:
        return float(min(self.max_delay, self.base_delay * 2 ** retry) * self.rng.uniform(0.5, 1.0))


class RetryingPort:
    """A port whose async methods retry transient failures under `policy`.

    Example:
        storage = RetryingPort(DynamoDbAdapter(client, table), RetryPolicy(attempts=4))
    """

    def __init__(self, inner: Any, policy: RetryPolicy) -> None:
        self._inner = inner
        self._policy = policy

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self._inner, attr)
        if not asyncio.iscoroutinefunction(target):
            return target
        policy = self._policy

        async def call(*args: Any, **kwargs: Any) -> Any:
            for retry in range(policy.attempts):
                try:
                    return await target(*args, **kwargs)
                except Exception as exc:
                    if retry + 1 >= policy.attempts or not is_transient(exc):
                        raise
                await asyncio.sleep(policy.delay(retry))
            raise AssertionError("unreachable")

        setattr(self, attr, call)
        return call
