"""The keys and indexes each backend relies on, and creation of the resources for local runs
and tests (template.yaml declares the same for deployments)."""

from __future__ import annotations

from typing import Any

from tq_cloud.backends.aws.dynamo import error_code
from tq_cloud.backends.aws.dynamodb_projections import ENTITY_INDEX
from tq_cloud.backends.aws.dynamodb_tasks import DUE_INDEX, RUNNING_INDEX
from tq_cloud.backends.aws.settings import AwsSettings


def _index(name: str, hash_key: str, range_key: str, projection: str = "KEYS_ONLY") -> dict[str, Any]:
    return {"IndexName": name, "Projection": {"ProjectionType": projection},
            "KeySchema": [{"AttributeName": hash_key, "KeyType": "HASH"},
                          {"AttributeName": range_key, "KeyType": "RANGE"}]}


def table_definitions(settings: AwsSettings) -> list[dict[str, Any]]:
    def attrs(**kinds: str) -> list[dict[str, str]]:
        return [{"AttributeName": k, "AttributeType": v} for k, v in kinds.items()]

    def key(hash_key: str, range_key: str | None = None) -> list[dict[str, str]]:
        schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
        return schema + ([{"AttributeName": range_key, "KeyType": "RANGE"}] if range_key else [])

    return [
        {"TableName": settings.tasks_table, "KeySchema": key("id"),
         "AttributeDefinitions": attrs(id="S", due_bucket="S", execute_at_ms="N", running_bucket="S",
                                       processing_ms="N"),
         "GlobalSecondaryIndexes": [_index(DUE_INDEX, "due_bucket", "execute_at_ms"),
                                    _index(RUNNING_INDEX, "running_bucket", "processing_ms")]},
        {"TableName": settings.barriers_table, "KeySchema": key("pk", "sk"),
         "AttributeDefinitions": attrs(pk="S", sk="S")},
        {"TableName": settings.projections_table, "KeySchema": key("task_id"),
         "AttributeDefinitions": attrs(task_id="S", entity_key="S", created_sort="S"),
         "GlobalSecondaryIndexes": [_index(ENTITY_INDEX, "entity_key", "created_sort", "ALL")]},
        {"TableName": settings.locks_table, "KeySchema": key("lock_key"),
         "AttributeDefinitions": attrs(lock_key="S")},
    ]


TTL_ATTRIBUTE = "expires_at"


async def create_resources(clients: Any, settings: AwsSettings, shards: int = 2) -> None:
    """Create the stream, tables (with TTL) and schedule group if absent."""
    for definition in table_definitions(settings):
        try:
            await clients.dynamodb.create_table(BillingMode="PAY_PER_REQUEST", **definition)
        except Exception as exc:
            if error_code(exc) != "ResourceInUseException":
                raise
        await clients.dynamodb.update_time_to_live(
            TableName=definition["TableName"],
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE})
    try:
        await clients.kinesis.create_stream(StreamName=settings.stream_name, ShardCount=shards)
    except Exception as exc:
        if error_code(exc) != "ResourceInUseException":
            raise
    try:
        await clients.scheduler.create_schedule_group(Name=settings.schedule_group)
    except Exception as exc:
        if error_code(exc) != "ConflictException":
            raise
