"""The worker function (template.yaml: WorkerFunction). It runs the due tasks that the Kinesis
stream and the SQS delay lane deliver, for the app the template names (its AppSpec parameter,
read here as TQ_APP). Built once per container, at init: inside the SnapStart snapshot."""

from tq_cloud.aws_lambda import app_from_environment, kinesis_handler

handler = kinesis_handler(app_from_environment())
