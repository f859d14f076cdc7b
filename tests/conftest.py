from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.testing import InMemoryStack


@pytest.fixture
def registry() -> TaskQueuesManager:
    return TaskQueuesManager()


@pytest.fixture
def stack(registry: TaskQueuesManager) -> InMemoryStack:
    return InMemoryStack.create(registry)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from tq_cloud.local.moto import moto_server

    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def aws_target(moto_endpoint: str) -> Iterator[Any]:
    """Where AWS-backend suites run: moto, or dynalite and kinesalite (TQ_TEST_EMULATOR=dynalite)."""
    from tests.emulator_support import AwsTarget, dynalite_and_kinesalite, selected

    if selected() == "moto":
        yield AwsTarget("moto", moto_endpoint)
        return
    with dynalite_and_kinesalite() as (dynamodb, kinesis):
        yield AwsTarget("dynalite", moto_endpoint, dynamodb, kinesis)


@pytest.fixture(autouse=True, scope="session")
def _fake_aws_credentials() -> None:
    import os

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_SESSION_TOKEN", "testing"), ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(name, value)
