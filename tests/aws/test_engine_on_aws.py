"""The whole engine on the AWS backends (moto's server): every path, faults and redelivery."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.aws_support import CallFaults, aws_resources, fresh_settings
from tq_cloud import EntityRef, ExecutorActions, FlowConfig, JoinTarget, ManualClock, Task, TaskStatus
from tq_cloud.backends.aws import AwsStack, build_stack
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.local.poller import KinesisShardPoller
from tq_cloud.local.scheduler import EmulatedScheduler
from tq_cloud.local.view import scan_all


class Env:
    def __init__(self, stack: AwsStack, clock: ManualClock) -> None:
        self.stack = stack
        self.clock = clock
        self.poller = KinesisShardPoller(stack.clients.kinesis, stack.settings.stream_name, stack.handler)
        self.scheduler = EmulatedScheduler(stack.clients.scheduler, stack.clients.kinesis, stack.settings.schedule_group)

    async def drain(self, rounds: int = 20) -> int:
        """Poll every shard and sweep until a round does nothing."""
        total = 0
        for _ in range(rounds):
            done = await self.poller.poll_once()
            swept = await self.stack.handler.process_mature_tasks() + await self.scheduler.fire_due(self.clock.now())
            total += done
            if not done and not swept:
                return total
        return total

    async def later(self, seconds: float) -> int:
        await self.clock.advance(seconds)
        return await self.drain()

    async def rows(self) -> dict[str, Task]:
        items = await scan_all(self.stack.clients.dynamodb, self.stack.settings.tasks_table)
        return {t.key: t for t in await self.stack.storage.get([i["id"]["S"] for i in items])}


@pytest.fixture
def registry() -> TaskQueuesManager:
    return TaskQueuesManager()


@pytest.fixture
async def env(moto_endpoint: str, registry: TaskQueuesManager) -> AsyncIterator[Env]:
    settings = fresh_settings(moto_endpoint)
    clock = ManualClock()
    async with aws_resources(settings) as clients:
        yield Env(await build_stack(registry, settings, clients, clock=clock), clock)


async def test_immediate_success_writes_nothing_to_dynamodb(env: Env, registry: TaskQueuesManager) -> None:
    @registry.task("q", "t")
    async def ok(task: Task, actions: ExecutorActions) -> None:
        actions.success(task)

    await env.stack.handler.add_tasks([Task(type="t", queue_id="q", payload=i) for i in range(10)], allow_unknown=True)
    assert await env.drain() == 10
    assert await env.rows() == {}


async def test_retries_wait_in_dynamodb_because_kinesis_cannot_delay(env: Env, registry: TaskQueuesManager) -> None:
    attempts: list[int] = []

    @registry.task("q", "t", retries=2)
    async def flaky(task: Task, actions: ExecutorActions) -> None:
        attempts.append(task.retry_count)
        actions.fail(task, "later") if task.retry_count < 2 else actions.success(task, "ok")

    await env.stack.handler.add_tasks([Task(id="r", type="t", queue_id="q", payload={})], allow_unknown=True)
    await env.drain()
    assert attempts == [0] and (await env.rows())["r"].status is TaskStatus.SCHEDULED
    await env.later(1.9)
    assert attempts == [0], "not before its back-off"
    await env.later(0.1)
    await env.later(8)
    assert attempts == [0, 1, 2]
    row = (await env.rows())["r"]
    assert row.status is TaskStatus.EXECUTED and row.execution_result == "ok"


async def test_delayed_task_and_exhaustion(env: Env, registry: TaskQueuesManager) -> None:
    @registry.task("q", "later")
    async def later(task: Task, actions: ExecutorActions) -> None:
        actions.success(task)

    @registry.task("q", "doomed", retries=1, store_on_failure=True)
    async def doomed(task: Task, actions: ExecutorActions) -> None:
        actions.fail(task, "no")

    from datetime import timedelta

    when = env.clock.now() + timedelta(minutes=10)
    await env.stack.handler.add_tasks([Task(id="d", type="later", queue_id="q", payload={}, execute_at=when),
                                       Task(id="x", type="doomed", queue_id="q", payload={}),
                                       Task(id="u", type="unknown", queue_id="q", payload={})], allow_unknown=True)
    await env.drain()
    await env.later(2)
    rows = await env.rows()
    assert rows["d"].status is TaskStatus.SCHEDULED
    assert rows["x"].status is TaskStatus.FAILED and rows["x"].retry_count == 1
    assert rows["u"].status is TaskStatus.IGNORED
    await env.later(600)
    assert (await env.rows())["d"].status is TaskStatus.EXECUTED


async def test_flow_with_entity_and_timeout_sentinel(env: Env, registry: TaskQueuesManager) -> None:
    joins: list[dict[str, Any]] = []

    @registry.task("f", "parent")
    async def parent(task: Task, actions: ExecutorActions) -> None:
        actions.start_flow([{"type": "step", "queue_id": "f", "payload": i} for i in range(3)],
                           FlowConfig(join=JoinTarget(type="join", queue_id="f"), timeout_ms=60_000,
                                      entity=EntityRef(id="o1", type="order")))
        actions.success(task)

    @registry.task("f", "step")
    async def step(task: Task, actions: ExecutorActions) -> None:
        actions.success(task, task.payload * 2)

    @registry.task("f", "join")
    async def join(task: Task, actions: ExecutorActions) -> None:
        joins.append(task.payload["flow_results"])
        actions.success(task, "joined")

    await env.stack.handler.add_tasks([Task(type="parent", queue_id="f", payload=None)], allow_unknown=True)
    await env.drain()
    [results] = joins
    assert [s["result"] for s in results["steps"]] == [0, 2, 4]
    assert await env.stack.timer.pending() == [], "the timeout schedule was deleted with the join"
    [projection] = await env.stack.projections.for_entity("order", "o1")
    assert projection.status == "executed" and projection.result == "joined"


async def test_flow_timeout_fires_through_the_scheduler(env: Env, registry: TaskQueuesManager) -> None:
    joins: list[dict[str, Any]] = []

    @registry.task("f", "parent")
    async def parent(task: Task, actions: ExecutorActions) -> None:
        actions.start_flow([{"type": "never", "queue_id": "slow", "payload": 1}],
                           FlowConfig(join=JoinTarget(type="join", queue_id="f"), timeout_ms=30_000))
        actions.success(task)

    @registry.task("f", "join")
    async def join(task: Task, actions: ExecutorActions) -> None:
        joins.append(task.payload["flow_results"])
        actions.success(task)

    @registry.task("slow", "never", retries=5, store_on_failure=True)
    async def never(task: Task, actions: ExecutorActions) -> None:
        actions.fail(task, "still waiting")

    await env.stack.handler.add_tasks([Task(type="parent", queue_id="f", payload=None)], allow_unknown=True)
    await env.drain()
    assert len(await env.stack.timer.pending()) == 1
    await env.later(29)
    assert joins == []
    await env.later(1)
    [results] = joins
    assert results["timed_out"] and results["steps"] == []


async def test_crash_before_commit_then_redelivery_converges(env: Env, registry: TaskQueuesManager) -> None:
    runs: list[str] = []

    @registry.task("q", "t", store_on_failure=True)
    async def ok(task: Task, actions: ExecutorActions) -> None:
        runs.append(task.key)
        actions.add_tasks([Task(type="child", queue_id="q", payload={}, force_store=True)])
        actions.success(task)

    @registry.task("q", "child")
    async def child(task: Task, actions: ExecutorActions) -> None:
        runs.append("child")
        actions.success(task)

    await env.stack.handler.add_tasks([Task(id="p", type="t", queue_id="q", payload={}, force_store=True)], allow_unknown=True)
    faults = CallFaults(env.stack.clients.dynamodb, "dynamodb.UpdateItem", "ThrottlingException", times=3)
    await env.drain()
    assert faults.raised == 3
    rows = await env.rows()
    assert rows["p"].status is TaskStatus.EXECUTED
    children = [r for r in rows.values() if r.type == "child"]
    assert len(children) == 1 and children[0].status is TaskStatus.EXECUTED
    assert runs.count("child") == 1, "the child was dispatched once although its parent ran again"


async def test_duplicate_step_records_do_not_double_count(env: Env, registry: TaskQueuesManager) -> None:
    register_flow(registry, steps=2)

    await env.stack.handler.add_tasks([Task(id="p", type="parent", queue_id="f", payload=None)], allow_unknown=True)
    [parent_task] = [t for t in await _stream_tasks(env) if t.type == "parent"]
    await env.stack.handler.process_batch([parent_task])
    steps = [t for t in await _stream_tasks(env) if t.type == "step"]
    await env.stack.handler.process_batch([steps[0], steps[0].model_copy(deep=True)])
    await env.stack.handler.process_batch([steps[0].model_copy(deep=True)])
    counts = await env.stack.barriers.step_counts(steps[0].flow_meta.flow_id)  # type: ignore[union-attr]
    assert (counts.succeeded, counts.failed) == (1, 0)
    await env.stack.handler.process_batch([steps[1]])
    await env.stack.handler.process_batch([steps[1].model_copy(deep=True)])
    joins_in_stream = [t for t in await _stream_tasks(env) if t.type == "join"]
    assert len(joins_in_stream) == 1


def register_flow(registry: TaskQueuesManager, steps: int) -> list[dict[str, Any]]:
    """A parent starting a flow of `steps` steps that succeed with their index; returns the
    flow results each join run receives."""
    joins: list[dict[str, Any]] = []

    @registry.task("f", "parent")
    async def parent(task: Task, actions: ExecutorActions) -> None:
        actions.start_flow([{"type": "step", "queue_id": "f", "payload": i} for i in range(steps)],
                           FlowConfig(join=JoinTarget(type="join", queue_id="f")))
        actions.success(task)

    @registry.task("f", "step")
    async def step(task: Task, actions: ExecutorActions) -> None:
        actions.success(task, task.payload)

    @registry.task("f", "join")
    async def join(task: Task, actions: ExecutorActions) -> None:
        joins.append(task.payload["flow_results"])
        actions.success(task)

    return joins


async def _stream_tasks(env: Env) -> list[Task]:
    from tests.aws.test_kinesis import read_all, stream_tasks

    return stream_tasks(await read_all(env.stack.clients.kinesis, env.stack.settings.stream_name))


async def test_crash_after_the_barrier_is_met_dispatches_the_join_once(env: Env, registry: TaskQueuesManager) -> None:
    joins = register_flow(registry, steps=3)

    faults = CallFaults(env.stack.clients.dynamodb, "dynamodb.UpdateItem", "InternalServerError", times=8,
                        match=lambda p: '"is_join":true' in p.get("ExpressionAttributeValues", {})
                        .get(":body", {}).get("S", ""))
    await env.stack.handler.add_tasks([Task(type="parent", queue_id="f", payload=None)], allow_unknown=True)
    await env.drain()
    assert faults.raised == 8, "two commits failed past their call retries (4 tries each)"
    assert len(joins) == 1 and [s["result"] for s in joins[0]["steps"]] == [0, 1, 2]
    assert env.poller.redelivered + env.poller.requeued >= 2, "the two failed commits came back"


async def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from tq_cloud.backends.aws import AwsSettings

    monkeypatch.setenv("TQ_STREAM_NAME", "orders-stream")
    monkeypatch.setenv("TQ_DUE_BUCKETS", "16")
    settings = AwsSettings()
    assert settings.stream_name == "orders-stream" and settings.due_buckets == 16
    monkeypatch.setenv("TQ_DUE_BUCKETS", "0")
    with pytest.raises(Exception, match="due_buckets"):
        AwsSettings()


async def test_resources_have_ttl_and_the_indexes_the_backends_query(env: Env) -> None:
    ddb = env.stack.clients.dynamodb
    table = (await ddb.describe_table(TableName=env.stack.settings.tasks_table))["Table"]
    assert {i["IndexName"] for i in table["GlobalSecondaryIndexes"]} == {"due", "running", "finished"}
    ttl = await ddb.describe_time_to_live(TableName=env.stack.settings.tasks_table)
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "expires_at"


async def test_timeout_schedule_shape(env: Env) -> None:
    from datetime import UTC, datetime

    task = Task(id="sentinel", type="_flow.timeout", queue_id="f", payload={"flow_id": "x"},
                execute_at=datetime(2026, 1, 1, 0, 5, tzinfo=UTC))
    await env.stack.timer.schedule("flow-timeout-x", task)
    await env.stack.timer.schedule("flow-timeout-x", task)
    schedule = await env.stack.clients.scheduler.get_schedule(Name="flow-timeout-x",
                                                              GroupName=env.stack.settings.schedule_group)
    assert schedule["ScheduleExpression"] == "at(2026-01-01T00:05:00)"
    assert schedule["ActionAfterCompletion"] == "DELETE"
    assert schedule["Target"]["KinesisParameters"]["PartitionKey"] == "sentinel"
    assert Task.model_validate_json(schedule["Target"]["Input"]).id == "sentinel"
    await env.stack.timer.cancel("flow-timeout-x")
    await env.stack.timer.cancel("flow-timeout-x")
    assert await env.stack.timer.pending() == []


async def test_a_stored_row_this_version_cannot_decode_is_failed_and_the_sweep_goes_on(
        env: Env, registry: TaskQueuesManager) -> None:
    runs: list[str] = []

    @registry.task("q", "t")
    async def ok(task: Task, actions: ExecutorActions) -> None:
        runs.append(task.key)
        actions.success(task)

    due = env.clock.now()
    await env.stack.storage.insert([Task(id=i, type="t", queue_id="q", payload={}, execute_at=due, force_store=True)
                                    for i in ("good", "newer")])
    newer = '{"id":"newer","type":"t","queue_id":"q","payload":{},"a_field_of_a_newer_version":1}'
    await env.stack.clients.dynamodb.update_item(
        TableName=env.stack.settings.tasks_table, Key={"id": {"S": "newer"}}, UpdateExpression="SET body = :b",
        ExpressionAttributeValues={":b": {"S": newer}})
    await env.drain()
    assert runs == ["good"]
    item = (await env.stack.clients.dynamodb.get_item(TableName=env.stack.settings.tasks_table,
                                                      Key={"id": {"S": "newer"}}))["Item"]
    assert item["status"]["S"] == "failed" and "cannot decode" in item["decode_error"]["S"]
    assert "due_bucket" not in item and "running_bucket" not in item, "never claimed again"


async def test_flow_items_are_kept_for_the_flows_life_and_then_expire(env: Env) -> None:
    from datetime import timedelta

    from tq_cloud.backends.aws import DynamoDbFlowBarrierProvider, DynamoDbProjectionProvider
    from tq_cloud.domain.flows import FlowStepResult
    from tq_cloud.ports.barrier import BarrierState
    from tq_cloud.ports.projections import EntityTaskProjection, ProjectionStatus

    ddb, settings = env.stack.clients.dynamodb, env.stack.settings
    barriers = DynamoDbFlowBarrierProvider(ddb, settings.barriers_table, ttl=timedelta(days=14))
    started = env.clock.now()
    await barriers.init_barrier("f", 2, started, deadline=started + timedelta(days=30))

    async def item(sk: str) -> dict[str, Any]:
        response = await ddb.get_item(TableName=settings.barriers_table, Key={"pk": {"S": "flow#f"}, "sk": {"S": sk}})
        return dict(response["Item"])

    assert "expires_at" not in await item("meta"), "an active flow's barrier never expires"
    await barriers.batch_decrement_and_check("f", [FlowStepResult(step_index=0, status="success")],
                                             keep_until=started + timedelta(days=30))
    pack = next(i["sk"]["S"] for i in await scan_all(ddb, settings.barriers_table) if i["sk"]["S"].startswith("pack#"))
    for sk in (pack, "count#00000"):
        expiry = int((await item(sk))["expires_at"]["N"])
        assert expiry == int((started + timedelta(days=44)).timestamp()), "the deadline plus the retention"
    assert await barriers.close("f", BarrierState.TIMED_OUT)
    assert "expires_at" in await item("meta"), "a closed flow's barrier expires after the retention"

    projections = DynamoDbProjectionProvider(ddb, settings.projections_table, ttl=timedelta(days=30))
    await projections.upsert_projections([EntityTaskProjection(
        task_id="p", entity_id="e", entity_type="t", task_type="k", queue_id="q",
        status=ProjectionStatus.EXECUTED, created_at=started, updated_at=started)])
    row = (await ddb.get_item(TableName=settings.projections_table, Key={"task_id": {"S": "p"}}))["Item"]
    assert int(row["expires_at"]["N"]) == int((started + timedelta(days=30)).timestamp())


async def test_lowering_the_due_buckets_between_deploys_strands_no_row(env: Env) -> None:
    from tq_cloud.backends.aws import DynamoDbAdapter

    ddb, table = env.stack.clients.dynamodb, env.stack.settings.tasks_table
    before, after = DynamoDbAdapter(ddb, table, buckets=16), DynamoDbAdapter(ddb, table, buckets=2)
    due = env.clock.now()
    await before.insert([Task(id=f"t{i}", type="t", queue_id="q", payload={}, execute_at=due, force_store=True)
                         for i in range(40)])
    claimed = await after.claim_mature(due, 100)
    assert len(claimed) == 40, "the sweeper of the new deploy sweeps every bucket a writer used"


async def test_a_large_fan_out_is_published_in_full_chunks_over_many_keys(env: Env, registry: TaskQueuesManager
                                                                          ) -> None:
    """start_flow of 1,200 steps from one executor: the barrier is initialised once (a meta
    item and one count item per 100 steps), the steps go out packed in aggregated records of at
    most 25 KB, each step under its own partition key inside them."""
    register_flow(registry, steps=1200)
    chunks: list[list[str]] = []
    env.stack.clients.kinesis.meta.events.register(
        "before-parameter-build.kinesis.PutRecords",
        lambda params, **_: chunks.append([r["PartitionKey"] for r in params["Records"]]))
    await env.stack.handler.add_tasks([Task(id="p", type="parent", queue_id="f", payload=None)], allow_unknown=True)
    [parent_task] = [t for t in await _stream_tasks(env) if t.type == "parent"]
    chunks.clear()
    await env.stack.handler.process_batch([parent_task])
    steps = [t for t in await _stream_tasks(env) if t.type == "step"]
    assert len(chunks) == 1 and 1200 / 200 < len(chunks[0]) < 1200 / 20, "1,200 steps in a few dozen records"
    assert len({t.key for t in steps}) == 1200 and all(t.partition_key is None for t in steps)
    items = await scan_all(env.stack.clients.dynamodb, env.stack.settings.barriers_table)
    assert sorted(i["sk"]["S"][:5] for i in items) == ["count"] * 12 + ["meta"]
