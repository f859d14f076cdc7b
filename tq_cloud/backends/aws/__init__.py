"""AWS backends: Kinesis (queue), DynamoDB (tasks, barriers, projections, locks) and
EventBridge Scheduler (timers). Needs the `aws` extra: pip install 'tq-cloud[aws]'."""

from tq_cloud.backends.aws.dynamodb_barriers import DynamoDbFlowBarrierProvider
from tq_cloud.backends.aws.dynamodb_locks import DynamoDbLockProvider
from tq_cloud.backends.aws.dynamodb_projections import DynamoDbProjectionProvider
from tq_cloud.backends.aws.dynamodb_tasks import DynamoDbAdapter
from tq_cloud.backends.aws.kinesis import KinesisQueue
from tq_cloud.backends.aws.poller import KinesisShardPoller
from tq_cloud.backends.aws.scheduler import EventBridgeTimer
from tq_cloud.backends.aws.settings import AwsSettings
from tq_cloud.backends.aws.stack import AwsStack, aws_stack, build_stack, open_clients
from tq_cloud.backends.aws.tables import create_resources

__all__ = [
    "AwsSettings",
    "AwsStack",
    "DynamoDbAdapter",
    "DynamoDbFlowBarrierProvider",
    "DynamoDbLockProvider",
    "DynamoDbProjectionProvider",
    "EventBridgeTimer",
    "KinesisQueue",
    "KinesisShardPoller",
    "aws_stack",
    "build_stack",
    "create_resources",
    "open_clients",
]
