"""Where the AWS resources are: one settings object, read from TQ_* environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AwsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TQ_", extra="forbid")

    region: str = "us-east-1"
    endpoint_url: str | None = Field(default=None, description="moto or LocalStack; None for AWS")
    stream_name: str = "tq-tasks"
    tasks_table: str = "tq-tasks"
    barriers_table: str = "tq-flow-barriers"
    projections_table: str = "tq-entity-projections"
    locks_table: str = "tq-locks"
    schedule_group: str = "tq-flow-timeouts"
    scheduler_role_arn: str = "arn:aws:iam::123456789012:role/tq-scheduler"
    due_buckets: int = Field(default=8, ge=1, le=256)
    finished_ttl_days: float = Field(default=7, gt=0)
    distributed_claims: bool = Field(
        default=False,
        description="claim tasks in DynamoDB before running them; Kinesis already delivers one "
                    "partition key to one consumer at a time, so this is off by default")
    emulate_scheduler: bool = Field(default=False, description="fire due schedules ourselves (moto)")
    max_attempts: int = Field(default=8, ge=1, description="botocore retries for throttling")
