"""The operator's commands: `enqueue`, `status`, `tasks list|show`, `flows list|show`,
`redrive`, `console`. Each takes the app's TQ_* settings (or --endpoint-url and --app-name), and
prints a table, or JSON with --json for scripts."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

STATUSES = ("failed", "ignored", "scheduled", "processing", "executed", "cancelled")


class UsageError(Exception):
    """A command given something it cannot use; the message says what to give instead."""


def add_commands(commands: Any, app_name_option: Any) -> None:
    def command(name: str, text: str, run: Any, parent: Any = commands) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = parent.add_parser(name, help=text)
        sub.add_argument("--endpoint-url", help="AWS endpoint (default: TQ_ENDPOINT_URL or AWS)")
        app_name_option(sub)
        sub.set_defaults(run=lambda args: asyncio.run(run(args)))
        return sub

    enqueue = command("enqueue", "add a task", _enqueue)
    enqueue.add_argument("--queue", required=True)
    enqueue.add_argument("--type", required=True)
    given = enqueue.add_mutually_exclusive_group()
    given.add_argument("--payload", type=_json_object, help="the payload, a JSON object (default {})")
    given.add_argument("--payload-file", type=argparse.FileType("r"), metavar="PATH",
                       help="the payload from a file of JSON (- for standard input)")
    enqueue.add_argument("--delay", type=float, default=0, help="seconds")
    enqueue.add_argument("--app", help="the app whose executors check the task, as module:attribute "
                         "(default: TQ_APP, else ./template.yaml's AppSpec)")
    enqueue.add_argument("--allow-unknown", action="store_true",
                         help="send it even if no executor of the app takes its queue and type (or without an app)")
    enqueue.add_argument("--entity", type=_entity, help="type:id")
    status = command("status", "counts of stored tasks; an entity's timeline", _status)
    status.add_argument("--entity", type=_entity, help="type:id: this entity's tasks, oldest first")
    status.add_argument("--flow", help="a flow id: its progress and steps")
    status.add_argument("--json", action="store_true", help="print JSON")

    tasks = commands.add_parser("tasks", help="list stored tasks, show one").add_subparsers(
        dest="action", required=True)
    listing = command("list", "stored tasks in one status, newest first", _tasks_list, tasks)
    listing.add_argument("--status", choices=STATUSES, default="failed")
    listing.add_argument("--queue")
    listing.add_argument("--type")
    listing.add_argument("--since", type=_since, help="an ISO time, or an age: 30s, 15m, 2h, 7d")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (up to 1000)")
    listing.add_argument("--cursor", help="continue after a previous page (its last line prints it)")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    show = command("show", "one task: status, attempts, times, error, result, redrives", _tasks_show, tasks)
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="print a JSON object")
    result = command("result", "what a task returned (its executor keeps results: keep_result)", _tasks_result, tasks)
    result.add_argument("id")
    result.add_argument("--wait", type=_seconds, default=0.0, metavar="S",
                        help="wait up to S seconds for it to finish (default: answer now)")
    result.add_argument("--json", action="store_true", help="print a JSON object")
    cancel = command("cancel", "stop a task: one not started never runs; a running one is asked to stop",
                     _tasks_cancel, tasks)
    cancel.add_argument("id")
    cancel.add_argument("--reason", default="", help="kept on the task (tasks show)")

    redrive = command("redrive", "send failed (or ignored) tasks back to run, as a new attempt", _redrive)
    redrive.add_argument("ids", nargs="*", metavar="ID")
    redrive.add_argument("--status", choices=("failed", "ignored"), help="re-drive the tasks in this status")
    redrive.add_argument("--queue")
    redrive.add_argument("--type")
    redrive.add_argument("--since", type=_since, help="only those that took the status since then")
    redrive.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")
    redrive.add_argument("--from-failure-queue", nargs="?", const="", metavar="URL",
                         help="re-send the stream ranges named in the on-failure queue "
                              "(default: TQ_FAILURE_QUEUE_URL)")
    redrive.add_argument("--json", action="store_true", help="print a JSON array of the tasks sent")

    flows = commands.add_parser("flows", help="list flows, show one").add_subparsers(dest="action", required=True)
    flow_list = command("list", "flows, active and closed, newest first", _flows_list, flows)
    flow_list.add_argument("--limit", type=int, default=50)
    flow_list.add_argument("--cursor")
    flow_list.add_argument("--json", action="store_true")
    flow_show = command("show", "a flow: its progress, join and steps", _flows_show, flows)
    flow_show.add_argument("id")
    flow_show.add_argument("--json", action="store_true")
    flow_cancel = command("cancel", "close a flow as cancelled and cancel its steps not started", _flows_cancel,
                          flows)
    flow_cancel.add_argument("id")
    flow_cancel.add_argument("--reason", default="flow cancelled")

    schedules = commands.add_parser("schedules", help="the app's recurring schedules").add_subparsers(
        dest="action", required=True)
    schedule_list = command("list", "declared vs deployed (drift), paused, next occurrences, last runs",
                            _schedules_list, schedules)
    schedule_list.add_argument("--app", help="the app that declares them, as module:attribute (default: TQ_APP, "
                               "else ./template.yaml's AppSpec)")
    schedule_list.add_argument("--json", action="store_true")
    for action, text in (("pause", "stop a schedule's occurrences (those due while paused never run)"),
                         ("resume", "run a paused schedule's occurrences again, from now on")):
        toggle = command(action, text, _schedules_pause if action == "pause" else _schedules_resume, schedules)
        toggle.add_argument("name")
        toggle.add_argument("--app", help="the app that declares it (default: TQ_APP, else ./template.yaml's AppSpec)")

    console = command("console", "the web console on 127.0.0.1", _console)
    console.add_argument("--port", type=int, default=0, help="default: a free port (printed); a fixed one is "
                         "easier for other pages on this machine to find")


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc.msg} at character {exc.pos}): give a JSON object, "
                                         """e.g. '{"to": "a@b.c"}'""") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"a JSON {type(value).__name__}, not an object: a payload is a JSON "
                                         """object, e.g. '{"items": [1, 2]}'""")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds from 0 to 3600")
    return value


def _entity(text: str) -> tuple[str, str]:
    kind, sep, ident = text.partition(":")
    if not sep or not kind or not ident:
        raise argparse.ArgumentTypeError(f"{text!r}: give the entity as type:id, e.g. user:42")
    return kind, ident


_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def _since(text: str) -> datetime:
    if match := _AGE.fullmatch(text):
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match[2]]
        return datetime.now(UTC) - timedelta(**{unit: float(match[1])})
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give an ISO time (2026-11-29T10:00) or an age (15m, 2h)") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _settings(args: argparse.Namespace) -> Any:
    from tq_cloud.backends.aws import AwsSettings

    settings = AwsSettings()
    return settings.model_copy(update={"endpoint_url": args.endpoint_url}) if args.endpoint_url else settings


@asynccontextmanager
async def _stack(args: argparse.Namespace, app: Any = None) -> AsyncIterator[Any]:
    from tq_cloud.backends.aws import aws_stack
    from tq_cloud.backends.aws.stack import check_reachable
    from tq_cloud.core.registry import TaskQueuesManager

    settings = _settings(args)
    await check_reachable(settings)
    async with aws_stack(app or TaskQueuesManager(), settings) as stack:
        yield stack


def _operations(stack: Any) -> Any:
    from tq_cloud.operations import Operations

    return Operations.of(stack)


async def _enqueue(args: argparse.Namespace) -> int:
    from tq_cloud.domain.task import EntityRef, Task
    from tq_cloud.errors import TaskRejectedError

    payload = args.payload if args.payload is not None else {}
    if args.payload_file is not None:
        with args.payload_file as source:
            try:
                payload = _json_object(source.read())
            except argparse.ArgumentTypeError as exc:
                raise UsageError(f"--payload-file {source.name}: {exc}") from None
    app = _producer_app(args)
    entity = EntityRef(type=args.entity[0], id=args.entity[1]) if args.entity else None
    task = Task(type=args.type, queue_id=args.queue, payload=payload, entity=entity,
                execute_at=datetime.now(UTC) + timedelta(seconds=args.delay))
    async with _stack(args, app) as stack:
        try:
            [added] = await stack.handler.add_tasks([task], allow_unknown=args.allow_unknown)
        except TaskRejectedError as exc:
            raise UsageError(str(exc)) from None
    print(added.key)
    return 0


def _producer_app(args: argparse.Namespace, what: str = "whose executors check the task") -> Any:
    """The app whose registry checks what `enqueue` sends; None with --allow-unknown and no app."""
    from pathlib import Path

    from tq_cloud.aws_lambda.entry import load_app
    from tq_cloud.cli.dev import project_app
    from tq_cloud.local.template import default_template

    spec = args.app or project_app(default_template().resolve())
    if spec is None:
        if getattr(args, "allow_unknown", False):
            return None
        raise UsageError(f"name the app {what}: --app MODULE:ATTR (or TQ_APP, or run from the project's "
                         "folder)" + ("; or send it unchecked with --allow-unknown" if hasattr(args, "allow_unknown")
                                      else ""))
    sys.path.insert(0, str(Path.cwd()))
    return load_app(spec)


async def _status(args: argparse.Namespace) -> int:
    from tq_cloud.local.view import snapshot

    async with _stack(args) as stack:
        view = await snapshot(stack.clients.dynamodb, stack.settings, by_type=True)
        ops = _operations(stack)
        timeline = await ops.entity(*args.entity) if args.entity else None
        flow = await ops.flow(args.flow) if args.flow else None
        waiting = await ops.waiting_on_limits()
    if args.json:
        print(json.dumps({"tasks": dict(view.tasks), "flows": dict(view.flows), "entity": timeline, "flow": flow,
                          "waiting_on_limits": waiting}, default=str))
        return 0
    print(view.line())
    print(view.table())
    if waiting:
        print("waiting on limits (turned away in the last 5 minutes, top keys):")
        print(_table(waiting[:10], ("queue", "type", "key", "waiting", "at")))
    if timeline is not None:
        print(f"entity {args.entity[0]}:{args.entity[1]}:")
        print(_table(timeline, ("created_at", "task_type", "task_id", "status", "error")))
    if args.flow:
        print(_flow_text(flow, args.flow))
    return 0


async def _tasks_list(args: argparse.Namespace) -> int:
    from tq_cloud.domain.task import TaskStatus
    from tq_cloud.ports.storage import TaskQuery

    query = TaskQuery(status=TaskStatus(args.status), queue=args.queue, type=args.type, since=args.since,
                      limit=args.limit, cursor=args.cursor)
    async with _stack(args) as stack:
        try:
            page = await _operations(stack).tasks(query)
        except ValueError as exc:
            raise UsageError(f"--cursor: {exc}; give the cursor a previous page printed") from None
    return _print_page(args, page["tasks"], page["cursor"],
                       ("id", "queue", "type", "status", "attempts", "redrives", "updated_at", "error"))


async def _tasks_show(args: argparse.Namespace) -> int:
    async with _stack(args) as stack:
        task = await _operations(stack).task(args.id)
    if task is None:
        raise UsageError(f"no stored task {args.id!r}: tasks without a row leave none unless TQ_HISTORY is on "
                         "(`tq-cloud tasks list` shows the stored ones)")
    if args.json:
        print(json.dumps(task, default=str))
    else:
        width = max(len(k) for k in task)
        print("\n".join(f"{k:<{width}}  {_cell(v, 200)}" for k, v in task.items()))
    return 0


async def _tasks_result(args: argparse.Namespace) -> int:
    """The result as JSON on standard output (0); a task that did not succeed is one line saying
    how it ended, on standard error (1: failed or cancelled; 2: not finished, unknown or not kept)."""
    async with _stack(args) as stack:
        answer = await _operations(stack).result(args.id, args.wait)
    if answer["status"] == "executed":
        print(json.dumps(answer if args.json else answer["result"], default=str))
        return 0
    if args.json:
        print(json.dumps(answer, default=str))
    hint = {"pending": " (wait longer: --wait S)", "unknown": ""}.get(answer["status"], "")
    print(f"task {args.id}: {answer['status']}: {answer['error']}{hint}", file=sys.stderr)
    return 1 if answer["status"] in ("failed", "ignored", "cancelled") else 2


async def _tasks_cancel(args: argparse.Namespace) -> int:
    async with _stack(args) as stack:
        answer = await _operations(stack).cancel(args.id, args.reason)
    return _said(answer["cancelled"], f"cancelled {args.id}: it will not start again (a run in progress sees "
                 "actions.is_cancelled)", f"not cancelled: {args.id} has finished, or no stored task has that id "
                 f"(`tq-cloud tasks show {args.id}`)")


async def _flows_cancel(args: argparse.Namespace) -> int:
    async with _stack(args) as stack:
        answer = await _operations(stack).cancel_flow(args.id, args.reason)
    return _said(answer["cancelled"], f"cancelled flow {args.id}: its steps not started will not run, and it has "
                 "no join", f"not cancelled: flow {args.id} is closed already, or unknown (`tq-cloud flows show "
                 f"{args.id}`)")


def _said(done: bool, yes: str, no: str) -> int:
    """`yes` on standard output (0), or `no` on standard error (1)."""
    print(yes if done else no, file=sys.stdout if done else sys.stderr)
    return 0 if done else 1


async def _schedules_list(args: argparse.Namespace) -> int:
    app = _producer_app(args, "that declares the schedules")
    async with _stack(args, app) as stack:
        rows = await _operations(stack).schedules()
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    flat = [{**r, "next": ", ".join(r.get("next", [])[:2]),
             "last_runs": ", ".join(f"{x['at'][11:16]} {x['status']}" for x in r.get("last_runs", []))} for r in rows]
    print(_table(flat, ("name", "task", "expression", "timezone", "deployed", "paused", "next", "last_runs")))
    return 0


async def _schedules_pause(args: argparse.Namespace, paused: bool = True) -> int:
    app = _producer_app(args, "that declares the schedule")
    async with _stack(args, app) as stack:
        try:
            answer = await _operations(stack).pause_schedule(args.name, paused)
        except KeyError as exc:
            raise UsageError(str(exc.args[0])) from None
    print(f"{'paused' if paused else 'resumed'} schedule {args.name}"
          + ("" if answer["deployed"] else " (not deployed yet: the sweeper deploys it, as it is now)"))
    return 0


async def _schedules_resume(args: argparse.Namespace) -> int:
    return await _schedules_pause(args, paused=False)


async def _redrive(args: argparse.Namespace) -> int:
    if args.from_failure_queue is not None:
        return await _redrive_failure_queue(args)
    if bool(args.ids) == bool(args.status):
        raise UsageError("name the tasks: redrive ID [ID ...], or --status failed [--queue Q] [--type T]")
    from tq_cloud.domain.task import TaskStatus
    from tq_cloud.ports.storage import TaskQuery

    async with _stack(args) as stack:
        ops = _operations(stack)
        if args.ids:
            report = await ops.redrive(list(args.ids))
        else:
            query = TaskQuery(status=TaskStatus(args.status), queue=args.queue, type=args.type, since=args.since)
            report = await ops.redrive_matching(query, args.limit)
    sent, skipped = report["sent"], report["skipped"]
    if args.json:
        print(json.dumps(sent, default=str))
        return 0
    print(f"re-driven: {len(sent)}" + (f" ({', '.join(t['id'] for t in sent[:20])}"
                                       f"{' ...' if len(sent) > 20 else ''})" if sent else ""))
    for task_id, why in list(skipped.items())[:100]:
        print(f"skipped {task_id}: {why}")
    if len(skipped) > 100:
        print(f"... and {len(skipped) - 100} more skipped")
    return 0


async def _redrive_failure_queue(args: argparse.Namespace) -> int:
    from tq_cloud.backends.aws.failure_destination import redrive_failure_destination

    async with _stack(args) as stack:
        url = args.from_failure_queue or stack.settings.failure_queue_url
        if not url:
            raise UsageError("give the on-failure queue's URL (the stack's WorkerFailureQueue): "
                             "--from-failure-queue URL, or TQ_FAILURE_QUEUE_URL")
        report = await redrive_failure_destination(stack.clients, url, max_messages=args.limit,
                                                   storage=stack.storage)
    summary = {"messages": report.messages, "records": report.records, "skipped": report.skipped,
               "unavailable": report.unavailable}
    print(json.dumps(summary) if args.json else
          f"re-sent {report.records} records of {report.messages} failed batches"
          + (f" ({report.skipped} skipped: their tasks had committed)" if report.skipped else "")
          + (f"; no longer in the stream: {', '.join(report.unavailable)}" if report.unavailable else ""))
    return 0


async def _flows_list(args: argparse.Namespace) -> int:
    async with _stack(args) as stack:
        page = await _operations(stack).flows(args.limit, args.cursor)
    return _print_page(args, page["flows"], page["cursor"], ("id", "state", "done", "total", "failed", "join",
                                                             "started_at"))


async def _flows_show(args: argparse.Namespace) -> int:
    async with _stack(args) as stack:
        flow = await _operations(stack).flow(args.id)
    if flow is None:
        raise UsageError(f"no flow {args.id!r} (flows expire two weeks after they close)")
    print(json.dumps(flow, default=str) if args.json else _flow_text(flow, args.id))
    return 0


async def _console(args: argparse.Namespace) -> int:
    from tq_cloud.console.app import serve_console

    async with _stack(args) as stack:
        await serve_console(stack, port=args.port, announce=print)
    return 0


def _print_page(args: argparse.Namespace, rows: list[dict[str, Any]], cursor: str | None,
                columns: Sequence[str]) -> int:
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    print(_table(rows, columns))
    if cursor:
        print(f"more: --cursor {cursor}")
    return 0


def _flow_text(flow: dict[str, Any] | None, flow_id: str) -> str:
    if flow is None:
        return f"flow {flow_id}: unknown"
    head = (f"flow {flow['id']}: {flow['state']}, {flow['done']} of {flow['total']} steps done "
            f"({flow['failed']} failed, {flow['ignored']} ignored), join {flow['join']}")
    return head + "\n" + _table(flow.get("steps", []), ("step_index", "status", "result", "error"))


def _cell(value: Any, width: int) -> str:
    text = "" if value is None else value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[:width - 1] + "…"


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    if not rows:
        return "  (none)"
    cells = [[_cell(row.get(c), 60) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)
