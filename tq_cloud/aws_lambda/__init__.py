"""Lambda entry points: `handler = kinesis_handler(app)` for the worker, `sweeper_handler(app)`
for the minute-by-minute sweeper. Heavy imports (aioboto3, powertools) happen on first use."""

from tq_cloud.aws_lambda.kinesis import kinesis_handler
from tq_cloud.aws_lambda.sweeper import sweeper_handler

__all__ = ["kinesis_handler", "sweeper_handler"]
