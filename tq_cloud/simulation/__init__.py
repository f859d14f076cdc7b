"""Deterministic simulation of a whole tq-cloud deployment in one process, on virtual time.

`Simulation(SimConfig(tasks=..., fault_rate=..., seed=...)).run()` builds the deployed system
on the in-memory backends (K shards x P concurrent batches per shard, each batch in its own
"container" with its own handler, the real Lambda handlers, the sweeper on its schedule, an
EventBridge-like timer), injects seeded faults at every port call, and checks invariants as it
goes and at quiescence. The same seed replays the same run (the same trace hash).
"""

from tq_cloud.simulation.config import SimConfig
from tq_cloud.simulation.world import SimReport, Simulation

__all__ = ["SimConfig", "SimReport", "Simulation"]
