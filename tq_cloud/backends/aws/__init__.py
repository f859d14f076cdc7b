"""AWS backends: Kinesis (queue), DynamoDB (tasks, barriers, projections, locks, counters), SQS
(the delay lane), EventBridge Scheduler (timers) and CloudWatch (counters, read from the
worker's metrics). Needs the `aws` extra: pip install 'tq-cloud[aws]'."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tq_cloud.lazy import lazy_exports

_EXPORTS = {
    "AwsSettings": "tq_cloud.backends.aws.settings",
    "AwsStack": "tq_cloud.backends.aws.stack",
    "DynamoDbAdapter": "tq_cloud.backends.aws.dynamodb_tasks",
    "DynamoDbCounters": "tq_cloud.backends.aws.dynamodb_counters",
    "DynamoDbFlowBarrierProvider": "tq_cloud.backends.aws.dynamodb_barriers",
    "DynamoDbLockProvider": "tq_cloud.backends.aws.dynamodb_locks",
    "DynamoDbProjectionProvider": "tq_cloud.backends.aws.dynamodb_projections",
    "EventBridgeTimer": "tq_cloud.backends.aws.scheduler",
    "KinesisQueue": "tq_cloud.backends.aws.kinesis",
    "MetricCounters": "tq_cloud.backends.aws.metric_counters",
    "SqsDelayLane": "tq_cloud.backends.aws.sqs_delay",
    "aws_stack": "tq_cloud.backends.aws.stack",
    "build_stack": "tq_cloud.backends.aws.stack",
    "open_clients": "tq_cloud.backends.aws.stack",
}

__all__ = [
    "AwsSettings",
    "AwsStack",
    "DynamoDbAdapter",
    "DynamoDbCounters",
    "DynamoDbFlowBarrierProvider",
    "DynamoDbLockProvider",
    "DynamoDbProjectionProvider",
    "EventBridgeTimer",
    "KinesisQueue",
    "MetricCounters",
    "SqsDelayLane",
    "aws_stack",
    "build_stack",
    "open_clients",
]

if TYPE_CHECKING:
    from tq_cloud.backends.aws.dynamodb_barriers import DynamoDbFlowBarrierProvider
    from tq_cloud.backends.aws.dynamodb_counters import DynamoDbCounters
    from tq_cloud.backends.aws.dynamodb_locks import DynamoDbLockProvider
    from tq_cloud.backends.aws.dynamodb_projections import DynamoDbProjectionProvider
    from tq_cloud.backends.aws.dynamodb_tasks import DynamoDbAdapter
    from tq_cloud.backends.aws.kinesis import KinesisQueue
    from tq_cloud.backends.aws.metric_counters import MetricCounters
    from tq_cloud.backends.aws.scheduler import EventBridgeTimer
    from tq_cloud.backends.aws.settings import AwsSettings
    from tq_cloud.backends.aws.sqs_delay import SqsDelayLane
    from tq_cloud.backends.aws.stack import AwsStack, aws_stack, build_stack, open_clients


__getattr__ = lazy_exports(__name__, _EXPORTS)
