"""Each port's conformance suite runs against every backend listed here. The AWS backends
join these lists when they exist, so they must pass the very same tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tq_cloud.backends.memory import (
    InMemoryAdapter,
    InMemoryFlowBarrierProvider,
    InMemoryLockProvider,
    InMemoryProjectionProvider,
)
from tq_cloud.clock import ManualClock

STORAGE: dict[str, Callable[[ManualClock], Any]] = {"memory": lambda clock: InMemoryAdapter()}
BARRIERS: dict[str, Callable[[ManualClock], Any]] = {"memory": lambda clock: InMemoryFlowBarrierProvider()}
LOCKS: dict[str, Callable[[ManualClock], Any]] = {"memory": lambda clock: InMemoryLockProvider(clock)}
PROJECTIONS: dict[str, Callable[[ManualClock], Any]] = {"memory": lambda clock: InMemoryProjectionProvider()}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=sorted(STORAGE))
def storage(request: pytest.FixtureRequest, clock: ManualClock) -> Any:
    return STORAGE[request.param](clock)


@pytest.fixture(params=sorted(BARRIERS))
def barriers(request: pytest.FixtureRequest, clock: ManualClock) -> Any:
    return BARRIERS[request.param](clock)


@pytest.fixture(params=sorted(LOCKS))
def locks(request: pytest.FixtureRequest, clock: ManualClock) -> Any:
    return LOCKS[request.param](clock)


@pytest.fixture(params=sorted(PROJECTIONS))
def projections(request: pytest.FixtureRequest, clock: ManualClock) -> Any:
    return PROJECTIONS[request.param](clock)
