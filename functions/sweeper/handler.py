"""The sweeper function (template.yaml: SweeperFunction), fired every minute by EventBridge: it
sends stored tasks that came due, takes over stale claims, and syncs the app's schedules."""

from tq_cloud.aws_lambda import app_from_environment, sweeper_handler

handler = sweeper_handler(app_from_environment())
