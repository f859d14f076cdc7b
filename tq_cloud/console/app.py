"""The web console: live counts and throughput per queue and type (server-sent events), failed
tasks with their errors and a re-drive button, a task's detail (its result, progress and a
cancel button), flows with their progress and
join, an entity's timeline. Starlette and uvicorn on 127.0.0.1; one page of plain HTML and
JavaScript (page.html), nothing loaded from the internet, no build step. It reads everything
through `Operations`, so it works against the local runtime and a deployed stack alike.

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
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tq_cloud.console.guard import ASGIApp, guarded, new_csrf_token
from tq_cloud.domain.task import TaskStatus
from tq_cloud.operations import Operations
from tq_cloud.ports.storage import TaskQuery

STATUSES = {s.value for s in TaskStatus}


def create_app(ops: Operations, *, tick: float = 1.0, stopping: asyncio.Event | None = None) -> ASGIApp:
    """The console's routes over `ops`, behind its guard (guard.py: its own host names only; a
    change only as same-origin JSON with the page's CSRF token); `tick` is the seconds between
    two live updates, which end when `stopping` is set (so that the server stops without
    cutting a stream off)."""
    stopping = stopping or asyncio.Event()
    token = new_csrf_token()
    page = files("tq_cloud.console").joinpath("page.html").read_text().replace("{{csrf_token}}", token)

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    latest: dict[str, Any] = {}
    computing = asyncio.Lock()

    async def current_counts() -> dict[str, Any]:
        """One count per tick, however many pages watch: each count reads up to a page per status."""
        async with computing:
            now = asyncio.get_running_loop().time()
            if not latest or now - latest["at"] >= tick:
                latest.update(at=now, counts=await ops.counts())
            counted: dict[str, Any] = latest["counts"]
            return counted

    async def counts(request: Request) -> Response:
        if "minutes" not in request.query_params:
            return JSONResponse(await current_counts())
        return JSONResponse(await ops.counts(timedelta(minutes=int(request.query_params["minutes"]))))

    async def tasks(request: Request) -> Response:
        params = request.query_params
        status = params.get("status", "failed")
        if status not in STATUSES:
            return JSONResponse({"error": f"status must be one of {sorted(STATUSES)}"}, status_code=400)
        query = TaskQuery(status=TaskStatus(status), queue=params.get("queue") or None, type=params.get("type") or None,
                          limit=int(params.get("limit", 50)), cursor=params.get("cursor") or None)
        return JSONResponse(await ops.tasks(query))

    async def task(request: Request) -> Response:
        found = await ops.task(request.path_params["task_id"])
        return JSONResponse(found) if found else JSONResponse({"error": "no stored task"}, status_code=404)

    async def redrive(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or not 0 < len(ids) <= 1000:
            return JSONResponse({"error": "give {\"ids\": [...]}, 1 to 1000 task ids"}, status_code=400)
        report = await ops.redrive(ids)
        return JSONResponse({"redriven": report["sent"], "skipped": report["skipped"]})

    async def cancel(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        task_id = body.get("id") if isinstance(body, dict) else None
        reason = body.get("reason", "") if isinstance(body, dict) else ""
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
                yield f"data: {json.dumps(await current_counts())}\n\n"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), tick)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    async def bad_request(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": str(exc)}, status_code=400)  # a limit or cursor that is not one

    return guarded(Starlette(exception_handlers={ValueError: bad_request}, routes=[
        Route("/", index), Route("/api/counts", counts), Route("/api/tasks", tasks),
        Route("/api/tasks/{task_id:path}", task), Route("/api/redrive", redrive, methods=["POST"]),
        Route("/api/cancel", cancel, methods=["POST"]), Route("/api/schedules", schedules),
        Route("/api/waiting", waiting),
        Route("/api/flows", flows), Route("/api/flows/{flow_id:path}", flow),
        Route("/api/entities/{kind}/{entity_id:path}", entity), Route("/api/events", events),
    ]), token)


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
