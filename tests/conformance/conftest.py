"""Each port's conformance suite runs against every backend listed here: the in-memory one
and the AWS one (on moto's server), through the very same tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.aws_rules import AwsRules, enforced
from tests.aws_support import aws_resources
from tq_cloud.backends.aws import (
    DynamoDbAdapter,
    DynamoDbFlowBarrierProvider,
    DynamoDbLockProvider,
    DynamoDbProjectionProvider,
)
from tq_cloud.backends.aws.dynamodb_counters import DynamoDbCounters
from tq_cloud.backends.memory import (
    InMemoryAdapter,
    InMemoryCounters,
    InMemoryFlowBarrierProvider,
    InMemoryLockProvider,
    InMemoryProjectionProvider,
)
from tq_cloud.clock import ManualClock

MEMORY = {
    "storage": lambda clock: InMemoryAdapter(),
    "barriers": lambda clock: InMemoryFlowBarrierProvider(),
    "locks": lambda clock: InMemoryLockProvider(clock),
    "projections": lambda clock: InMemoryProjectionProvider(),
    "counters": lambda clock: InMemoryCounters(),
}


class ProjectionReader:
    """Gives the DynamoDB provider the same read helpers the conformance tests use."""

    def __init__(self, provider: DynamoDbProjectionProvider) -> None:
        self.provider = provider
        self.cache: dict[str, Any] = {}

    async def upsert_projections(self, entries: Any) -> None:
        await self.provider.upsert_projections(entries)
        for entry in entries:
            self.cache[entry.task_id] = await self.provider.get_projection(entry.task_id)

    def get(self, task_id: str) -> Any:
        return self.cache.get(task_id)

    async def timeline(self, entity_type: str, entity_id: str, limit: int = 100) -> Any:
        return await self.provider.timeline(entity_type, entity_id, limit)


def _dynamodb(port: str, clients: Any, settings: Any, clock: ManualClock) -> Any:
    if port == "storage":
        return DynamoDbAdapter(clients.dynamodb, settings.tasks_table)
    if port == "barriers":
        return DynamoDbFlowBarrierProvider(clients.dynamodb, settings.barriers_table)
    if port == "locks":
        return DynamoDbLockProvider(clients.dynamodb, settings.locks_table, clock)
    if port == "counters":
        return DynamoDbCounters(clients.dynamodb, settings.tasks_table)
    return ProjectionReader(DynamoDbProjectionProvider(clients.dynamodb, settings.projections_table))


@pytest.fixture(autouse=True)
def aws_rules() -> Iterator[AwsRules]:
    """The AWS backends' suites run under AWS's rules (tests/aws_rules.py)."""
    with enforced(AwsRules()) as rules:
        yield rules


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def _backend(request: pytest.FixtureRequest, port: str, clock: ManualClock) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield MEMORY[port](clock)
        return
    settings = request.getfixturevalue("aws_target").settings()
    async with aws_resources(settings) as clients:
        yield _dynamodb(port, clients, settings, clock)


@pytest.fixture(params=["memory", "dynamodb"])
async def storage(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[Any]:
    async for backend in _backend(request, "storage", clock):
        yield backend


@pytest.fixture(params=["memory", "dynamodb"])
async def barriers(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[Any]:
    async for backend in _backend(request, "barriers", clock):
        yield backend


@pytest.fixture(params=["memory", "dynamodb"])
async def locks(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[Any]:
    async for backend in _backend(request, "locks", clock):
        yield backend


@pytest.fixture(params=["memory", "dynamodb"])
async def projections(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[Any]:
    async for backend in _backend(request, "projections", clock):
        yield backend


@pytest.fixture(params=["memory", "dynamodb"])
async def counters(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[Any]:
    async for backend in _backend(request, "counters", clock):
        yield backend
