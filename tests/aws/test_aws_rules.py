"""AWS's rules on moto (tests/aws_rules.py): each refuses what AWS refuses, pages what AWS pages,
and lags what AWS lags; and the readers of the backends follow every page (shown to fail with a
one-page reader put back)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.aws.test_engine_on_aws import Env
from tests.aws_rules import AwsRules, enforced
from tests.aws_support import aws_resources, fresh_settings
from tq_cloud import ExecutorActions, FlowConfig, JoinTarget, ManualClock, Task, TaskStatus
from tq_cloud.backends.aws import DynamoDbFlowBarrierProvider, build_stack
from tq_cloud.backends.aws.dynamo import n, s
from tq_cloud.core.registry import TaskQueuesManager


async def test_what_aws_refuses_is_refused(moto_endpoint: str, aws_rules: AwsRules) -> None:
    settings = fresh_settings(moto_endpoint)
    async with aws_resources(settings) as clients:
        long_key = "x" * 2100
        with pytest.raises(ClientError, match="Size of key"):
            await clients.dynamodb.put_item(TableName=settings.tasks_table, Item={"id": s(long_key)})
        with pytest.raises(ClientError, match="Size of key finished_key"):
            await clients.dynamodb.update_item(TableName=settings.tasks_table, Key={"id": s("a")},
                                               UpdateExpression="SET finished_key = :k, finished_ms = :m",
                                               ExpressionAttributeValues={":k": s("f" * 2100), ":m": n(1)})
        with pytest.raises(ClientError, match="maximum allowed size"):
            await clients.dynamodb.put_item(TableName=settings.tasks_table,
                                            Item={"id": s("big"), "body": s("b" * 410_000)})
        with pytest.raises(ClientError, match="at most 500"):
            await clients.kinesis.put_records(StreamName=settings.stream_name,
                                              Records=[{"Data": b"x", "PartitionKey": "k"}] * 501)
        with pytest.raises(ClientError, match="exceeds 1 MiB"):
            await clients.kinesis.put_record(StreamName=settings.stream_name, Data=b"x" * (1024 * 1024),
                                             PartitionKey="k")
        with pytest.raises(ClientError, match="1 to 64"):
            await clients.scheduler.create_schedule(
                Name="n" * 65, GroupName=settings.schedule_group, ScheduleExpression="at(2030-01-01T00:00:00)",
                FlexibleTimeWindow={"Mode": "OFF"}, Target={"Arn": "arn:aws:kinesis:us-east-1:1:stream/s",
                                                            "RoleArn": settings.scheduler_role_arn})
        for i in range(7):
            await clients.dynamodb.put_item(TableName=settings.tasks_table, Item={"id": s(f"l{i}")})
        page = await clients.dynamodb.scan(TableName=settings.tasks_table)
        assert len(page["Items"]) == 3 and "LastEvaluatedKey" in page, "a Scan answers a page"
    assert len(aws_rules.refused) == 6


def _one_page(self: DynamoDbFlowBarrierProvider, flow_id: str, after: int = -1, limit: int = 100) -> Any:
    """The reader as it was: one Query taken for the whole answer."""
    from tq_cloud.backends.aws.dynamodb_barriers import _flow_key, _step_key
    from tq_cloud.domain.flows import FlowStepResult

    async def read() -> list[FlowStepResult]:
        response = await self.client.query(
            TableName=self.table, ConsistentRead=True, Limit=limit,
            KeyConditionExpression="pk = :pk AND sk BETWEEN :from AND :to",
            ExpressionAttributeValues={":pk": _flow_key(flow_id), ":from": _step_key(after + 1),
                                       ":to": s("step#9999999")})
        return [FlowStepResult.model_validate_json(i["result"]["S"]) for i in response["Items"]]

    return read()


@pytest.fixture
def one_page_reader() -> bool:
    return False


@pytest.fixture
async def flows_env(moto_endpoint: str, one_page_reader: bool, monkeypatch: pytest.MonkeyPatch
                    ) -> AsyncIterator[tuple[Env, TaskQueuesManager, list[dict[str, Any]]]]:
    if one_page_reader:
        monkeypatch.setattr(DynamoDbFlowBarrierProvider, "step_results_page", _one_page)
    registry, joins = TaskQueuesManager(), []

    @registry.task("f", "parent")
    async def parent(task: Task, actions: ExecutorActions) -> None:
        actions.start_flow([{"type": "step", "queue_id": "f", "payload": {"i": i}} for i in range(8)],
                           FlowConfig(join=JoinTarget(type="join", queue_id="f")))
        actions.success(task)

    @registry.task("f", "step")
    async def step(task: Task, actions: ExecutorActions) -> None:
        actions.success(task, {"i": task.payload["i"]})

    @registry.task("f", "join")
    async def join(task: Task, actions: ExecutorActions) -> None:
        joins.append(task.payload["flow_results"])
        actions.success(task)

    settings = fresh_settings(moto_endpoint)
    clock = ManualClock()
    async with aws_resources(settings) as clients:
        yield Env(await build_stack(registry, settings, clients, clock=clock), clock), registry, joins


async def test_a_join_reads_every_page_of_its_steps(flows_env: Any) -> None:
    """Under the rules a Query answers 3 items a page: a flow of 8 steps spans 3 pages, as a flow
    whose results pass 1 MB does on AWS."""
    env, _, joins = flows_env
    await env.stack.handler.add_tasks([Task(id="p", type="parent", queue_id="f", payload={})])
    await env.drain()
    [summary] = joins
    assert summary["counts"] == {"succeeded": 8, "failed": 0, "ignored": 0}, "a join counted what it did not read"
    assert sorted(step["step_index"] for step in summary["steps"]) == list(range(8))


@pytest.mark.parametrize("one_page_reader", [True])
async def test_the_pages_check_fails_with_a_one_page_reader(flows_env: Any) -> None:
    with pytest.raises(AssertionError, match="did not read"):
        await test_a_join_reads_every_page_of_its_steps(flows_env)


async def test_nothing_is_lost_when_index_reads_lag(moto_endpoint: str) -> None:
    """An index is eventually consistent: a sweep may not see a row written just before. It is
    swept by a later sweep; nothing is lost, nothing is sent twice."""
    registry, runs = TaskQueuesManager(), []

    @registry.task("q", "t")
    async def ok(task: Task, actions: ExecutorActions) -> None:
        runs.append(task.key)
        actions.success(task)

    lagging = AwsRules(index_lag=30.0)
    with enforced(lagging):
        settings = fresh_settings(moto_endpoint)
        clock = ManualClock()
        async with aws_resources(settings) as clients:
            env = Env(await build_stack(registry, settings, clients, clock=clock), clock)
            due = clock.now() + timedelta(minutes=5)
            await env.stack.handler.add_tasks([Task(id=f"d{i}", type="t", queue_id="q", payload={}, execute_at=due)
                                               for i in range(5)])
            await env.later(300)
            assert runs == [], "the rows were written just now: the due index does not show them yet"
            rows = await env.rows()
            assert {r.status for r in rows.values()} == {TaskStatus.SCHEDULED}
            lagging.index_lag = 0.0  # the index caught up
            await env.later(60)
            assert sorted(runs) == [f"d{i}" for i in range(5)]


async def test_the_largest_entity_key_allowed_fits_the_projection_index(moto_endpoint: str) -> None:
    """An entity key is refused past 1,024 bytes where the task is made; one just within
    is written by the projection provider under AWS's key limits. Past it (the check taken
    out), the index refuses the write and the projection would be lost at commit."""
    from datetime import UTC, datetime

    from tq_cloud import EntityRef
    from tq_cloud.backends.aws import DynamoDbProjectionProvider
    from tq_cloud.domain.task import MAX_ENTITY_KEY_BYTES
    from tq_cloud.ports.projections import EntityTaskProjection, ProjectionStatus

    settings = fresh_settings(moto_endpoint)
    async with aws_resources(settings) as clients:
        provider = DynamoDbProjectionProvider(clients.dynamodb, settings.projections_table)
        now = datetime.now(UTC)

        def entry(entity: EntityRef, task_id: str) -> EntityTaskProjection:
            return EntityTaskProjection(task_id=task_id, entity_id=entity.id, entity_type=entity.type, task_type="t",
                                        queue_id="q", status=ProjectionStatus.EXECUTED, created_at=now, updated_at=now)

        largest = EntityRef(type="u", id="x" * (MAX_ENTITY_KEY_BYTES - 9))
        await provider.upsert_projections([entry(largest, "fits")])
        assert await provider.get_projection("fits") is not None
        unchecked = EntityRef.model_construct(type="u", id="x" * 2100)  # the check taken out
        with pytest.raises(ClientError, match="Size of key"):
            await provider.upsert_projections([entry(unchecked, "lost")])
