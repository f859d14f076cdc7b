"""Lambda entry points: `handler = kinesis_handler(app)` for the worker (Kinesis and the SQS
delay lane), `sweeper_handler(app)` for the minute-by-minute sweeper; `functions/` in a project
holds one such module per deployed function. Heavy imports (aioboto3, powertools) happen on
first use.

Example (functions/worker/handler.py):
    from tq_cloud.aws_lambda import app_from_environment, kinesis_handler

    handler = kinesis_handler(app_from_environment())   # the app TQ_APP names
"""

from tq_cloud.aws_lambda.entry import app_from_environment, load_app
from tq_cloud.aws_lambda.kinesis import kinesis_handler
from tq_cloud.aws_lambda.sweeper import sweeper_handler

__all__ = ["app_from_environment", "kinesis_handler", "load_app", "sweeper_handler"]
