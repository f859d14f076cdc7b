"""`tq-cloud new` and `tq-cloud dev`: a project of your own, and the local runtime that runs it."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

DEMO_APP, DEMO_SEED = "tq_cloud.examples.app:app", "tq_cloud.examples.workload:tasks"


def add_commands(commands: Any, app_name_option: Any) -> None:
    new = commands.add_parser("new", help="scaffold a project: app, tests, template.yaml, Makefile, samconfig")
    new.add_argument("name", help="the project's folder and its Python package (lowercase, digits, '_')")
    new.add_argument("--directory", type=Path, default=Path.cwd(), help="where to create it (default: here)")
    new.set_defaults(run=lambda args: _new(args))
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
    dev.add_argument("--console-port", type=int, default=0,
                     help="the web console's port on 127.0.0.1 (default: a free one; -1: no console)")
    app_name_option(dev)
    dev.set_defaults(run=lambda args: _dev(args))


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
    app, seed_spec = (DEMO_APP, DEMO_SEED) if args.demo else (args.app or project_app(template), args.seed)
    options = DevOptions(app=app, endpoint_url=args.endpoint_url, template=template, worker=args.worker,
                         sweeper=args.sweeper, sweep_interval=args.sweep_interval, batch_size=args.batch_size,
                         until_settled=args.until_settled, max_seconds=args.max_seconds,
                         console_port=None if args.console_port < 0 else args.console_port)
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


def project_app(template: Path) -> str | None:
    """TQ_APP, else the app the project's own template deploys (its AppSpec parameter)."""
    if os.environ.get("TQ_APP"):
        return os.environ["TQ_APP"]
    if template.parent != Path.cwd().resolve() or not template.exists():
        return None  # the packaged template deploys the example, not this folder's app
    from tq_cloud.local.template import load_template

    spec = load_template(template).get("Parameters", {}).get("AppSpec", {}).get("Default")
    return str(spec) if spec else None


def _seed(spec: str) -> list[Any]:
    from tq_cloud.domain.task import Task
    from tq_cloud.errors import ConfigurationError
    from tq_cloud.local.runtime import load_handler

    try:
        tasks = load_handler(spec)()
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"--seed {spec}: {exc}; name a function as module:function") from exc
    if not isinstance(tasks, list) or not all(isinstance(t, Task) for t in tasks):
        raise ConfigurationError(f"--seed {spec}: it must return a list of Task")
    return tasks
