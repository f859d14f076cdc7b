"""In-memory backends of every port: tests, the demo and local development."""

from tq_cloud.backends.memory.barrier import InMemoryFlowBarrierProvider
from tq_cloud.backends.memory.counters import InMemoryCounters
from tq_cloud.backends.memory.delay import InMemoryDelayLane
from tq_cloud.backends.memory.locks import InMemoryLockProvider
from tq_cloud.backends.memory.projections import InMemoryProjectionProvider
from tq_cloud.backends.memory.queue import InMemoryQueue
from tq_cloud.backends.memory.storage import InMemoryAdapter
from tq_cloud.backends.memory.timer import InMemoryTimer

__all__ = [
    "InMemoryCounters",
    "InMemoryAdapter",
    "InMemoryDelayLane",
    "InMemoryFlowBarrierProvider",
    "InMemoryLockProvider",
    "InMemoryProjectionProvider",
    "InMemoryQueue",
    "InMemoryTimer",
]
