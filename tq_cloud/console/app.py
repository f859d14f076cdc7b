"""The web console: an overview (live figures from the kept counters, charts of the last hour,
exact counts per queue and type, recent failures and flows), `/tasks` with filters, cursor
pages, bulk re-drive and cancel, a task's page (payload, result, attempts as a timeline, trace
id), a flow's page (its steps, a progress bar, re-drive of failed steps, the join's outcome) and
an entity's timeline. Pages are rendered on the server (Starlette, Jinja2 with autoescape);
charts are SVG drawn by pygal; one small script (static/console.js) sends the actions and
follows the live figures (server-sent events). Nothing is loaded from the internet. It reads
everything through `Operations`, so it works against the local runtime and a deployed stack.
The JSON API under `/api/` is what the pages' actions call, and what scripts may call.

Example:
    async with aws_stack(TaskQueuesManager(), AwsSettings()) as stack:
        await serve_console(stack, port=8765, announce=print)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from importlib.resources import files
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from tq_cloud.console.charts import lateness_svg, throughput_svg
from tq_cloud.console.filters import FILTERS, STATUSES, filter_values, link, task_query
from tq_cloud.console.guard import ASGIApp, guarded, new_csrf_token
from tq_cloud.domain.tally import OUTCOMES
from tq_cloud.operations import Operations
from tq_cloud.ports.storage import REDRIVABLE

REDRIVABLE_STATUSES = sorted(s.value for s in REDRIVABLE)


def _templates() -> Jinja2Templates:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    folder = str(files("tq_cloud.console").joinpath("templates"))
    env = Environment(loader=FileSystemLoader(folder), autoescape=select_autoescape(default=True))
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False, default=str)
    env.filters["compact"] = lambda value: json.dumps(value, ensure_ascii=False, default=str)
    env.globals["link"] = link
    return Jinja2Templates(env=env)


def create_app(ops: Operations, *, tick: float = 1.0, stopping: asyncio.Event | None = None) -> ASGIApp:
    """The console's routes over `ops`, behind its guard (guard.py: its own host names only; a
    change only as same-origin JSON with the page's CSRF token); `tick` is the seconds between
    two live updates, which end when `stopping` is set (so that the server stops without
    cutting a stream off)."""
    stopping = stopping or asyncio.Event()
    token = new_csrf_token()
    templates = _templates()

    def page(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        return templates.TemplateResponse(request, name, {"csrf_token": token, "redrivable": REDRIVABLE_STATUSES,
                                                          **context}, status_code=status_code)

    def problem(request: Request, status: int, title: str, message: str) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=status)
        return page(request, "error.html", status, title=title, message=message, status=status, nav="")

    latest: dict[str, Any] = {}
    computing = asyncio.Lock()

    async def live_figures() -> dict[str, Any]:
        """The live figures, worked out once per tick however many pages watch."""
        async with computing:
            now = asyncio.get_running_loop().time()
            if not latest or now - latest["at"] >= tick:
                latest.update(at=now, figures=_figures(await ops.activity(minutes=2)))
            figures: dict[str, Any] = latest["figures"]
            return figures

    async def overview(request: Request) -> Response:
        live = await live_figures()
        failed = await ops.tasks(task_query({"status": "failed"}, limit=10))
        flows = await ops.flows(10)
        return page(request, "overview.html", nav="Overview", outcomes=OUTCOMES, **live,
                    failed=failed["tasks"], flows=flows["flows"], waiting=await ops.waiting_on_limits(),
                    schedules=await ops.schedules())

    async def tasks_page(request: Request) -> Response:
        query = task_query(request.query_params)
        found = await ops.tasks(query)
        values = filter_values(request.query_params)
        filter_json = json.dumps({k: v for k, v in values.items() if v})
        values["limit"] = request.query_params.get("limit", "")  # kept by the page links, not a filter
        return page(request, "tasks.html", nav="Tasks", tasks=found["tasks"], next_cursor=found["cursor"],
                    cursor_from=query.cursor, values=values, statuses=STATUSES, filter_json=filter_json)

    async def task_page(request: Request) -> Response:
        task_id = request.path_params["task_id"]
        found = await ops.task(task_id)
        if found is None:
            return problem(request, 404, "No such task", f"no stored task {task_id!r} (a task that succeeded at once "
                                                          "leaves no row unless TQ_HISTORY is on)")
        return page(request, "task.html", nav="Tasks", task=found)

    async def flows_page(request: Request) -> Response:
        found = await ops.flows(50, request.query_params.get("cursor") or None)
        return page(request, "flows.html", nav="Flows", flows=found["flows"], next_cursor=found["cursor"])

    async def flow_page(request: Request) -> Response:
        flow_id = request.path_params["flow_id"]
        found = await ops.flow(flow_id, steps=1000)
        if found is None:
            return problem(request, 404, "No such flow", f"no flow {flow_id!r}")
        failed_ids = [s["task_id"] for s in found["steps"] if s["task_status"] in REDRIVABLE_STATUSES]
        return page(request, "flow.html", nav="Flows", flow=found, failed_ids=failed_ids)

    async def entity_page(request: Request) -> Response:
        kind, entity_id = request.path_params["kind"], request.path_params["entity_id"]
        return page(request, "entity.html", nav="", kind=kind, entity_id=entity_id,
                    timeline=await ops.entity(kind, entity_id))

    async def entity_search(request: Request) -> Response:
        kind, _, entity_id = request.query_params.get("key", "").partition(":")
        if not kind or not entity_id:
            return problem(request, 400, "Which entity?", "give the entity as type:id, e.g. user:42")
        return RedirectResponse(f"/entities/{_quoted(kind)}/{_quoted(entity_id)}", status_code=303)

    async def find(request: Request) -> Response:
        wanted = request.query_params.get("id", "").strip()
        if wanted and await ops.task(wanted) is not None:
            return RedirectResponse(f"/tasks/{_quoted(wanted)}", status_code=303)
        if wanted and await ops.flow(wanted, steps=0) is not None:
            return RedirectResponse(f"/flows/{_quoted(wanted)}", status_code=303)
        return problem(request, 404, "Not found", f"no stored task and no flow {wanted!r}")

    async def chart(request: Request) -> Response:
        text = request.query_params.get("minutes", "60")
        if not text.isdigit() or not 1 <= int(text) <= 1440:
            return problem(request, 400, "Bad chart", "minutes must be a whole number from 1 to 1440")
        draw = {"throughput": throughput_svg, "lateness": lateness_svg}[request.path_params["name"]]
        return Response(draw(await ops.activity(int(text))), media_type="image/svg+xml",
                        headers={"Cache-Control": "no-store"})

    async def activity(request: Request) -> Response:
        return JSONResponse(await ops.activity(int(request.query_params.get("minutes", "60"))))

    async def counts(request: Request) -> Response:
        minutes = int(request.query_params.get("minutes", "15"))
        return JSONResponse(await ops.counts(timedelta(minutes=minutes)))

    async def tasks(request: Request) -> Response:
        return JSONResponse(await ops.tasks(task_query(request.query_params)))

    async def count_tasks(request: Request) -> Response:
        return JSONResponse(await ops.count_matching(task_query(request.query_params)))

    async def task(request: Request) -> Response:
        found = await ops.task(request.path_params["task_id"])
        return JSONResponse(found) if found else JSONResponse({"error": "no stored task"}, status_code=404)

    async def redrive(request: Request) -> Response:
        body = await _json_body(request)
        ids, wanted = body.get("ids"), body.get("filter")
        if isinstance(wanted, dict) and ids is None:
            expect = body.get("expect")
            if not all(isinstance(k, str) and k in FILTERS and isinstance(v, str) for k, v in wanted.items()):
                return problem(request, 400, "Bad filter", f"a filter has only text values of {', '.join(FILTERS)}")
            if wanted.get("status") not in REDRIVABLE_STATUSES:
                return problem(request, 400, "Bad filter", f"only {' or '.join(REDRIVABLE_STATUSES)} tasks re-drive")
            if not isinstance(expect, int) or not 0 < expect <= 10_000:
                return problem(request, 400, "Bad count", "give \"expect\": the count you confirmed (1 to 10,000); "
                                                          "no more than it is re-driven")
            report = await ops.redrive_matching(task_query(wanted), expect)
        elif isinstance(ids, list) and all(isinstance(i, str) for i in ids) and 0 < len(ids) <= 1000:
            report = await ops.redrive(ids)
        else:
            return problem(request, 400, "Bad re-drive", "give {\"ids\": [...]} (1 to 1000 task ids), or "
                                                         "{\"filter\": {...}, \"expect\": N}")
        return JSONResponse({"redriven": report["sent"], "skipped": report["skipped"]})

    async def cancel(request: Request) -> Response:
        body = await _json_body(request)
        task_id, reason = body.get("id"), body.get("reason", "")
        if not isinstance(task_id, str) or not task_id or not isinstance(reason, str) or len(reason) > 1000:
            return JSONResponse({"error": "give {\"id\": \"task id\", \"reason\": \"why\"} (a reason of at most "
                                          "1,000 characters)"}, status_code=400)
        return JSONResponse(await ops.cancel(task_id, reason))

    async def schedules(request: Request) -> Response:
        return JSONResponse(await ops.schedules())

    async def waiting(request: Request) -> Response:
        return JSONResponse(await ops.waiting_on_limits())

    async def flows(request: Request) -> Response:
        return JSONResponse(await ops.flows(int(request.query_params.get("limit", 50)),
                                            request.query_params.get("cursor") or None))

    async def flow(request: Request) -> Response:
        found = await ops.flow(request.path_params["flow_id"])
        return JSONResponse(found) if found else JSONResponse({"error": "no such flow"}, status_code=404)

    async def entity(request: Request) -> Response:
        return JSONResponse(await ops.entity(request.path_params["kind"], request.path_params["entity_id"]))

    async def events(request: Request) -> Response:
        async def stream() -> AsyncIterator[str]:
            while not stopping.is_set() and not await request.is_disconnected():
                yield f"data: {json.dumps(await live_figures())}\n\n"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), tick)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    async def bad_request(request: Request, exc: Exception) -> Response:
        return problem(request, 400, "Bad request", str(exc))  # a filter, limit or cursor that is not one

    static = StaticFiles(directory=str(files("tq_cloud.console").joinpath("static")))
    return guarded(Starlette(exception_handlers={ValueError: bad_request}, routes=[
        Route("/", overview), Route("/tasks", tasks_page), Route("/tasks/{task_id:path}", task_page),
        Route("/flows", flows_page), Route("/flows/{flow_id:path}", flow_page),
        Route("/entities", entity_search), Route("/entities/{kind}/{entity_id:path}", entity_page),
        Route("/find", find), Route("/charts/{name:str}.svg", chart), Mount("/static", static),
        Route("/api/activity", activity), Route("/api/counts", counts), Route("/api/tasks", tasks),
        Route("/api/tasks/count", count_tasks), Route("/api/tasks/{task_id:path}", task),
        Route("/api/redrive", redrive, methods=["POST"]), Route("/api/cancel", cancel, methods=["POST"]),
        Route("/api/schedules", schedules), Route("/api/waiting", waiting),
        Route("/api/flows", flows), Route("/api/flows/{flow_id:path}", flow),
        Route("/api/entities/{kind}/{entity_id:path}", entity), Route("/api/events", events),
    ]), token)


def _figures(activity: dict[str, Any]) -> dict[str, Any]:
    """The overview's live part: all-time figures summed over executors, this minute's
    executed, and each executor's totals (the SSE message and the first render alike)."""
    totals = activity["totals"]
    figures = {name: sum(row[name] for row in totals) for name in ("executed", "dead_lettered", "retried")}
    figures["last_minute"] = activity["minutes"][-1]["executed"] if activity["minutes"] else 0
    return {"at": activity["at"], "kept": activity["kept"], "figures": figures, "totals": totals}


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _quoted(part: str) -> str:
    from urllib.parse import quote

    return quote(part, safe="")


def bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1 (port 0: a free one), so the URL is known before serving."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    sock.setblocking(False)
    return sock


async def serve_console(stack: Any, *, port: int = 0, announce: Callable[[str], Any] = print,
                        stop: asyncio.Event | None = None, tick: float = 1.0) -> None:
    """Serve the console for `stack` until cancelled or `stop` is set; announces its URL first."""
    import uvicorn

    sock = bind(port)
    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # the caller owns Ctrl-C and SIGTERM
            yield

    stopping = asyncio.Event()
    server = Server(uvicorn.Config(create_app(Operations.of(stack), tick=tick, stopping=stopping), log_level="warning",
                                   timeout_graceful_shutdown=1, lifespan="off"))
    announce(f"console: http://127.0.0.1:{sock.getsockname()[1]}")
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        if stop is None:
            await serving
        else:
            await asyncio.wait({serving, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.set()
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        sock.close()
