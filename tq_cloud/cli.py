"""The `tq-cloud` command: `new` (scaffold a project), `dev` (the local AWS runtime), `enqueue`,
`status`, `demo` (in memory). Every error is one line on stderr that says what to do."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

DEMO_APP, DEMO_SEED = "tq_cloud.examples.app:app", "tq_cloud.examples.workload:tasks"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tq-cloud", description="tq-cloud task queue tools")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run the in-memory demo (no AWS needed)")
    new = commands.add_parser("new", help="scaffold a project: app, tests, template.yaml, Makefile, samconfig")
    new.add_argument("name", help="the project's folder and its Python package (lowercase, digits, '_')")
    new.add_argument("--directory", type=Path, default=Path.cwd(), help="where to create it (default: here)")
    dev = commands.add_parser("dev", help="run the app on a local AWS (moto's server) until Ctrl-C")
    dev.add_argument("--app", help="the app as module:attribute (default: TQ_APP, else template.yaml's AppSpec)")
    dev.add_argument("--seed", help="module:function returning tasks to enqueue at the start")
    dev.add_argument("--demo", action="store_true",
                     help=f"run the example app ({DEMO_APP}) with a workload that takes every path")
    dev.add_argument("--endpoint-url", help="use this endpoint (a running moto server, LocalStack)")
    dev.add_argument("--template", type=Path,
                     help="the template whose resources to create (default: ./template.yaml, else the packaged one)")
    dev.add_argument("--worker", help="a worker handler of your own (module:attribute) instead of the generic one")
    dev.add_argument("--sweeper", help="a sweeper handler of your own (module:attribute)")
    dev.add_argument("--sweep-interval", type=float, default=1.0, help="seconds between sweeps (default: 1)")
    dev.add_argument("--batch-size", type=int, default=100, help="records per worker invocation (default: 100)")
    dev.add_argument("--until-settled", action="store_true", help="stop once nothing is left to do")
    dev.add_argument("--max-seconds", type=float, help="stop after this many seconds")
    _app_name_option(dev)
    for name, text in (("enqueue", "add a task"), ("status", "show tasks, flows and an entity's tasks")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--endpoint-url", help="AWS endpoint (default: TQ_ENDPOINT_URL or AWS)")
        _app_name_option(sub)
        if name == "enqueue":
            sub.add_argument("--queue", required=True)
            sub.add_argument("--type", required=True)
            sub.add_argument("--payload", default="{}", help="JSON")
            sub.add_argument("--delay", type=float, default=0, help="seconds")
            sub.add_argument("--entity", help="type:id")
        else:
            sub.add_argument("--entity", help="type:id: list this entity's task projections")
            sub.add_argument("--flow", help="a flow id: show its steps")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "app_name", None):
        os.environ["TQ_APP_NAME"] = args.app_name
    if getattr(args, "endpoint_url", None) or os.environ.get("TQ_ENDPOINT_URL"):
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # a local AWS takes any credentials
            os.environ.setdefault(name, "local")
    if args.command == "demo":
        from tq_cloud.demo import main as demo

        demo()
        return 0
    from tq_cloud.errors import ConfigurationError

    try:
        if args.command == "new":
            return _new(args)
        if args.command == "dev":
            return _dev(args)
        return asyncio.run(_enqueue(args) if args.command == "enqueue" else _status(args))
    except ConfigurationError as exc:
        print(f"tq-cloud {args.command}: {exc}", file=sys.stderr)
        return 1


def _app_name_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--app-name", type=_app_name,
                        default=os.environ.get("TQ_APP_NAME") or folder_app_name(Path.cwd()),
                        help="names the resources that TQ_* variables do not name one by one: "
                             "APP-tasks, APP-flow-barriers, ... (default: TQ_APP_NAME, else this folder's name)")


def _app_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", value):
        raise argparse.ArgumentTypeError(f"{value!r}: use 1 to 40 letters, digits, '-', '_' or '.'")
    return value


def folder_app_name(folder: Path) -> str:
    """An app name from a folder's name: what resource names allow, at most 40 characters."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", folder.name).strip("-.")[:40] or "tq"


def _new(args: argparse.Namespace) -> int:
    from tq_cloud.scaffold import create_project

    folder = create_project(args.name, args.directory)
    print(f"created {folder}: cd {folder.name} && python3 -m venv .venv && .venv/bin/pip install -e '.[dev]', "
          f"then .venv/bin/pytest and .venv/bin/tq-cloud dev --seed {args.name}.tasks:example_tasks")
    return 0


def _dev(args: argparse.Namespace) -> int:
    from tq_cloud.local.runtime import DevOptions, LocalRuntime
    from tq_cloud.local.template import default_template

    sys.path.insert(0, str(Path.cwd()))
    template = (args.template or default_template()).resolve()
    app, seed_spec = (DEMO_APP, DEMO_SEED) if args.demo else (args.app or _app_of(template), args.seed)
    options = DevOptions(app=app, endpoint_url=args.endpoint_url, template=template, worker=args.worker,
                         sweeper=args.sweeper, sweep_interval=args.sweep_interval, batch_size=args.batch_size,
                         until_settled=args.until_settled, max_seconds=args.max_seconds)
    seed = _seed(seed_spec) if seed_spec else []

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await LocalRuntime(options, sys.stdout).run(stop, seed)

    asyncio.run(run())
    print("stopped", flush=True)
    return 0


def _app_of(template: Path) -> str | None:
    """TQ_APP, else the app the project's own template deploys (its AppSpec parameter)."""
    if os.environ.get("TQ_APP"):
        return os.environ["TQ_APP"]
    if template.parent != Path.cwd().resolve() or not template.exists():
        return None  # the packaged template deploys the example, not this folder's app
    from tq_cloud.local.template import load_template

    spec = load_template(template).get("Parameters", {}).get("AppSpec", {}).get("Default")
    return str(spec) if spec else None


def _seed(spec: str) -> list[Any]:
    from tq_cloud.core.models import Task
    from tq_cloud.errors import ConfigurationError
    from tq_cloud.local.runtime import load_handler

    try:
        tasks = load_handler(spec)()
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"--seed {spec}: {exc}; name a function as module:function") from exc
    if not isinstance(tasks, list) or not all(isinstance(t, Task) for t in tasks):
        raise ConfigurationError(f"--seed {spec}: it must return a list of Task")
    return tasks


def _settings(args: argparse.Namespace) -> Any:
    from tq_cloud.backends.aws import AwsSettings

    settings = AwsSettings()
    return settings.model_copy(update={"endpoint_url": args.endpoint_url}) if args.endpoint_url else settings


async def _enqueue(args: argparse.Namespace) -> int:
    from tq_cloud import EntityRef, Task, TaskQueuesManager
    from tq_cloud.backends.aws import aws_stack
    from tq_cloud.backends.aws.stack import check_reachable

    entity = None
    if args.entity:
        kind, _, ident = args.entity.partition(":")
        entity = EntityRef(type=kind, id=ident)
    task = Task(type=args.type, queue_id=args.queue, payload=json.loads(args.payload), entity=entity,
                execute_at=datetime.now(UTC) + timedelta(seconds=args.delay))
    settings = _settings(args)
    await check_reachable(settings)
    async with aws_stack(TaskQueuesManager(), settings) as stack:
        [added] = await stack.handler.add_tasks([task])
    print(added.key)
    return 0


async def _status(args: argparse.Namespace) -> int:
    from tq_cloud.backends.aws import DynamoDbFlowBarrierProvider, DynamoDbProjectionProvider, open_clients
    from tq_cloud.backends.aws.stack import check_reachable
    from tq_cloud.local.view import snapshot

    settings = _settings(args)
    await check_reachable(settings)
    async with open_clients(settings) as clients:
        view = await snapshot(clients.dynamodb, settings, by_type=True)
        print(view.line())
        print(view.table())
        if args.entity:
            kind, _, ident = args.entity.partition(":")
            projections = DynamoDbProjectionProvider(clients.dynamodb, settings.projections_table)
            for p in await projections.for_entity(kind, ident):
                print(f"  {p.task_type:<14} {p.task_id:<34} {p.status.value:<10} {p.error or p.result or ''}")
        if args.flow:
            barriers = DynamoDbFlowBarrierProvider(clients.dynamodb, settings.barriers_table)
            state = await barriers.get(args.flow)
            print(f"flow {args.flow}: {state.state.value if state else 'unknown'}")
            for step in await barriers.get_step_results(args.flow):
                print(f"  step {step.step_index}: {step.status} {step.error or step.result or ''}")
    return 0
