"""Least privilege, checked both ways: the template grants each function exactly the calls listed
in infra/iam-calls.yaml, and the functions, run against moto's server over a workload that takes
every code path that reaches AWS, make no call that the list does not name."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.aws.test_lambda_handlers import FakeContext, event_of
from tests.aws_support import aws_resources, fresh_settings
from tests.test_template import yaml_template
from tq_cloud import EntityRef, ExecutorActions, FlowConfig, JoinTarget, ManualClock, Task
from tq_cloud.aws_lambda import kinesis_handler, sweeper_handler
from tq_cloud.backends.aws import AwsSettings
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.schedules.firing import firing

ROOT = Path(__file__).resolve().parents[1]
Grant = tuple[str, str]


def listed(function: str, parts: tuple[str, ...] = ("code", "platform")) -> set[Grant]:
    calls = yaml.safe_load((ROOT / "infra" / "iam-calls.yaml").read_text())[function]
    out = set()
    for part in parts:
        for action, resources in calls[part].items():
            for resource in [resources] if isinstance(resources, str) else resources:
                out.add((action, resource))
    return out


def _resource(expr: Any) -> str:
    """A policy resource as the list names it: a logical id, with a suffix where there is one."""
    if isinstance(expr, dict) and "Fn::GetAtt" in expr:
        target = expr["Fn::GetAtt"]
        return str(target[0] if isinstance(target, list) else target.split(".")[0])
    if isinstance(expr, dict) and "Fn::Sub" in expr:
        text = str(expr["Fn::Sub"])
        if "/aws/lambda/" in text:
            return "log-group/" + text.split("}-")[-1].split(":")[0]
        text = re.sub(r"arn:\$\{AWS::Partition\}:[a-z]+:\$\{AWS::Region\}:\$\{AWS::AccountId\}:schedule/", "", text)
        return re.sub(r"\$\{(\w+)(\.Arn)?\}", r"\1", text)
    raise AssertionError(f"unexpected resource expression {expr!r}")


def granted(template: dict[str, Any], function: str) -> set[Grant]:
    """What a function's role grants, or a managed policy (ProducerPolicy)."""
    props = template["Resources"][function]["Properties"]
    if "PolicyDocument" in props:
        documents = [props["PolicyDocument"]]
    else:
        assert "Policies" not in props, "SAM policy templates grant more than the calls we make"
        role = props["Role"]["Fn::GetAtt"][0]
        documents = [policy["PolicyDocument"] for policy in template["Resources"][role]["Properties"]["Policies"]]
    out = set()
    for statement in (s for document in documents for s in document["Statement"]):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert "*" not in resources, f"{function}: a grant on every resource"
        out |= {(a, _resource(r)) for a in actions for r in resources}
    return out


@pytest.mark.parametrize("function", ["WorkerFunction", "SweeperFunction", "ProducerPolicy"])
def test_the_template_grants_exactly_the_listed_calls(function: str) -> None:
    assert granted(yaml_template(), function) == listed(function)


def test_the_grant_check_fails_on_an_extra_grant() -> None:
    template = yaml_template()
    statements = template["Resources"]["SweeperRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    statements.append({"Effect": "Allow", "Action": "dynamodb:DeleteItem", "Resource": {"Fn::GetAtt": ["TasksTable", "Arn"]}})
    assert granted(template, "SweeperFunction") - listed("SweeperFunction") == {("dynamodb:DeleteItem", "TasksTable")}


def test_passrole_only_to_the_scheduler_and_the_scheduler_trusts_only_its_group() -> None:
    resources = yaml_template()["Resources"]
    [passrole] = [s for s in resources["WorkerRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
                  if s["Action"] == "iam:PassRole"]
    assert passrole["Condition"] == {"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}}
    trust = resources["SchedulerRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Condition"]
    assert "schedule-group/${FlowTimeoutScheduleGroup}" in trust["ArnLike"]["aws:SourceArn"]["Fn::Sub"]


class CallLog:
    """Every AWS call a stack's clients make, as (action, resource named as in the list)."""

    def __init__(self, settings: AwsSettings) -> None:
        self.names = {settings.tasks_table: "TasksTable", settings.barriers_table: "BarriersTable",
                      settings.projections_table: "ProjectionsTable", settings.locks_table: "LocksTable",
                      settings.stream_name: "TasksStream", settings.delay_queue_url: "DelayQueue"}
        self.calls: set[Grant] = set()

    def attach(self, clients: Any) -> None:
        for client in (clients.kinesis, clients.dynamodb, clients.scheduler, clients.sqs):
            client.meta.events.register("before-parameter-build.*.*", self._record)

    def _record(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        service = model.service_model.service_name
        action = f"{service}:{model.name}"
        if service == "sqs":  # SendMessageBatch is authorised as sqs:SendMessage
            self.calls.add((action.removesuffix("Batch"), self.names.get(params.get("QueueUrl"), "unknown-queue")))
            return
        if service == "scheduler":
            recurring = str(params.get("Name", "")).startswith("schedule.")
            self.calls.add((action, "FlowTimeoutScheduleGroup/schedule.*" if recurring else "FlowTimeoutScheduleGroup/*"))
            if model.name in ("CreateSchedule", "UpdateSchedule"):
                self.calls.add(("iam:PassRole", "SchedulerRole"))
            return
        tables = [v["TableName"] for item in params.get("TransactItems", []) for v in item.values()]
        tables = tables or list(params.get("RequestItems", {})) or [params.get("TableName") or params.get("StreamName")]
        for name in tables:
            resource = self.names.get(name, f"unknown:{name}")
            self.calls.add((action, f"{resource}/index/*" if params.get("IndexName") else resource))


def workload_app(clock: ManualClock) -> TaskQueuesManager:
    app = TaskQueuesManager()
    join = JoinTarget(type="join", queue_id="q")

    @app.task("q", "parent", store_on_failure=True)
    async def parent(task: Task, actions: ExecutorActions) -> None:
        actions.add_tasks([Task(type="child", queue_id="q", payload={}, entity=EntityRef(type="e", id="1"),
                                force_store=True)])
        actions.start_flow([{"type": "child", "queue_id": "q", "payload": {}}] * 2,
                           FlowConfig(join=join, timeout_ms=60_000, entity=EntityRef(type="e", id="1")))
        actions.success(task)

    @app.task("q", "child", retries=1, store_on_failure=True)
    async def child(task: Task, actions: ExecutorActions) -> None:
        actions.fail(task, "once") if task.retry_count == 0 else actions.success(task, "ok")

    @app.task("q", "join")
    async def joined(task: Task, actions: ExecutorActions) -> None:
        actions.success(task)

    app.schedule("nightly", task=joined, cron="0 2 * * *", overlap="skip")
    return app


async def unread(settings: AwsSettings, seen: set[str]) -> list[Task]:
    """Records on the stream not delivered yet (read with the test's own clients)."""
    from tests.aws.test_kinesis import read_all, stream_tasks

    async with aws_resources(settings) as clients:
        records = await read_all(clients.kinesis, settings.stream_name)
    fresh = [r for r in records if r["SequenceNumber"] not in seen]
    seen |= {r["SequenceNumber"] for r in fresh}
    return stream_tasks(fresh)


@pytest.fixture
def settings(moto_endpoint: str) -> Iterator[AwsSettings]:
    settings = fresh_settings(moto_endpoint).model_copy(update={"distributed_claims": True})

    async def create() -> None:
        async with aws_resources(settings):
            pass

    asyncio.run(create())
    yield settings


def test_the_functions_make_no_call_beyond_the_list(settings: AwsSettings) -> None:
    clock = ManualClock()
    app = workload_app(clock)
    worker, sweeper = kinesis_handler(app, settings, clock=clock), sweeper_handler(app, settings, clock=clock)
    worker_log, sweeper_log = CallLog(settings), CallLog(settings)
    for handler, log in ((worker, worker_log), (sweeper, sweeper_log)):
        stack = handler.runtime.run(handler.runtime.stack())  # type: ignore[attr-defined]
        log.attach(stack.clients)
    seen: set[str] = set()
    batch: list[Task] = [Task(id="p", type="parent", queue_id="q", payload={}, force_store=True),
                         firing(app.schedules["nightly"], clock.now())]
    for _ in range(8):  # deliver what was published, sweep what is due, until quiet
        worker(event_of(*batch), FakeContext())
        worker.runtime.run(clock.advance(120))  # type: ignore[attr-defined]
        sweeper({}, FakeContext())
        batch = asyncio.run(unread(settings, seen))
    assert worker_log.calls <= listed("WorkerFunction", ("code",)), worker_log.calls - listed("WorkerFunction")
    assert sweeper_log.calls <= listed("SweeperFunction", ("code",)), sweeper_log.calls - listed("SweeperFunction")
    assert {("dynamodb:PutItem", "BarriersTable"), ("scheduler:CreateSchedule", "FlowTimeoutScheduleGroup/*"),
            ("dynamodb:BatchGetItem", "TasksTable"), ("dynamodb:PutItem", "LocksTable")} <= worker_log.calls
    assert ("dynamodb:Query", "TasksTable/index/*") in sweeper_log.calls
    assert ("scheduler:CreateSchedule", "FlowTimeoutScheduleGroup/schedule.*") in sweeper_log.calls


async def test_a_producer_makes_no_call_beyond_its_policy(settings: AwsSettings) -> None:
    """add_tasks down every route (now, the delay lane, stored for later, force_store)."""
    from datetime import UTC, datetime, timedelta

    from tq_cloud.backends.aws import aws_stack
    from tq_cloud.local.provision import create_queue

    async with aws_resources(settings) as clients:
        url = await create_queue(clients, f"{settings.stream_name}-delays")
    settings = settings.model_copy(update={"delay_queue_url": url})
    log = CallLog(settings)
    now = datetime.now(UTC)
    async with aws_stack(TaskQueuesManager(), settings) as stack:
        log.attach(stack.clients)
        await stack.handler.add_tasks([
            Task(type="t", queue_id="q", payload={}), Task(type="t", queue_id="q", payload={}, force_store=True),
            Task(type="t", queue_id="q", payload={}, execute_at=now + timedelta(minutes=5)),
            Task(id="later", type="t", queue_id="q", payload={}, execute_at=now + timedelta(hours=1)),
            Task(id="stored", type="t", queue_id="q", payload={}, force_store=True)], allow_unknown=True)
        with pytest.raises(TimeoutError):
            await stack.handler.result("stored")  # results, and cancels, are a producer's too
        assert await stack.handler.cancel("later") and not await stack.handler.cancel("ghost")
    opened = {("kinesis:DescribeStreamSummary", "TasksStream")}  # by aws_stack, before the log was attached
    assert log.calls | opened == listed("ProducerPolicy", ("code",))
