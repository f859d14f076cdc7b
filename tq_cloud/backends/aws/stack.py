"""One call builds the whole AWS-backed engine from settings:

    async with aws_stack(app, AwsSettings()) as stack:
        await stack.handler.add_tasks([...])
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import partial
from typing import Any

from tq_cloud.assembly.handler import TaskHandler
from tq_cloud.backends.aws.dynamodb_barriers import DynamoDbFlowBarrierProvider
from tq_cloud.backends.aws.dynamodb_counters import DynamoDbCounters
from tq_cloud.backends.aws.dynamodb_locks import DynamoDbLockProvider
from tq_cloud.backends.aws.dynamodb_projections import DynamoDbProjectionProvider
from tq_cloud.backends.aws.dynamodb_tasks import DynamoDbAdapter
from tq_cloud.backends.aws.kinesis import KinesisQueue
from tq_cloud.backends.aws.metric_counters import MetricCounters
from tq_cloud.backends.aws.recurring import ScheduleSync
from tq_cloud.backends.aws.scheduler import EventBridgeTimer
from tq_cloud.backends.aws.settings import AwsSettings
from tq_cloud.backends.aws.sqs_delay import SqsDelayLane
from tq_cloud.backends.memory.locks import InMemoryLockProvider
from tq_cloud.clock import Clock, SystemClock
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.core.settings import HandlerSettings
from tq_cloud.errors import EndpointUnreachableError
from tq_cloud.ports.locks import LockProvider


@dataclass
class AwsClients:
    kinesis: Any
    dynamodb: Any
    scheduler: Any
    sqs: Any


@asynccontextmanager
async def open_clients(settings: AwsSettings, session: Any = None) -> AsyncIterator[AwsClients]:
    """The aioboto3 clients of every service the engine calls, open for the block.

    Example:
        async with open_clients(AwsSettings()) as clients:
            await clients.kinesis.describe_stream_summary(StreamName="tq-tasks")
    """
    import aioboto3
    from botocore.config import Config

    session = session or aioboto3.Session(region_name=settings.region)
    config = Config(retries={"mode": "standard", "max_attempts": settings.max_attempts})
    async with AsyncExitStack() as exits:
        def client(name: str) -> Any:
            return exits.enter_async_context(session.client(
                name, endpoint_url=settings.endpoint_of(name), region_name=settings.region, config=config))

        yield AwsClients(await client("kinesis"), await client("dynamodb"), await client("scheduler"),
                         await client("sqs"))


@dataclass
class AwsStack:
    """The engine on AWS, put together: the settings, the clients, each port's DynamoDB, Kinesis,
    SQS or Scheduler backend, and the TaskHandler built from them.

    Example:
        async with aws_stack(app, AwsSettings()) as stack:
            await stack.handler.send(send, {"to": "a@b.c"})
            row = await stack.storage.get(["task-1"])
    """
    settings: AwsSettings
    clients: AwsClients
    queue: KinesisQueue
    storage: DynamoDbAdapter
    barriers: DynamoDbFlowBarrierProvider
    projections: DynamoDbProjectionProvider
    locks: LockProvider
    timer: EventBridgeTimer
    handler: TaskHandler
    schedules: ScheduleSync
    counters: DynamoDbCounters | MetricCounters | None = None
    """Where the console reads its exact counts (`AwsSettings.counters`)."""


async def build_stack(
    registry: TaskQueuesManager, aws: AwsSettings, clients: AwsClients, *,
    clock: Clock | None = None, **handler_options: Any,
) -> AwsStack:
    """`handler_options` go to TaskHandler (settings=HandlerSettings(...), async_manager, ...).

    Example:
        async with open_clients(settings) as clients:
            stack = await build_stack(app, settings, clients, settings=HandlerSettings(history=True))
    """
    settings = aws
    clock = clock or SystemClock()
    if aws.history:
        handler_options["settings"] = replace(handler_options.get("settings") or HandlerSettings(), history=True)
    history = (handler_options.get("settings") or HandlerSettings()).history
    summary = await clients.kinesis.describe_stream_summary(StreamName=settings.stream_name)
    queue = KinesisQueue(clients.kinesis, settings.stream_name, aggregate_bytes=settings.aggregate_bytes,
                         alone=partial(registry.packs_alone, history=history))
    storage = DynamoDbAdapter(clients.dynamodb, settings.tasks_table, buckets=settings.due_buckets,
                              finished_ttl=timedelta(days=settings.finished_ttl_days))
    barriers = DynamoDbFlowBarrierProvider(clients.dynamodb, settings.barriers_table)
    projections = DynamoDbProjectionProvider(clients.dynamodb, settings.projections_table)
    locks: LockProvider = (DynamoDbLockProvider(clients.dynamodb, settings.locks_table, clock)
                           if settings.distributed_claims else InMemoryLockProvider(clock))
    timer = EventBridgeTimer(clients.scheduler, group=settings.schedule_group,
                             stream_arn=summary["StreamDescriptionSummary"]["StreamARN"],
                             role_arn=settings.scheduler_role_arn)
    lane = SqsDelayLane(clients.sqs, settings.delay_queue_url, clock) if settings.delay_queue_url else None
    table_counters = DynamoDbCounters(clients.dynamodb, settings.tasks_table) if settings.counters == "table" else None
    handler = TaskHandler(queue=queue, registry=registry, storage=storage, locks=locks, clock=clock,
                          flow_barriers=barriers, projections=projections, timer=timer, delay_lane=lane,
                          counters=table_counters, **handler_options)
    counters = table_counters or (MetricCounters(settings, settings.metrics_service)  # the worker's EMF writes them
                                  if settings.counters == "metrics" else None)
    schedules = ScheduleSync(clients.scheduler, group=settings.schedule_group, stream_arn=timer.stream_arn,
                             role_arn=settings.scheduler_role_arn, dead_letter_arn=settings.schedule_dlq_arn)
    return AwsStack(settings, clients, queue, storage, barriers, projections, locks, timer, handler, schedules,
                    counters)


@asynccontextmanager
async def aws_stack(
    registry: TaskQueuesManager, settings: AwsSettings | None = None, *, session: Any = None, **options: Any,
) -> AsyncIterator[AwsStack]:
    """The engine on AWS (or moto/LocalStack when `settings.endpoint_url` is set).

    Example:
        async with aws_stack(app, AwsSettings()) as stack:
            await stack.handler.send(send, {"to": "a@b.c"})
    """
    settings = settings or AwsSettings()
    async with open_clients(settings, session) as clients:
        yield await build_stack(registry, settings, clients, **options)


async def check_reachable(settings: AwsSettings, within: float = 5.0) -> None:
    """Fail within `within` seconds if `settings.endpoint_url` (a local AWS) does not answer,
    rather than after the SDK's retries (about 45 s per call): EndpointUnreachableError says
    what to do. Nothing is checked for AWS itself (no endpoint URL)."""
    import aioboto3
    from botocore.config import Config

    config = Config(connect_timeout=2, read_timeout=3, retries={"mode": "standard", "max_attempts": 1})
    for service, call in (("dynamodb", "list_tables"), ("kinesis", "list_streams")):
        endpoint = settings.endpoint_of(service)
        if not endpoint or (service != "dynamodb" and endpoint == settings.endpoint_of("dynamodb")):
            continue
        try:
            async with aioboto3.Session(region_name=settings.region).client(
                    service, endpoint_url=endpoint, region_name=settings.region, config=config) as client:
                await asyncio.wait_for(getattr(client, call)(Limit=1), within)
        except Exception as exc:
            raise EndpointUnreachableError(
                f"cannot reach {endpoint} ({type(exc).__name__}): start moto or LocalStack there, "
                "or leave out --endpoint-url" + ("" if endpoint == settings.endpoint_url else
                                                 f" (TQ_{service.upper()}_ENDPOINT_URL)")) from exc
