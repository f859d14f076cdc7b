"""The sweeper Lambda, on an EventBridge rate(1 minute) rule: recovers stale `processing` tasks
and sends every due scheduled task to the stream (claims are conditional, so overlapping
invocations never send a task twice).

Example (functions/sweeper/app.py):
    handler = sweeper_handler(app)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tq_cloud.aws_lambda.kinesis import LambdaHandler
from tq_cloud.aws_lambda.runtime import LambdaRuntime, Runtime
from tq_cloud.core.registry import TaskQueuesManager

if TYPE_CHECKING:
    from tq_cloud.backends.aws.settings import AwsSettings


class SweeperHandler:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def __call__(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        self.runtime.observability()
        return self.runtime.run(self.handle())

    async def handle(self) -> dict[str, Any]:
        stack = await self.runtime.stack()
        try:
            return {"sent": await stack.handler.process_mature_tasks()}
        finally:  # Lambda freezes the environment after the return: deliver events now
            await stack.handler.lifecycle.drain()


def sweeper_handler(app: TaskQueuesManager, aws: AwsSettings | None = None, **handler_options: Any
                    ) -> LambdaHandler:
    return SweeperHandler(LambdaRuntime(app, aws, **handler_options))
