"""Where the AWS resources are: one settings object, read from TQ_* environment variables."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

RESOURCE_SUFFIXES = {"stream_name": "tasks", "tasks_table": "tasks", "barriers_table": "flow-barriers",
                     "projections_table": "entity-projections", "locks_table": "locks",
                     "schedule_group": "flow-timeouts"}
"""Each resource's name, when not given, is `{app_name}-{suffix}` (with the default app name,
`tq-tasks`, `tq-flow-barriers`, ...)."""


class AwsSettings(BaseSettings):
    """Where the AWS resources are, read from TQ_* environment variables (the template sets them
    on the functions; `tq-cloud dev` prints them for another shell).

    Example:
        settings = AwsSettings()                                   # from TQ_STREAM_NAME, TQ_TASKS_TABLE, ...
        local = AwsSettings(endpoint_url="http://127.0.0.1:5000", app_name="billing")
    """
    model_config = SettingsConfigDict(env_prefix="TQ_", extra="forbid")

    region: str = "us-east-1"
    endpoint_url: str | None = Field(default=None, description="moto or LocalStack; None for AWS")
    dynamodb_endpoint_url: str | None = Field(
        default=None, description="DynamoDB alone elsewhere (dynalite, DynamoDB Local); else endpoint_url")
    kinesis_endpoint_url: str | None = Field(
        default=None, description="Kinesis alone elsewhere (kinesalite); else endpoint_url")
    app_name: str = Field(
        default="tq", pattern=r"^[A-Za-z0-9_.-]{1,40}$",
        description="names the resources not named one by one; `tq-cloud` commands default it to "
                    "the current folder's name, so that two apps on one local endpoint stay apart")
    stream_name: str = ""
    tasks_table: str = ""
    barriers_table: str = ""
    projections_table: str = ""
    locks_table: str = ""
    schedule_group: str = ""
    scheduler_role_arn: str = "arn:aws:iam::123456789012:role/tq-scheduler"
    schedule_dlq_arn: str = Field(default="", description=(
        "the dead-letter queue of the app's recurring schedules (template.yaml's ScheduleDeadLetterQueue)"))
    due_buckets: int = Field(default=8, ge=1, le=256)
    finished_ttl_days: float = Field(default=7, gt=0)
    distributed_claims: bool = Field(
        default=False,
        description="claim tasks in DynamoDB before running them; Kinesis already delivers one "
                    "partition key to one consumer at a time, so this is off by default")
    delay_queue_url: str | None = Field(
        default=None, description="the SQS delay lane (template.yaml's DelayQueue): tasks due within 15 "
                                  "minutes, retries included, wait there to the second instead of in the table")
    failure_queue_url: str | None = Field(
        default=None, description="the worker's on-failure destination (template.yaml's WorkerFailureQueue), "
                                  "for `tq-cloud redrive --from-failure-queue`")
    history: bool = Field(
        default=False, description="keep every outcome as a row for the finished TTL, so any task can be "
                                   "found (a write per task; on in `tq-cloud dev`)")
    counters: Literal["table", "metrics", "off"] | None = Field(
        default=None, description=(
            "where the console's exact counts come from: `metrics`, the worker's EMF metrics in CloudWatch "
            "(no write more; the default on AWS); `table`, rows of the tasks table each batch adds to (two "
            "UpdateItem a batch per queue and type; the default on a local endpoint, where no CloudWatch "
            "reads EMF); `off`"))
    metrics_service: str = Field(default="", description=(
        "the `service` dimension of the worker's metrics: the stack's name (POWERTOOLS_SERVICE_NAME)"))
    aggregate_bytes: int = Field(default=25 * 1024, ge=0, le=1024 * 1024, description=(
        "pack the tasks of one send into Kinesis records in the KPL aggregated format, up to this size "
        "(25 KB, one PUT payload unit, by default); 0 writes one record per task"))
    max_attempts: int = Field(default=8, ge=1, description="botocore retries for throttling")

    def endpoint_of(self, service: str) -> str | None:
        """Where `service` is answered: its own endpoint if one is given, else `endpoint_url`."""
        own: str | None = {"dynamodb": self.dynamodb_endpoint_url, "kinesis": self.kinesis_endpoint_url}.get(service)
        return own or self.endpoint_url

    @model_validator(mode="after")
    def _name_resources(self) -> Self:
        for name, suffix in RESOURCE_SUFFIXES.items():
            if not getattr(self, name):
                setattr(self, name, f"{self.app_name}-{suffix}")
        if self.counters is None:
            self.counters = "table" if self.endpoint_of("dynamodb") else "metrics"
        if not self.metrics_service:
            self.metrics_service = os.environ.get("POWERTOOLS_SERVICE_NAME", "tq-cloud")
        return self


def folder_app_name(folder: Path) -> str:
    """An app name from a folder's name: what resource names allow, at most 40 characters. The
    CLI and the local runtime default to it alike, so both reach the same resources."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", folder.name).strip("-.")[:40] or "tq"
