"""Creates the resources template.yaml declares, for local runs and tests (moto, LocalStack):
what `sam deploy` creates in AWS, made here from the same template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tq_cloud.backends.aws.dynamo import error_code
from tq_cloud.backends.aws.settings import AwsSettings
from tq_cloud.local.ready import enable_ttl, stream_ready, table_ready
from tq_cloud.local.template import default_shards, load_template, table_requests


async def create_resources(clients: Any, settings: AwsSettings, template: Path | None = None) -> None:
    """Create the stream, tables (with TTL) and schedule group if absent, and wait until each
    table (with its indexes) and the stream are ACTIVE (see ready.py)."""
    declared = load_template(template)
    tables = table_requests(declared, settings)
    for table in tables:
        try:
            await clients.dynamodb.create_table(**table["create"])
        except Exception as exc:
            if error_code(exc) != "ResourceInUseException":
                raise
    try:
        await clients.kinesis.create_stream(StreamName=settings.stream_name, ShardCount=default_shards(declared))
    except Exception as exc:
        if error_code(exc) != "ResourceInUseException":
            raise
    for table in tables:  # created at once above: they become ACTIVE side by side
        name = table["create"]["TableName"]
        await table_ready(clients.dynamodb, name)
        if table["ttl_attribute"]:
            await enable_ttl(clients.dynamodb, name, table["ttl_attribute"])
    await stream_ready(clients.kinesis, settings.stream_name)
    try:
        await clients.scheduler.create_schedule_group(Name=settings.schedule_group)
    except Exception as exc:
        if error_code(exc) != "ConflictException":
            raise


async def create_queue(clients: Any, name: str) -> str:
    """An SQS queue if absent (template.yaml's DelayQueue, WorkerFailureQueue); its URL."""
    response = await clients.sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30"})
    url: str = response["QueueUrl"]
    return url
