from __future__ import annotations

import pytest

from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.testing import InMemoryStack


@pytest.fixture
def registry() -> TaskQueuesManager:
    return TaskQueuesManager()


@pytest.fixture
def stack(registry: TaskQueuesManager) -> InMemoryStack:
    return InMemoryStack.create(registry)
