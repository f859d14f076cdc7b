"""Worker Lambda: triggered by the Kinesis stream (see template.yaml)."""

from functions.example_app import app
from tq_cloud.aws_lambda import kinesis_handler

handler = kinesis_handler(app)
