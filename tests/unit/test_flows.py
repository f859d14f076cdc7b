"""Flows end to end on the in-memory stack: fan-out, join, policies, timeouts, redelivery."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import EventLog
from tq_cloud import (
    EntityRef,
    ExecutorActions,
    FlowConfig,
    JoinTarget,
    LifecycleConfig,
    Task,
    TaskStatus,
)
from tq_cloud.domain.flows import FLOW_TIMEOUT_TYPE
from tq_cloud.errors import FlowsNotConfiguredError, InvalidFlowError
from tq_cloud.ports.barrier import BarrierState
from tq_cloud.testing import InMemoryStack

JOIN = JoinTarget(type="join", queue_id="flows")


class FlowApp:
    """A parent that starts a flow of `n` steps; steps succeed unless told to fail."""

    def __init__(self, stack: InMemoryStack, n: int = 3, step_policies: dict[int, str] | None = None,
                 **config: Any) -> None:
        self.stack = stack
        self.joins: list[dict[str, Any]] = []
        self.flow_ids: list[str] = []
        self.step_runs: list[int] = []
        self.fail_steps: set[int] = set()
        reg = stack.registry

        @reg.task("flows", "parent")
        async def parent(task: Task, actions: ExecutorActions) -> None:
            policies = step_policies or {}
            steps = [{"type": "step", "queue_id": "flows", "payload": {"i": i}, "on_failure": policies.get(i)}
                     for i in range(n)]
            self.flow_ids.append(actions.start_flow(steps, FlowConfig(join=JOIN, **config)))
            actions.success(task)

        @reg.task("flows", "step", retries=1)
        async def step(task: Task, actions: ExecutorActions) -> None:
            i = task.payload["i"]
            meta = task.flow_meta
            assert meta is not None and meta.step_index == i and task.payload == {"i": i}
            self.step_runs.append(i)
            if i in self.fail_steps:
                actions.fail(task, f"step {i} broke")
            else:
                actions.success(task, {"value": i * 10})

        @reg.task("flows", "join", store_on_failure=True)
        async def join(task: Task, actions: ExecutorActions) -> None:
            self.joins.append(task.payload["flow_results"])
            actions.success(task, "joined")

    async def start(self) -> None:
        await self.stack.handler.add_tasks([Task(type="parent", queue_id="flows", payload={})])


async def test_fan_out_and_join_with_every_result(stack: InMemoryStack) -> None:
    app = FlowApp(stack, n=4)
    await app.start()
    await stack.run_until_idle()
    [join] = app.joins
    assert join["flow_id"] == app.flow_ids[0] and not join["aborted"] and not join["timed_out"]
    assert [(s["step_index"], s["status"], s["result"]) for s in join["steps"]] == [
        (i, "success", {"value": i * 10}) for i in range(4)]
    assert [r for r in stack.storage.snapshot().values() if r.type == "step"] == [], \
        "steps are not stored: the barrier records their results"


@pytest.mark.parametrize(("flow_policy", "step_policy", "aborted", "status"), [
    ("continue", "abort", True, "fail"),
    ("abort", "continue", False, "fail"),
    ("abort", "ignore", False, "ignored"),
    ("abort", None, True, "fail"),
])
async def test_a_step_failure_policy_overrides_the_flows(stack: InMemoryStack, flow_policy: str,
                                                         step_policy: str | None, aborted: bool, status: str) -> None:
    app = FlowApp(stack, n=3, step_policies={0: step_policy} if step_policy else {}, failure_policy=flow_policy)
    app.fail_steps = {0}
    await app.start()
    await stack.run_until_idle()
    [join] = app.joins
    assert join["aborted"] is aborted
    assert join["steps"][0]["status"] == status and join["steps"][0]["error"] == "step 0 broke"
    assert join["counts"] == ({"succeeded": 2, "failed": 0, "ignored": 1} if status == "ignored" else
                              {"succeeded": len(join["steps"]) - 1, "failed": 1, "ignored": 0})


async def test_one_barrier_call_per_flow_per_batch(stack: InMemoryStack) -> None:
    app = FlowApp(stack, n=50)
    await app.start()
    await stack.run_until_idle(batch_size=100)
    assert len(app.joins) == 1
    assert stack.handler.flows is not None and stack.handler.flows.barrier_calls == 1


async def test_continue_policy_reports_failed_steps_after_retries(stack: InMemoryStack) -> None:
    app = FlowApp(stack, n=3)
    app.fail_steps = {1}
    await app.start()
    await stack.run_until_idle()
    [join] = app.joins
    assert [s["status"] for s in join["steps"]] == ["success", "fail", "success"]
    assert join["steps"][1]["error"] == "step 1 broke"
    assert app.step_runs.count(1) == 2, "the failing step was retried once before it counted"


async def test_abort_dispatches_partial_results_once_and_ignores_stragglers(stack: InMemoryStack) -> None:
    app = FlowApp(stack, n=3, failure_policy="abort")
    app.fail_steps = {0}
    await app.start()
    await stack.process_ready()
    [parent_flow] = app.flow_ids
    # step 0 fails (retry pending); steps 1 and 2 succeed in the first batch
    await stack.run_until_idle()
    [join] = app.joins
    assert join["aborted"] is True
    statuses = {s["step_index"]: s["status"] for s in join["steps"]}
    assert statuses[0] == "fail", "the failing step is in the results (reference quirk 17 fixed)"
    snapshot = await stack.barriers.get(parent_flow)
    assert snapshot is not None and snapshot.state is BarrierState.ABORTED


async def test_abort_with_stragglers_after_the_join(stack: InMemoryStack) -> None:
    app = FlowApp(stack, n=3, failure_policy="abort")
    await app.start()
    await stack.step("flows", 1)  # parent
    steps = await stack.queue.receive("flows", 10)
    by_index = {t.payload["i"]: t for t in steps}
    app.fail_steps = {0}
    by_index[0].execution_stats.retry_count = 1  # its last attempt
    await stack.handler.process_batch([by_index[0]])
    await stack.handler.process_batch([by_index[1], by_index[2]])
    await stack.run_until_idle()
    [join] = app.joins
    assert join["aborted"] and [s["step_index"] for s in join["steps"]] == [0]


async def test_timeout_fires_with_partial_results_and_no_user_executor(stack: InMemoryStack) -> None:
    app = FlowApp(stack, n=2, timeout_ms=60_000)
    await app.start()
    await stack.step("flows", 1)
    steps = await stack.queue.receive("flows", 10)
    await stack.handler.process_batch([t for t in steps if t.payload["i"] == 0])
    assert stack.timer.pending, "the sentinel waits in the timer, not in the stream"
    await stack.clock.advance(59)
    await stack.handler.process_mature_tasks()
    await stack.process_ready()
    assert app.joins == [], "never early"
    await stack.clock.advance(1)
    await stack.run_until_idle()
    [join] = app.joins
    assert join["timed_out"] and [s["step_index"] for s in join["steps"]] == [0]
    assert stack.registry.get_executor("flows", FLOW_TIMEOUT_TYPE) is None


async def test_timeout_after_completion_is_a_no_op(stack: InMemoryStack) -> None:
    app = FlowApp(stack, n=2, timeout_ms=60_000)
    await app.start()
    await stack.run_until_idle()
    assert len(app.joins) == 1 and not app.joins[0]["timed_out"]
    assert stack.timer.pending == [], "the timer was cancelled with the join"


async def test_timeout_racing_the_last_step_dispatches_one_join(stack: InMemoryStack) -> None:
    app = FlowApp(stack, n=1, timeout_ms=1000)
    await app.start()
    await stack.step("flows", 1)
    [step] = await stack.queue.receive("flows", 10)
    await stack.clock.advance(1)
    await stack.timer.fire_due(stack.clock.now())
    [sentinel] = await stack.queue.receive("flows", 10)
    await stack.handler.process_batch([sentinel, step])
    await stack.run_until_idle()
    assert len(app.joins) == 1


async def test_duplicate_step_completions_count_once(stack: InMemoryStack) -> None:
    app = FlowApp(stack, n=2)
    await app.start()
    await stack.step("flows", 1)
    steps = await stack.queue.receive("flows", 10)
    first = [t for t in steps if t.payload["i"] == 0]
    for _ in range(3):  # at-least-once: the same record three times
        await stack.handler.process_batch([t.model_copy(deep=True) for t in first])
    assert app.joins == []
    await stack.handler.process_batch([t for t in steps if t.payload["i"] == 1])
    await stack.run_until_idle()
    assert len(app.joins) == 1


async def test_crash_between_barrier_and_join_dispatch_recovers_on_redelivery(stack: InMemoryStack) -> None:
    app = FlowApp(stack, n=1)
    await app.start()
    await stack.step("flows", 1)
    [step] = await stack.queue.receive("flows", 10)
    stack.storage.fail_next_writes = 1  # the join's insert fails after the barrier was met
    report = await stack.handler.process_batch([step])
    assert report.not_committed
    [flow_id] = app.flow_ids
    snapshot = await stack.barriers.get(flow_id)
    assert snapshot is not None and snapshot.state is BarrierState.COMPLETE and not snapshot.join_dispatched
    await stack.queue.requeue(report.not_committed)
    await stack.run_until_idle()
    assert len(app.joins) == 1
    for _ in range(2):  # later replays dispatch nothing more
        await stack.handler.process_batch([step.model_copy(deep=True)])
        await stack.run_until_idle()
    assert len(app.joins) == 1


async def test_redelivered_parent_does_not_start_a_second_flow(stack: InMemoryStack) -> None:
    app = FlowApp(stack, n=2)
    await app.start()
    [parent] = await stack.queue.receive("flows", 10)
    await stack.handler.process_batch([parent.model_copy(deep=True)])
    await stack.handler.process_batch([parent.model_copy(deep=True)])
    await stack.run_until_idle()
    assert len(set(app.flow_ids)) == 1 and len(app.joins) == 1
    assert sorted(app.step_runs) == [0, 1]


async def test_nested_flow_from_a_join(stack: InMemoryStack) -> None:
    reg = stack.registry
    results: list[dict[str, Any]] = []

    @reg.task("f", "outer")
    async def outer(task: Task, actions: ExecutorActions) -> None:
        actions.start_flow([{"type": "leaf", "queue_id": "f", "payload": 1}],
                           FlowConfig(join=JoinTarget(type="middle", queue_id="f")))
        actions.success(task)

    @reg.task("f", "leaf")
    async def leaf(task: Task, actions: ExecutorActions) -> None:
        actions.success(task, task.payload)

    @reg.task("f", "middle")
    async def middle(task: Task, actions: ExecutorActions) -> None:
        actions.start_flow([{"type": "leaf", "queue_id": "f", "payload": 2},
                            {"type": "leaf", "queue_id": "f", "payload": 3}],
                           FlowConfig(join=JoinTarget(type="final", queue_id="f")))
        actions.success(task)

    @reg.task("f", "final")
    async def final(task: Task, actions: ExecutorActions) -> None:
        results.append(task.payload["flow_results"])
        actions.success(task)

    await stack.handler.add_tasks([Task(type="outer", queue_id="f", payload=None)])
    await stack.run_until_idle()
    [inner] = results
    assert [s["result"] for s in inner["steps"]] == [2, 3]


async def test_flow_entity_projects_at_flow_level(stack: InMemoryStack) -> None:
    app = FlowApp(stack, n=2, entity=EntityRef(id="o-1", type="order"))
    await app.start()
    await stack.step("flows", 1)
    [flow_id] = app.flow_ids
    projection = stack.projections.get(flow_id)
    assert projection is not None and projection.status == "processing"
    await stack.run_until_idle()
    projection = stack.projections.get(flow_id)
    assert projection is not None and projection.status == "executed" and projection.result == "joined"
    assert [p.task_id for p in stack.projections.for_entity("order", "o-1")] == [flow_id]


async def test_aborted_flow_entity_projects_failed(stack: InMemoryStack) -> None:
    app = FlowApp(stack, n=2, failure_policy="abort", entity=EntityRef(id="o-2", type="order"))
    app.fail_steps = {1}
    await app.start()
    await stack.run_until_idle()
    projection = stack.projections.get(app.flow_ids[0])
    assert projection is not None and projection.status == "failed" and projection.error == "flow_aborted"


async def test_flow_lifecycle_events() -> None:
    events = EventLog()
    stack = InMemoryStack.create(flow_lifecycle=events, lifecycle_config=LifecycleConfig(mode="sync"))
    app = FlowApp(stack, n=2)
    await app.start()
    await stack.run_until_idle()
    [started] = events.of("on_flow_started")
    [completed] = events.of("on_flow_completed")
    assert started.step_types == ("step", "step") and started.total_steps == 2
    assert completed.outcome == "completed" and completed.steps_succeeded == 2
    assert completed.duration_ms is not None


async def test_start_flow_rejects_bad_input(stack: InMemoryStack) -> None:
    errors: list[BaseException] = []

    @stack.registry.task("q", "p")
    async def parent(task: Task, actions: ExecutorActions) -> None:
        for steps in ([], [{"type": "s"}]):
            try:
                actions.start_flow(steps, FlowConfig(join=JOIN))
            except Exception as exc:
                errors.append(exc)
        actions.success(task)

    await stack.handler.runner.run("c", [Task(id="p", type="p", queue_id="q", payload=None)])
    assert isinstance(errors[0], InvalidFlowError)
    assert "queue_id" in str(errors[1])
    with pytest.raises(Exception, match="greater than 0"):
        FlowConfig(join=JOIN, timeout_ms=0)


async def test_start_flow_without_barriers_is_a_clear_error() -> None:
    from tq_cloud import TaskHandler
    from tq_cloud.backends.memory import InMemoryAdapter, InMemoryLockProvider, InMemoryQueue
    from tq_cloud.core.registry import TaskQueuesManager

    reg = TaskQueuesManager()
    seen: list[str] = []

    @reg.task("q", "p")
    async def parent(task: Task, actions: ExecutorActions) -> None:
        try:
            actions.start_flow([{"type": "s", "queue_id": "q"}], FlowConfig(join=JOIN))
        except FlowsNotConfiguredError as exc:
            seen.append(str(exc))
        actions.success(task)

    handler = TaskHandler(queue=InMemoryQueue(), registry=reg, storage=InMemoryAdapter(),
                          locks=InMemoryLockProvider())
    await handler.process_batch([Task(id="p", type="p", queue_id="q", payload=None)])
    assert seen and "flow barrier provider" in seen[0]


async def test_join_rows_are_stored_once(stack: InMemoryStack) -> None:
    app = FlowApp(stack, n=2)
    await app.start()
    await stack.run_until_idle()
    joins = [r for r in stack.storage.snapshot().values() if r.type == "join"]
    assert len(joins) == 1 and joins[0].status is TaskStatus.EXECUTED


async def test_a_step_of_a_type_with_no_executor_reaches_the_barrier_as_failed(stack: InMemoryStack) -> None:
    joins: list[dict[str, Any]] = []

    @stack.registry.task("flows", "parent")
    async def parent(task: Task, actions: ExecutorActions) -> None:
        actions.start_flow([{"type": "step", "queue_id": "flows", "payload": {}},
                            {"type": "nobody-runs-this", "queue_id": "flows", "payload": {}}], FlowConfig(join=JOIN))
        actions.success(task)

    @stack.registry.task("flows", "step")
    async def step(task: Task, actions: ExecutorActions) -> None:
        actions.success(task, "ok")

    @stack.registry.task("flows", "join")
    async def join(task: Task, actions: ExecutorActions) -> None:
        joins.append(task.payload["flow_results"])
        actions.success(task)

    await stack.handler.add_tasks([Task(type="parent", queue_id="flows", payload={})])
    await stack.run_until_idle()
    [results] = joins
    assert [s["status"] for s in results["steps"]] == ["success", "fail"]
    assert "ignored: no executor registered" in results["steps"][1]["error"]
    [ignored] = stack.storage.by_status(TaskStatus.IGNORED)
    assert ignored.type == "nobody-runs-this"


async def test_a_timeout_sentinel_delivered_early_waits_for_its_deadline(stack: InMemoryStack) -> None:
    from datetime import timedelta

    from tq_cloud.domain.task import FlowMeta, TaskMetadata

    joins: list[dict[str, Any]] = []

    @stack.registry.task("flows", "join")
    async def join(task: Task, actions: ExecutorActions) -> None:
        joins.append(task.payload["flow_results"])
        actions.success(task)

    now = stack.clock.now()
    deadline = now + timedelta(seconds=10)
    await stack.barriers.init_barrier("f1", 1, now)
    meta = FlowMeta(flow_id="f1", step_index=-1, total_steps=1, join=JOIN, is_timeout=True,
                    started_at=now, timeout_at=deadline)
    sentinel = Task(id="s", type=FLOW_TIMEOUT_TYPE, queue_id="flows", payload={"flow_id": "f1"},
                    force_store=True, metadata=TaskMetadata(flow_meta=meta))
    await stack.handler.process_batch([sentinel])
    snapshot = await stack.barriers.get("f1")
    assert snapshot is not None and snapshot.state is BarrierState.ACTIVE, "never before the deadline"
    row = stack.storage.snapshot()["s"]
    assert row.execute_at == deadline and row.retry_count == 0
    await stack.run_until_idle()
    [results] = joins
    assert results["timed_out"] and stack.clock.now() >= deadline


async def test_a_join_of_more_steps_than_fit_inline_pages_through_the_barrier(stack: InMemoryStack) -> None:
    from tq_cloud.flows.join_payload import INLINE_STEPS

    n = INLINE_STEPS * 3 + 7
    read: list[Any] = []

    @stack.registry.task("flows", "parent")
    async def parent(task: Task, actions: ExecutorActions) -> None:
        actions.start_flow([{"type": "step", "queue_id": "flows", "payload": {}} for _ in range(n)],
                           FlowConfig(join=JOIN))
        actions.success(task)

    @stack.registry.task("flows", "step")
    async def step(task: Task, actions: ExecutorActions) -> None:
        actions.success(task, task.flow_meta.step_index if task.flow_meta else None)

    @stack.registry.task("flows", "join", store_on_failure=True)
    async def join(task: Task, actions: ExecutorActions) -> None:
        results = actions.flow_results(task)
        read.append((task.payload["flow_results"], [s.result async for s in results.steps(page_size=64)]))
        actions.success(task)

    await stack.handler.add_tasks([Task(type="parent", queue_id="flows", payload={})])
    await stack.run_until_idle(batch_size=100)
    [(payload, results)] = read
    assert payload["steps_inline"] is False and payload["steps"] == []
    assert payload["counts"] == {"succeeded": n, "failed": 0, "ignored": 0} and payload["total_steps"] == n
    assert results == list(range(n))


async def test_a_flow_without_a_timeout_is_retired_after_it_closes() -> None:
    """Its items were kept while it ran; once it closes, the framework's retire task dates them."""
    from tq_cloud import FlowConfig, JoinTarget, Task, TaskQueuesManager, TaskStatus
    from tq_cloud.domain.flows import FLOW_RETIRE_TYPE
    from tq_cloud.ids import derived_id
    from tq_cloud.testing import InMemoryStack

    app = TaskQueuesManager()

    @app.task("f", "parent")
    async def parent(task: Task, actions: ExecutorActions) -> None:
        actions.start_flow([{"type": "step", "queue_id": "f", "payload": {}}] * 2,
                           FlowConfig(join=JoinTarget(type="join", queue_id="f")))
        actions.success(task)

    @app.task("f", "step")
    async def step(task: Task, actions: ExecutorActions) -> None:
        actions.success(task)

    @app.task("f", "join")
    async def join(task: Task, actions: ExecutorActions) -> None:
        actions.success(task)

    stack = InMemoryStack.create(app)
    await stack.handler.add_tasks([Task(id="p", type="parent", queue_id="f", payload={})])
    await stack.run_until_idle()
    [flow] = (await stack.barriers.list_flows()).flows
    [retire] = await stack.storage.get([derived_id(flow.flow_id, "retire", -1)])
    assert retire.type == FLOW_RETIRE_TYPE and retire.status is TaskStatus.EXECUTED
