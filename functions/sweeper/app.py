"""Sweeper Lambda: every minute, sends due scheduled tasks to the stream (see template.yaml)."""

from functions.example_app import app
from tq_cloud.aws_lambda import sweeper_handler

handler = sweeper_handler(app)
