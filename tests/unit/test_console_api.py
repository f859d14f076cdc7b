"""The console's HTTP API over the in-memory engine: what it answers, and a 400 with the reason
for what it cannot use."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp

from tq_cloud import ExecutorActions, Task, TaskQueuesManager
from tq_cloud.console.app import serve_console
from tq_cloud.testing import InMemoryStack


async def test_the_api_answers_and_refuses_bad_input_with_the_reason() -> None:
    app = TaskQueuesManager()

    @app.task("q", "t", store_on_failure=True)
    async def fails(task: Task, actions: ExecutorActions) -> None:
        actions.fail(task, "nope", retry=False)

    stack, stop, serving, base = await _served(app)
    await stack.handler.add_tasks([Task(id="a", type="t", queue_id="q", payload={})])
    await stack.run_until_idle()
    try:
        async with aiohttp.ClientSession() as http:
            async def get(path: str) -> tuple[int, Any]:
                async with http.get(base + path) as response:
                    return response.status, await response.json()

            token = await _token(http, base)

            async def post(body: bytes) -> tuple[int, Any]:
                return await _post_json(http, base + "/api/redrive", token, body)

            status, page = await get("/api/tasks?status=failed")
            assert status == 200 and [t["id"] for t in page["tasks"]] == ["a"] and page["tasks"][0]["error"] == "nope"
            assert (await get("/api/tasks/a"))[1]["status"] == "failed"
            assert (await get("/api/tasks/ghost"))[0] == 404
            assert (await get("/api/tasks?status=bogus"))[0] == 400
            assert (await get("/api/tasks?limit=many")) == (
                400, {"error": "limit must be a whole number from 1 to 1000, not 'many'"})
            assert (await get("/api/tasks?since=yesterday"))[1]["error"].startswith("since must be a time in ISO 8601")
            assert (await get("/api/tasks?since=2026-12-07T10:00&until=2026-12-07T09:00"))[0] == 400
            assert (await get("/api/tasks?q=nop"))[1]["tasks"][0]["id"] == "a", "found by its error's text"
            assert (await get("/api/tasks?q=zzz"))[1]["tasks"] == []
            assert (await get("/api/tasks/count?status=failed&queue=q")) == (200, {"count": 1, "capped": False})
            assert (await post(b'{"filter": {"status": "failed"}}'))[0] == 400, "a bulk re-drive says how many"
            assert (await post(b'{"filter": {"status": "executed"}, "expect": 1}'))[0] == 400
            assert (await post(b'{"filter": {"status": ["failed"]}, "expect": 1}'))[0] == 400
            assert (await get("/api/tasks?cursor=garbage"))[0] == 400
            assert (await post(b"not json"))[0] == 400
            assert (await post(b'{"ids": "a"}'))[0] == 400
            status, sent = await post(b'{"ids": ["a"]}')
            assert status == 200 and [t["id"] for t in sent["redriven"]] == ["a"]
            assert (await post(b'{"ids": ["a"]}'))[1] == {"redriven": [], "skipped": {"a": "processing, not failed or ignored"}}, \
            "a second redrive sends nothing, and says why"
    finally:
        stop.set()
        await serving


async def _token(http: aiohttp.ClientSession, base: str) -> str:
    """The CSRF token the console's page carries."""
    async with http.get(base + "/") as response:
        found = re.search(r'name="csrf-token" content="([^"]+)"', await response.text())
    assert found is not None, "the page carries no CSRF token"
    return found[1]


async def _post_json(http: aiohttp.ClientSession, url: str, token: str, body: bytes) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", "X-CSRF-Token": token}
    async with http.post(url, data=body, headers=headers) as response:
        return response.status, await response.json()


async def _served(app: TaskQueuesManager | None = None) -> tuple[InMemoryStack, asyncio.Event, Any, str]:
    stack = InMemoryStack.create(app or TaskQueuesManager())
    stop, announced = asyncio.Event(), asyncio.Event()
    urls: list[str] = []

    def announce(line: str) -> None:
        urls.append(line.split(" ", 1)[1])
        announced.set()

    serving = asyncio.ensure_future(serve_console(stack, port=0, announce=announce, stop=stop))
    await announced.wait()
    return stack, stop, serving, urls[0]


async def test_cross_site_and_rebinding_requests_are_refused() -> None:
    """A page elsewhere can send a text/plain POST without a preflight, and a rebinding page
    reaches 127.0.0.1 under its own name: neither changes or reads anything."""
    app = TaskQueuesManager()

    @app.task("q", "t", store_on_failure=True)
    async def fails(task: Task, actions: ExecutorActions) -> None:
        actions.fail(task, "secret error text", retry=False)

    stack, stop, serving, base = await _served(app)
    await stack.handler.add_tasks([Task(id="a", type="t", queue_id="q", payload={})])
    await stack.run_until_idle()
    port = base.rsplit(":", 1)[1]
    try:
        async with aiohttp.ClientSession() as http:
            token = await _token(http, base)

            async def status(method: str, path: str, **kwargs: Any) -> int:
                async with http.request(method, base + path, **kwargs) as response:
                    return response.status

            body = b'{"ids": ["a"]}'
            json_with_token = {"Content-Type": "application/json", "X-CSRF-Token": token}
            assert await status("POST", "/api/redrive", data=body, headers={"Content-Type": "text/plain"}) == 403
            assert await status("POST", "/api/redrive", data=body,
                                headers={"Content-Type": "application/json"}) == 403, "no token"
            assert await status("POST", "/api/redrive", data=body, headers={
                **json_with_token, "Origin": "https://evil.example"}) == 403
            assert await status("POST", "/api/redrive", data=body, headers={
                **json_with_token, "Sec-Fetch-Site": "cross-site"}) == 403
            assert await status("GET", "/api/tasks?status=failed", headers={"Host": f"evil.example:{port}"}) == 421
            assert await status("GET", "/", headers={"Host": f"localhost:{port}"}) == 200
            assert (await stack.storage.get(["a"]))[0].status.value == "failed", "nothing was re-driven"
            assert await status("POST", "/api/redrive", data=body, headers={
                **json_with_token, "Origin": base, "Sec-Fetch-Site": "same-origin"}) == 200
    finally:
        stop.set()
        await serving


async def test_the_guard_check_fails_without_the_guard(monkeypatch: Any) -> None:
    import pytest

    monkeypatch.setattr("tq_cloud.console.app.guarded", lambda app, token: app)
    with pytest.raises(AssertionError):
        await test_cross_site_and_rebinding_requests_are_refused()


async def test_the_task_page_shows_result_and_progress_and_cancels() -> None:
    from datetime import timedelta

    app = TaskQueuesManager()

    @app.task("q", "report", keep_result=timedelta(hours=1), cancellable=True)
    async def report(task: Task, actions: ExecutorActions) -> dict[str, int]:
        return {"rows": 3}

    app.schedule("hourly", task=report, every=timedelta(hours=1))
    stack, stop, serving, base = await _served(app)
    done = await stack.handler.send(report, {})
    later = await stack.handler.send(report, {}, delay=timedelta(hours=1))
    await stack.process_ready()
    try:
        async with aiohttp.ClientSession() as http:
            token = await _token(http, base)

            async def cancel(body: bytes) -> tuple[int, Any]:
                return await _post_json(http, base + "/api/cancel", token, body)

            async with http.get(base + "/api/schedules") as response:
                [hourly] = await response.json()
            assert (hourly["name"], hourly["expression"], hourly["paused"]) == ("hourly", "rate(1 hour)", False)
            assert len(hourly["next"]) == 3 and hourly["last_runs"][0]["status"] == "no run"
            async with http.get(base + f"/api/tasks/{done.key}") as response:
                view = await response.json()
            assert view["status"] == "executed" and view["result"] == {"rows": 3} and view["expires_at"]
            assert (await cancel(b'{"reason": "x"}'))[0] == 400
            assert (await cancel(b'{"id": 5}'))[0] == 400
            assert await cancel(f'{{"id": "{later.key}", "reason": "no"}}'.encode()) == (
                200, {"id": later.key, "cancelled": True})
            assert await cancel(f'{{"id": "{done.key}"}}'.encode()) == (200, {"id": done.key, "cancelled": False})
            async with http.get(base + f"/api/tasks/{later.key}") as response:
                view = await response.json()
            assert view["status"] == "cancelled" and view["error"] == "cancelled: no"
            async with http.post(base + "/api/cancel", data=b'{"id": "x"}',
                                 headers={"Content-Type": "application/json"}) as response:
                assert response.status == 403, "a cancel without the page's token was taken"
    finally:
        stop.set()
        await serving
