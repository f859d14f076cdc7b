"""`tq-cloud dev`: the application run the way AWS runs it, on one machine.

moto's server stands in for AWS (or an endpoint you give, such as LocalStack); the resources
are created from template.yaml; the worker handler (the generic entry point for the app that
`app` names, or a handler of your own) is invoked by emulated event source mappings with
real-shaped Kinesis and SQS events; the sweeper handler runs on its schedule; due timeout
schedules are fired as EventBridge Scheduler would (moto stores schedules but never fires them).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import shlex
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar

from tq_cloud.backends.aws.settings import AwsSettings, folder_app_name
from tq_cloud.backends.aws.stack import check_reachable, open_clients
from tq_cloud.domain.task import Task
from tq_cloud.errors import ConfigurationError
from tq_cloud.local.checkpoints import ShardCheckpoints
from tq_cloud.local.esm import EmulatedEventSourceMapping
from tq_cloud.local.outcomes import OutcomeLog
from tq_cloud.local.provision import create_queue, create_resources
from tq_cloud.local.scheduler import EmulatedScheduler
from tq_cloud.local.sqs_esm import EmulatedSqsEventSourceMapping
from tq_cloud.local.template import default_template
from tq_cloud.local.view import Snapshot, snapshot

log = logging.getLogger("tq_cloud.local")
T = TypeVar("T")


def load_handler(spec: str | Callable[..., Any]) -> Callable[..., Any]:
    """A handler, or `package.module:attribute` naming one (e.g. `myapp.worker:handler`)."""
    if callable(spec):
        return spec
    module, _, attribute = spec.partition(":")
    handler: Callable[..., Any] = getattr(importlib.import_module(module), attribute or "handler")
    return handler


@dataclass
class DevOptions:
    app: str | None = None
    """The app as module:attribute (what TQ_APP names for the generic entry points)."""
    endpoint_url: str | None = None
    template: Path = field(default_factory=default_template)
    worker: str | Callable[..., Any] | None = None
    """A worker handler of your own instead of the generic entry point for `app`."""
    sweeper: str | Callable[..., Any] | None = None
    sweep_interval: float = 1.0
    """Seconds between sweeps (deployed: a minute; here a second, so that nothing waits on it)."""
    batch_size: int = 100
    batching_window: float = 1.0
    view_interval: float = 2.0
    until_settled: bool = False
    max_seconds: float | None = None
    aws: AwsSettings | None = None
    max_retries: int = 10
    parallelization: int = 2
    """Concurrent batches per shard (the template's ParallelizationFactor); shards always run
    concurrently, each slot in a container of its own."""
    function_timeout_ms: int = 300_000
    """The worker's Timeout (template.yaml), as the invocations' context reports it."""
    worker_containers: Callable[[], Callable[..., Any]] | None = None
    """Makes a worker container for a slot (default: the worker's `new_container`)."""
    provision_timeout: float = 30.0
    """Creating the resources fails with one line after this long, rather than hang."""
    console_port: int | None = None
    """Serve the web console on this port of 127.0.0.1 (0: a free one); None: no console."""

    def handlers(self, outcomes: Any = None) -> tuple[Callable[..., Any], Callable[..., Any]]:
        """The worker and sweeper handlers: your own, or the generic ones for `app` (the
        worker telling `outcomes`, a lifecycle listener, of each task's outcome)."""
        if self.worker is not None and self.sweeper is not None:
            return load_handler(self.worker), load_handler(self.sweeper)
        if not self.app:
            raise ConfigurationError("name your app: --app module:attribute (or TQ_APP), e.g. myapp.tasks:app; "
                                     "`tq-cloud new NAME` scaffolds one, --demo runs the example")
        from tq_cloud.aws_lambda import kinesis_handler, sweeper_handler
        from tq_cloud.aws_lambda.entry import APP_VARIABLE, load_app

        app = load_app(self.app)
        os.environ[APP_VARIABLE] = self.app
        return (load_handler(self.worker) if self.worker else kinesis_handler(app, task_lifecycle=outcomes),
                load_handler(self.sweeper) if self.sweeper else sweeper_handler(app))


def settings_for(endpoint: str) -> AwsSettings:
    """Settings for the local runtime, exported to the environment so that the handlers, which
    read TQ_* variables like deployed Lambdas do, find the same resources."""
    settings = AwsSettings(endpoint_url=endpoint, history=True,
                           app_name=os.environ.get("TQ_APP_NAME") or folder_app_name(Path.cwd()))
    for name, value in settings.model_dump().items():
        if value is not None:
            os.environ[f"TQ_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return settings


class LocalRuntime:
    def __init__(self, options: DevOptions, out: TextIO) -> None:
        self.options = options
        self.out = out
        self.last_view: Snapshot | None = None
        self.esm: EmulatedEventSourceMapping | None = None
        self.lane_esm: EmulatedSqsEventSourceMapping | None = None
        self.outcomes = OutcomeLog(out)
        self.console_url: str | None = None

    async def run(self, stop: asyncio.Event, seed: Sequence[Task] = (),
                  feed: AsyncIterator[Sequence[Task]] | None = None) -> Snapshot | None:
        """Serve until `stop` (or until settled); `seed` is enqueued first, then each batch that
        `feed` yields, and the run cannot count as settled before `feed` is exhausted."""
        handlers = self.options.handlers(self.outcomes)  # a wrong app fails here, before anything starts
        with ExitStack() as exits:
            endpoint = self.options.endpoint_url
            if endpoint is None:
                from tq_cloud.local.moto import moto_server

                endpoint = exits.enter_context(moto_server())
            os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")  # no EMF lines in the live view
            os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")  # the outcome lines say what failed
            settings = self.options.aws or settings_for(endpoint)
            elsewhere = "".join(f", {name} at {settings.endpoint_of(service)}" for service, name in
                                (("dynamodb", "DynamoDB"), ("kinesis", "Kinesis"))
                                if settings.endpoint_of(service) != endpoint)
            print(f"tq-cloud dev: AWS at {endpoint}{elsewhere}, app {settings.app_name} (stream "
                  f"{settings.stream_name}, table {settings.tasks_table})", file=self.out, flush=True)
            print(f"from another shell (tq-cloud tasks, status, console; your own producer): {exports(settings)}",
                  file=self.out, flush=True)
            if not await _unless_stopped(stop, self._prepare(settings)):
                return None
            if self.options.aws is None:  # the handlers read TQ_*: give them the delay lane too
                settings = settings.model_copy(update={"delay_queue_url": os.environ["TQ_DELAY_QUEUE_URL"],
                                                       "failure_queue_url": os.environ["TQ_FAILURE_QUEUE_URL"]})
            async with open_clients(settings) as clients:
                await self._serve(clients, settings, handlers, stop, seed, feed)
        return self.last_view

    async def _prepare(self, settings: AwsSettings) -> bool:
        """Check the endpoint, create the resources (within `provision_timeout`, with few retries:
        an endpoint that keeps failing is reported in one line, not after minutes of back-off)."""
        await check_reachable(settings)
        try:
            async with open_clients(settings.model_copy(update={"max_attempts": 2})) as clients:
                await asyncio.wait_for(self._provision(clients, settings), self.options.provision_timeout)
        except TimeoutError:
            raise ConfigurationError(f"creating the resources at {settings.endpoint_url} took over "
                                     f"{self.options.provision_timeout:.0f} s: check that it serves DynamoDB, "
                                     "Kinesis, SQS and EventBridge Scheduler") from None
        except ConfigurationError:
            raise
        except Exception as exc:
            raise ConfigurationError(f"creating the resources at {settings.endpoint_url} failed "
                                     f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}): check that it "
                                     "serves DynamoDB, Kinesis, SQS and EventBridge Scheduler") from exc
        return True

    async def _provision(self, clients: Any, settings: AwsSettings) -> None:
        await create_resources(clients, settings, self.options.template)
        if self.options.aws is None:
            os.environ["TQ_DELAY_QUEUE_URL"] = await create_queue(clients, f"{settings.stream_name}-delays")
            os.environ["TQ_FAILURE_QUEUE_URL"] = await create_queue(clients, f"{settings.stream_name}-failures")

    async def _serve(self, clients: Any, settings: AwsSettings, handlers: tuple[Callable[..., Any], Callable[..., Any]],
                     stop: asyncio.Event, seed: Sequence[Task], feed: AsyncIterator[Sequence[Task]] | None) -> None:
        worker, sweeper = handlers
        arn = (await clients.kinesis.describe_stream_summary(StreamName=settings.stream_name))[
            "StreamDescriptionSummary"]["StreamARN"]
        checkpoints = ShardCheckpoints(clients.dynamodb, f"{settings.stream_name}-checkpoints", consumer="tq-worker")
        await checkpoints.ensure_table()
        self.esm = EmulatedEventSourceMapping(
            clients.kinesis, settings.stream_name, arn, worker, batch_size=self.options.batch_size,
            batching_window=self.options.batching_window, max_retries=self.options.max_retries,
            parallelization=self.options.parallelization, function_timeout_ms=self.options.function_timeout_ms,
            containers=self.options.worker_containers or getattr(worker, "new_container", None),
            checkpoints=checkpoints,
            on_failure=(clients.sqs, settings.failure_queue_url) if settings.failure_queue_url else None)
        if settings.delay_queue_url:
            lane_arn = (await clients.sqs.get_queue_attributes(
                QueueUrl=settings.delay_queue_url, AttributeNames=["QueueArn"]))["Attributes"]["QueueArn"]
            self.lane_esm = EmulatedSqsEventSourceMapping(clients.sqs, settings.delay_queue_url, lane_arn, worker,
                                                          function_timeout_ms=self.options.function_timeout_ms)
        if seed:
            await self._enqueue(settings, seed)
        feeding = asyncio.ensure_future(self._feed(settings, feed))
        jobs = [asyncio.ensure_future(self.esm.run(stop)), feeding,
                *([asyncio.ensure_future(self.lane_esm.run(stop))] if self.lane_esm else []),
                asyncio.ensure_future(self._sweep(sweeper, stop)),
                asyncio.ensure_future(EmulatedScheduler(clients.scheduler, clients.kinesis, settings.schedule_group,
                                                        announce=self._announce).run(stop)),
                asyncio.ensure_future(self._watch(clients, settings, stop, feeding)),
                *([asyncio.ensure_future(self._console(clients, settings, stop))]
                  if self.options.console_port is not None else [])]
        if self.options.max_seconds is not None:
            jobs.append(asyncio.ensure_future(self._stop_after(stop, self.options.max_seconds)))
        try:
            await stop.wait()
        finally:
            stop.set()
            feeding.cancel()  # a feed may be waiting on the mapping, which has just stopped
            await asyncio.gather(*jobs, return_exceptions=True)
            for handler in (worker, sweeper, *self.esm.slot_handlers()):
                runtime = getattr(handler, "runtime", None)
                if runtime is not None and runtime.loop.is_closed() is False:
                    await asyncio.to_thread(runtime.shutdown)
            self.last_view = await snapshot(clients.dynamodb, settings, by_type=True)
            print(self.last_view.line(), file=self.out)
            print(self.last_view.table(), file=self.out, flush=True)
            print(ending(self.last_view, self.outcomes.summary(), settings,
                         kept=self.options.endpoint_url is not None), file=self.out, flush=True)

    async def _enqueue(self, settings: AwsSettings, tasks: Sequence[Task]) -> None:
        from tq_cloud.backends.aws.stack import aws_stack
        from tq_cloud.core.registry import TaskQueuesManager

        async with aws_stack(TaskQueuesManager(), settings) as stack:
            await stack.handler.add_tasks(tasks, allow_unknown=True)
        print(f"enqueued {len(tasks)} tasks", file=self.out, flush=True)

    async def _feed(self, settings: AwsSettings, feed: AsyncIterator[Sequence[Task]] | None) -> None:
        if feed is not None:
            async for tasks in feed:
                await self._enqueue(settings, tasks)

    async def _sweep(self, sweeper: Callable[..., Any], stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(sweeper, {"source": "aws.events", "detail-type": "Scheduled Event"}, None)
            except Exception:
                log.exception("sweeper invocation failed")
            await _pause(stop, self.options.sweep_interval)

    async def _watch(self, clients: Any, settings: AwsSettings, stop: asyncio.Event,
                     feeding: asyncio.Future[None]) -> None:
        """Print the live view; with `until_settled`, stop once nothing is pending, no invocation
        is running (one may still publish children) and the worker has not been invoked for two
        views in a row."""
        quiet_rounds, seen, shown = 0, -1, ""
        while not stop.is_set():
            await _pause(stop, self.options.view_interval)
            view = await snapshot(clients.dynamodb, settings)
            self.last_view = view
            lane = await _lane_depth(clients, settings)
            line = f"{view.line()} | delay lane: {lane} waiting | {self.outcomes.summary()}"
            if line != shown:  # a quiet app prints nothing new, not the same line every tick
                print(line, file=self.out, flush=True)
                shown = line
            invocations = (self.esm.stats.invocations if self.esm else 0) + (
                self.lane_esm.stats.invocations if self.lane_esm else 0)
            running = (self.esm.stats.in_flight if self.esm else 0) + (
                self.lane_esm.stats.in_flight if self.lane_esm else 0)
            quiet = view.settled and invocations == seen and not running and not lane and feeding.done()
            quiet_rounds = quiet_rounds + 1 if quiet else 0
            seen = invocations
            if self.options.until_settled and quiet_rounds >= 2:
                stop.set()

    def _announce(self, line: str) -> None:
        """A line of the live view: each schedule firing, as EventBridge Scheduler makes it."""
        print(line, file=self.out, flush=True)

    async def _console(self, clients: Any, settings: AwsSettings, stop: asyncio.Event) -> None:
        """The web console over this runtime's resources (its own stack on the runtime's clients)."""
        from tq_cloud.backends.aws.stack import build_stack
        from tq_cloud.console.app import serve_console
        from tq_cloud.core.registry import TaskQueuesManager

        def announce(line: str) -> None:
            self.console_url = line.split(" ", 1)[1]
            print(line, file=self.out, flush=True)

        stack = await build_stack(TaskQueuesManager(), settings, clients)
        try:
            await serve_console(stack, port=self.options.console_port or 0, announce=announce, stop=stop)
        except Exception:  # the runtime goes on without its console
            log.exception("the web console stopped")

    async def _stop_after(self, stop: asyncio.Event, seconds: float) -> None:
        await _pause(stop, seconds)
        stop.set()


def exports(settings: AwsSettings) -> str:
    """The shell line that points another process at the same local resources."""
    names = {"TQ_ENDPOINT_URL": settings.endpoint_url, "TQ_DYNAMODB_ENDPOINT_URL": settings.dynamodb_endpoint_url,
             "TQ_KINESIS_ENDPOINT_URL": settings.kinesis_endpoint_url, "TQ_APP_NAME": settings.app_name}
    return "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in names.items() if v)


def ending(view: Snapshot, totals: str, settings: AwsSettings, *, kept: bool) -> str:
    """The run in plain words, and what to look at next. `kept`: the local AWS outlives this run
    (an endpoint given); else it stopped with the run, and looking needs a run that stays up."""
    failed = view.tasks["failed"]
    state = "everything settled" if view.settled else \
        f"{view.tasks['scheduled']} scheduled and {view.tasks['processing']} processing left"
    look = "tq-cloud tasks list --status failed or tq-cloud redrive ID" if failed else "tq-cloud status"
    where = f"{exports(settings)}, then {look} (or tq-cloud console)"
    if not kept:
        where = (f"the local AWS stopped with this run: leave out --until-settled to keep it and its console up, "
                 f"and from another shell {where}")
    return f"{state}; {totals}; {failed} stored as failed\nnext: {where}"


async def _lane_depth(clients: Any, settings: AwsSettings) -> int:
    """Messages in the delay lane: waiting for their time, ready, or being forwarded."""
    if not settings.delay_queue_url:
        return 0
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
             "ApproximateNumberOfMessagesDelayed"]
    attributes = (await clients.sqs.get_queue_attributes(QueueUrl=settings.delay_queue_url,
                                                         AttributeNames=names))["Attributes"]
    return sum(int(attributes.get(name, 0)) for name in names)


async def _unless_stopped(stop: asyncio.Event, work: Coroutine[Any, Any, T]) -> T | None:
    """`work`'s result, or None (with `work` cancelled) if `stop` is set first: Ctrl-C or SIGTERM
    stops the runtime at any moment, resource creation included."""
    job, stopped = asyncio.ensure_future(work), asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({job, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not job.done():
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        return None
    return job.result()


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
