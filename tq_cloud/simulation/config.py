"""What a simulation runs: the workload size and seed, the faults, and the deployment's shape
(as template.yaml configures the event source mapping and the sweeper)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    tasks: int = 1000
    seed: int = 1
    fault_rate: float = 0.0
    """Probability that one port call fails (before or after its effect, or by crashing the
    invocation); the producer's calls and the worker's alike."""
    shards: int = 4
    parallelization: int = 10
    batch_size: int = 100
    batching_window: float = 1.0
    maximum_retry_attempts: int = 10
    invocation_timeout: float = 300.0
    sweep_interval: float = 60.0
    delay_lane: bool = True
    aggregate_bytes: int = 25 * 1024
    """Producers pack tasks into KPL aggregated records up to this size, as deployed (0: a
    record per task)."""
    """Tasks due within 15 minutes (retries included) wait in the SQS delay lane, as deployed."""
    max_flow_steps: int = 5000
    """The largest flow (capped at a quarter of the tasks); one flow in a hundred is that large."""
    edge_inputs: bool = True
    workload: Literal["mixed", "delays"] = "mixed"
    """`delays`: only tasks that wait, for the lateness benchmark (see workload.generate_delays)."""
    max_virtual_seconds: float = 6 * 3600.0
    sweeper_timeout: float = 30.0
    sweep_wave: int = 1000
    claim_seconds: float = 0.0
    """The sweeper's shape: its Lambda timeout, the rows one wave claims, and what a wave's claim
    takes (a wave of conditional updates). Small slow waves (5 rows, 2 s) make a backlog's sweep
    longer than the timeout, which the sweeper must stop short of (it stops 10 s before)."""
    index_lag: float = 1.0
    """Seconds a written row stays unseen by the sweeper's index reads (DynamoDB's indexes are
    eventually consistent): it is swept by a later sweep."""

    def __post_init__(self) -> None:
        if self.tasks < 1 or self.shards < 1 or not 1 <= self.parallelization <= 10:
            raise ValueError("tasks >= 1, shards >= 1 and 1 <= parallelization <= 10")
        if not 0.0 <= self.fault_rate < 1.0:
            raise ValueError("fault_rate is a probability below 1")
