"""The sweeper Lambda, on an EventBridge rate(1 minute) rule: recovers stale `processing` tasks
and sends every due scheduled task to the stream (claims are conditional, so overlapping
invocations never send a task twice).

Example (functions/sweeper/app.py):
    handler = sweeper_handler(app)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from tq_cloud.aws_lambda.kinesis import LambdaHandler
from tq_cloud.aws_lambda.runtime import LambdaRuntime, Runtime
from tq_cloud.core.registry import TaskQueuesManager

if TYPE_CHECKING:
    from tq_cloud.backends.aws.settings import AwsSettings

log = logging.getLogger("tq_cloud.sweeper")


SYNC_EVERY = timedelta(hours=1)
DEPLOYED_MARK = "schedules:deployed"
"""The names of the schedules the last sync deployed (the next one deletes those the app dropped)."""


class SweeperHandler:
    def __init__(self, runtime: Runtime, *, safety_margin_ms: int = 10_000) -> None:
        self.runtime = runtime
        self.safety_margin_ms = safety_margin_ms
        self.synced_at: datetime | None = None
        """When this container last made the deployed schedules match the app's (see
        backends/aws/recurring.py): on its first invocation, then hourly."""

    def __call__(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        self.runtime.observability()
        return self.runtime.run(self.handle(context))

    async def handle(self, context: Any = None) -> dict[str, Any]:
        """Sweep until the invocation's deadline less `safety_margin_ms` (a wave takes a few
        seconds at most), so that nothing it claims is cut off before it is sent."""
        stack = await self.runtime.stack()
        handler = stack.handler
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        deadline = (handler.clock.now() + timedelta(milliseconds=float(remaining()) - self.safety_margin_ms)
                    if callable(remaining) else None)
        try:
            await self._sync_schedules(stack)
            return {"sent": await handler.process_mature_tasks(deadline)}
        finally:  # Lambda freezes the environment after the return: deliver events now
            await handler.lifecycle.drain()

    async def _sync_schedules(self, stack: Any) -> None:
        now = stack.handler.clock.now()
        recent = self.synced_at is not None and now - self.synced_at < SYNC_EVERY
        if recent or not hasattr(stack, "schedules"):  # (the simulator's stacks have none)
            return
        storage = stack.handler.storage
        try:
            mark = (await storage.get_marks([DEPLOYED_MARK])).get(DEPLOYED_MARK)
            report = await stack.schedules.sync(list(stack.handler.registry.schedules.values()), now,
                                                json.loads(mark) if mark else ())
            if report.deployed != (json.loads(mark) if mark else []):
                await storage.set_mark(DEPLOYED_MARK, json.dumps(report.deployed))
        except Exception:  # the sweep goes on; the next invocation tries again
            log.exception("could not sync the app's schedules with EventBridge Scheduler")
            return
        self.synced_at = now
        if report:
            log.info("schedules synced: created %s, updated %s, deleted %s", report.created, report.updated,
                     report.deleted)


def sweeper_handler(app: TaskQueuesManager, aws: AwsSettings | None = None, **handler_options: Any
                    ) -> LambdaHandler:
    """The sweeper Lambda's handler for `app`: sends stored tasks that came due, takes over stale
    claims, syncs the app's schedules; fired every minute by EventBridge.

    Example:
        handler = sweeper_handler(app_from_environment())   # functions/sweeper/handler.py
    """
    return SweeperHandler(LambdaRuntime(app, aws, **handler_options))
