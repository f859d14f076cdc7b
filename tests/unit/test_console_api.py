"""The console's HTTP API over the in-memory engine: what it answers, and a 400 with the reason
for what it cannot use."""

from __future__ import annotations

import asyncio
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

    stack = InMemoryStack.create(app)
    await stack.handler.add_tasks([Task(id="a", type="t", queue_id="q", payload={})])
    await stack.run_until_idle()
    stop, announced = asyncio.Event(), asyncio.Event()
    urls: list[str] = []

    def announce(line: str) -> None:
        urls.append(line.split(" ", 1)[1])
        announced.set()

    serving = asyncio.ensure_future(serve_console(stack, port=0, announce=announce, stop=stop))
    await announced.wait()
    base = urls[0]
    try:
        async with aiohttp.ClientSession() as http:
            async def get(path: str) -> tuple[int, Any]:
                async with http.get(base + path) as response:
                    return response.status, await response.json()

            async def post(body: bytes) -> tuple[int, Any]:
                async with http.post(base + "/api/redrive", data=body) as response:
                    return response.status, await response.json()

            status, page = await get("/api/tasks?status=failed")
            assert status == 200 and [t["id"] for t in page["tasks"]] == ["a"] and page["tasks"][0]["error"] == "nope"
            assert (await get("/api/tasks/a"))[1]["status"] == "failed"
            assert (await get("/api/tasks/ghost"))[0] == 404
            assert (await get("/api/tasks?status=bogus"))[0] == 400
            assert (await get("/api/tasks?limit=many")) == (400, {"error": "invalid literal for int() with base 10: 'many'"})
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
