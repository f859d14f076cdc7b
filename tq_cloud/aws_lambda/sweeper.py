"""The sweeper Lambda, on an EventBridge rate(1 minute) rule: recovers stale `processing` tasks
and sends every due scheduled task to the stream (claims are conditional, so overlapping
invocations never send a task twice).

Example (functions/sweeper/app.py):
    handler = sweeper_handler(app)
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from tq_cloud.aws_lambda.kinesis import LambdaHandler
from tq_cloud.aws_lambda.runtime import LambdaRuntime, Runtime
from tq_cloud.core.registry import TaskQueuesManager

if TYPE_CHECKING:
    from tq_cloud.backends.aws.settings import AwsSettings


class SweeperHandler:
    def __init__(self, runtime: Runtime, *, safety_margin_ms: int = 10_000) -> None:
        self.runtime = runtime
        self.safety_margin_ms = safety_margin_ms

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
            return {"sent": await handler.process_mature_tasks(deadline)}
        finally:  # Lambda freezes the environment after the return: deliver events now
            await handler.lifecycle.drain()


def sweeper_handler(app: TaskQueuesManager, aws: AwsSettings | None = None, **handler_options: Any
                    ) -> LambdaHandler:
    return SweeperHandler(LambdaRuntime(app, aws, **handler_options))
