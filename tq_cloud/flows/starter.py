"""Builds a flow's tasks when an executor calls `actions.start_flow`. Nothing is written here:
the step tasks, the timeout sentinel and the barrier are committed with the parent's batch.

Steps are not stored (unlike the reference's force_store steps): the barrier already records
each step's final result, so a task row per step would double the writes of every flow. A
redelivered parent may send its steps twice; the barrier counts each step once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from tq_cloud.clock import Clock
from tq_cloud.domain.flows import FLOW_TIMEOUT_TYPE, FlowConfig, FlowStep, StartedFlow
from tq_cloud.domain.task import FlowMeta, StepFailurePolicy, Task, TaskMetadata
from tq_cloud.errors import InvalidFlowError
from tq_cloud.ids import derived_id


class FlowStarter:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def start(
        self,
        *,
        flow_id: str,
        steps: Sequence[FlowStep | Mapping[str, Any]],
        config: FlowConfig,
        log_context: Mapping[str, str] | None,
    ) -> StartedFlow:
        if not steps:
            raise InvalidFlowError("start_flow requires at least 1 step")
        parsed = [s if isinstance(s, FlowStep) else FlowStep.model_validate(s) for s in steps]
        now = self.clock.now()
        total = len(parsed)
        ctx = dict(log_context) if log_context else None

        deadline = now + timedelta(milliseconds=config.timeout_ms) if config.timeout_ms else None

        def meta(index: int, *, is_timeout: bool = False, on_failure: StepFailurePolicy | None = None
                 ) -> TaskMetadata:
            return TaskMetadata(log_context=ctx, flow_meta=FlowMeta(
                flow_id=flow_id, step_index=index, total_steps=total, join=config.join,
                failure_policy=config.failure_policy, step_failure_policy=on_failure, is_timeout=is_timeout,
                entity=config.entity, started_at=now, timeout_at=deadline))

        started = StartedFlow(flow_id=flow_id, total_steps=total, started_at=now, config=config)
        for index, step in enumerate(parsed):
            started.tasks.append(Task(
                id=derived_id(flow_id, "step", index), type=step.type, queue_id=step.queue_id,
                payload=step.payload, entity=step.entity, retries=step.retries, retry_after=step.retry_after,
                execute_at=now, created_at=now,
                metadata=meta(index, on_failure=step.on_failure)))
        if deadline is not None:
            started.tasks.append(Task(
                id=derived_id(flow_id, "timeout"), type=FLOW_TIMEOUT_TYPE,
                queue_id=config.join.queue_id, payload={"flow_id": flow_id},
                execute_at=deadline, created_at=now,
                force_store=True, metadata=meta(-1, is_timeout=True)))
        return started
