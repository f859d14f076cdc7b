"""The executors the flows feature ships for its own task types, plugged into the runner by
the assembly: the flow-timeout sentinel needs no user code (the reference library silently
never fired timeouts without one), and a closed flow's items are dated for expiry a page at a
time, each page its own task."""

from __future__ import annotations

from tq_cloud.clock import Clock
from tq_cloud.core.actions import ExecutorActions
from tq_cloud.core.executors import Executor, SingleTaskExecutor
from tq_cloud.domain.flows import FLOW_RETIRE_TYPE, FLOW_TIMEOUT_TYPE, retire_task
from tq_cloud.domain.task import Task
from tq_cloud.ports.barrier import FlowBarrierProvider


def flow_executors(clock: Clock, barriers: FlowBarrierProvider | None) -> dict[str, Executor]:
    """The sentinel's executor always; the retire task's when there are barriers to retire.
    A sentinel delivered before its deadline (a timer firing early) is put back until then,
    never acknowledged."""

    async def acknowledge(task: Task, actions: ExecutorActions) -> None:
        meta = task.flow_meta
        early = (meta.timeout_at - clock.now()).total_seconds() if meta and meta.timeout_at else 0.0
        if early > 0:
            actions.defer(task, early, "flow timeout delivered before its deadline")
        else:
            actions.success(task)

    executors: dict[str, Executor] = {FLOW_TIMEOUT_TYPE: SingleTaskExecutor(fn=acknowledge)}
    if barriers is not None:
        async def retire(task: Task, actions: ExecutorActions) -> None:
            flow_id, after = str(task.payload["flow_id"]), int(task.payload["after"])
            done = await barriers.retire(flow_id, after)
            if done is not None:
                actions.add_tasks([retire_task(flow_id, task.queue_id, clock.now(), done)])
            actions.success(task)

        executors[FLOW_RETIRE_TYPE] = SingleTaskExecutor(fn=retire)
    return executors
