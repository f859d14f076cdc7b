"""A local runtime in a thread of its own (its own event loop), for tests that drive it from
outside as a user does: through the CLI, and through the web console in a browser."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tests.aws_support import fresh_settings
from tq_cloud import ExecutorActions, Task, TaskQueuesManager
from tq_cloud.aws_lambda import kinesis_handler, sweeper_handler
from tq_cloud.backends.aws import AwsSettings
from tq_cloud.local.runtime import DevOptions, LocalRuntime


def wait_for(condition: Callable[[], Any], timeout: float = 60, what: str = "the condition") -> Any:
    """Poll `condition` until it is truthy (its value), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)  # polling a condition, with a deadline
    return value


class Shop:
    """An app whose `charge` tasks fail for good while `broken` (a bug, fixed later), and
    count every run of each task."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        self.broken = True
        self.app = TaskQueuesManager()

        @self.app.task("billing", "charge", retries=0, store_on_failure=True)
        async def charge(task: Task, actions: ExecutorActions) -> None:
            self.runs[task.key] += 1
            if self.broken:
                actions.fail(task, f"card declined for {task.key}")
            else:
                actions.success(task, {"charged": task.payload["amount"]})

        @self.app.task("mail", "notify")
        async def notify(task: Task, actions: ExecutorActions) -> None:
            self.runs[task.key] += 1
            actions.success(task)


def enqueue(settings: AwsSettings, tasks: list[Task]) -> None:
    """Add tasks as a producer does (from this thread, with clients of its own)."""
    from tq_cloud.backends.aws import aws_stack

    async def add() -> None:
        async with aws_stack(TaskQueuesManager(), settings) as stack:
            await stack.handler.add_tasks(tasks, allow_unknown=True)

    asyncio.run(add())


@contextmanager
def running_dev(endpoint: str, app: TaskQueuesManager, seed: list[Task],
                console: bool = False) -> Iterator[tuple[LocalRuntime, AwsSettings]]:
    settings = fresh_settings(endpoint).model_copy(update={"history": True})
    options = DevOptions(endpoint_url=endpoint, aws=settings, worker=kinesis_handler(app, settings),
                         sweeper=sweeper_handler(app, settings), sweep_interval=0.5, batching_window=0.1,
                         view_interval=0.5, console_port=0 if console else None)
    runtime = LocalRuntime(options, io.StringIO())
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=lambda: loop.run_until_complete(runtime.run(stop, seed)), daemon=True)
    thread.start()
    try:
        wait_for(lambda: runtime.esm is not None and (not console or runtime.console_url), what="dev to start")
        yield runtime, settings
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        loop.close()
