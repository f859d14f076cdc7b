"""What a Lambda container keeps between invocations: one event loop and the opened AWS stack.

Handlers are thin sync wrappers: `run(coro)` drives the async core on the container's loop.
The loop and the clients are made on the first invocation (not at import: that keeps cold
starts short, and keeps them out of a SnapStart snapshot, see snapstart.py) and reused by every
later one.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tq_cloud.aws_lambda.snapstart import prepare_snapshot, snap_start_init
from tq_cloud.core.registry import TaskQueuesManager

if TYPE_CHECKING:
    from tq_cloud.backends.aws.settings import AwsSettings

T = TypeVar("T")


class Runtime(Protocol):
    """What the handlers need of their runtime (LambdaRuntime, or a simulator's)."""

    metrics: Any
    metrics_namespace: str
    service: str

    def run(self, coro: Coroutine[Any, Any, T]) -> T: ...

    async def stack(self) -> Any: ...

    def observability(self) -> None: ...


class LambdaRuntime:
    def __init__(self, app: TaskQueuesManager, aws: AwsSettings | None = None, **handler_options: Any) -> None:
        self.app = app
        self.aws = aws
        self.handler_options = handler_options
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exits = AsyncExitStack()
        self._stack: Any = None
        self.logger: Any = None
        self.metrics: Any = None
        self.metrics_namespace = "tq-cloud"
        self.service = "tq-cloud"
        self.session = prepare_snapshot(app) if snap_start_init() else None
        """The SDK session, its service models loaded at a SnapStart init; else made with the clients."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self.loop.is_closed():
            coro.close()
            raise RuntimeError("this handler's runtime was shut down")
        return self.loop.run_until_complete(coro)

    async def stack(self) -> Any:
        if self._stack is None:
            from tq_cloud.backends.aws.settings import AwsSettings
            from tq_cloud.backends.aws.stack import build_stack, open_clients

            aws = self.aws or AwsSettings()
            clients = await self._exits.enter_async_context(open_clients(aws, self.session))
            self._stack = await build_stack(self.app, aws, clients, **self.handler_options)
        return self._stack

    def observability(self) -> None:
        """Powertools' structured JSON logs for tq_cloud's loggers, carrying each task's log
        context, and an EMF metrics emitter."""
        if self.logger is not None:
            return
        from aws_lambda_powertools import Logger, Metrics
        from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

        from tq_cloud.core.log_context import LogContextFilter

        service = os.environ.get("POWERTOOLS_SERVICE_NAME", "tq-cloud")  # the template sets the stack's name
        self.service = service
        self.metrics_namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "tq-cloud")
        self.logger = Logger(service=service)
        copy_config_to_registered_loggers(source_logger=self.logger, include={"tq_cloud"})
        for handler in logging.getLogger("tq_cloud").handlers:
            handler.addFilter(LogContextFilter())
        from aws_lambda_powertools.metrics.functions import is_metrics_disabled

        # disabled, powertools still keeps every value, and prints a metric once it holds 100
        self.metrics = None if is_metrics_disabled() else Metrics(namespace=self.metrics_namespace, service=service)

    async def close(self) -> None:
        await self._exits.aclose()
        self._stack = None

    def shutdown(self) -> None:
        """Close the clients and the loop (a local runtime stopping; Lambda never calls this)."""
        self.run(self.close())
        self.loop.close()
