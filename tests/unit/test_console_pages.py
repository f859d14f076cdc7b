"""The console's pages, rendered on the server over the in-memory engine: exact counts from the
kept counters past any cap, /tasks with its filters, pages and bulk re-drive, a task's timeline
of attempts, a flow's steps and re-drive, an entity's timeline; bad input gets a page that says
what is wrong, and whatever a task carries is shown escaped."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html import unescape
from typing import Any

import aiohttp
import pytest

from tests.unit.test_console_api import _post_json, _served, _token
from tq_cloud import EntityRef, ExecutorActions, FlowConfig, JoinTarget, Task, TaskQueuesManager
from tq_cloud.testing import InMemoryStack

HOSTILE = "<script>alert('owned')</script>"


class Shop:
    def __init__(self) -> None:
        self.app = app = TaskQueuesManager()
        self.broken = True
        self.flows: list[str] = []

        @app.task("mail", "notify")
        async def notify(task: Task, actions: ExecutorActions) -> None:
            actions.success(task)

        @app.task("billing", "charge", retries=2, store_on_failure=True)
        async def charge(task: Task, actions: ExecutorActions) -> None:
            if self.broken:
                actions.fail(task, f"card declined {HOSTILE} for {task.key}")
            else:
                actions.success(task, {"charged": task.payload["amount"]})

        @app.task("flows", "parent")
        async def parent(task: Task, actions: ExecutorActions) -> None:
            steps = [{"type": "step", "queue_id": "flows", "payload": {"i": i}} for i in range(3)]
            self.flows.append(actions.start_flow(steps, FlowConfig(join=JoinTarget(type="join", queue_id="flows"))))
            actions.success(task)

        @app.task("flows", "step", retries=0, store_on_failure=True)
        async def step(task: Task, actions: ExecutorActions) -> None:
            if task.payload["i"] == 1 and self.broken:
                actions.fail(task, "step 1 broke")
            else:
                actions.success(task, {"value": task.payload["i"] * 10})

        @app.task("flows", "join", store_on_failure=True)
        async def join(task: Task, actions: ExecutorActions) -> None:
            actions.success(task, "joined")


@asynccontextmanager
async def served_console() -> AsyncIterator[tuple[Shop, InMemoryStack, aiohttp.ClientSession, str]]:
    shop = Shop()
    stack, stop, serving, base = await _served(shop.app)
    try:
        async with aiohttp.ClientSession() as http:
            yield shop, stack, http, base
    finally:
        stop.set()
        await serving


@pytest.fixture
async def console() -> AsyncIterator[tuple[Shop, InMemoryStack, aiohttp.ClientSession, str]]:
    async with served_console() as served:
        yield served


async def html(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as response:
        return response.status, await response.text()


async def test_the_overview_counts_exactly_past_any_cap(console: Any) -> None:
    """1,200 tasks leave no row (they succeed at once, without history): the old capped scan
    could count none of them, and no more than 1,000 of anything."""
    _shop, stack, http, base = console
    await stack.handler.add_tasks([Task(type="notify", queue_id="mail", payload={}) for _ in range(1200)])
    await stack.handler.add_tasks([Task(id="order-1", type="charge", queue_id="billing", payload={"amount": 5})])
    await stack.run_until_idle()
    status, page = await html(http, base + "/")
    assert status == 200
    row = re.search(r'<tr data-pair="mail/notify">(.*?)</tr>', page, re.S)
    assert row and re.search(r'data-n="executed">1200<', row[1]), row
    billing = re.search(r'<tr data-pair="billing/charge">(.*?)</tr>', page, re.S)
    assert billing and re.search(r'data-n="retried">2<', billing[1]) and re.search(r'data-n="dead_lettered">1<', billing[1])
    assert 'id="executed">1200<' in page
    assert 'href="/tasks/order-1"' in page, "recent failures link to their task"
    for chart in ("throughput", "lateness"):
        async with http.get(base + f"/charts/{chart}.svg?minutes=60") as response:
            svg = await response.text()
            assert response.status == 200 and response.content_type == "image/svg+xml" and "<svg" in svg
    assert (await html(http, base + "/charts/throughput.svg?minutes=0"))[0] == 400


async def test_the_overview_is_not_exact_without_the_kept_counters(monkeypatch: Any) -> None:
    """The same check, the counters taken away: it fails (so it tests the counters)."""
    monkeypatch.setattr("tq_cloud.operations.Operations.of", classmethod(
        lambda cls, stack: cls(stack.handler, stack.barriers, stack.projections)))
    with pytest.raises(AssertionError):
        async with served_console() as served:
            await test_the_overview_counts_exactly_past_any_cap(served)


async def test_tasks_filter_page_and_redrive_in_bulk_after_a_count(console: Any) -> None:
    shop, stack, http, base = console
    await stack.handler.add_tasks([Task(id=f"order-{i}", type="charge", queue_id="billing", payload={"amount": i})
                                   for i in range(7)])
    await stack.run_until_idle()
    status, page = await html(http, base + "/tasks?status=failed&queue=billing&limit=3")
    assert status == 200 and page.count('<tr data-id="order-') == 3
    following = re.search(r'id="next-page" href="([^"]+)"', page)
    assert following, "a full page links to the next"
    _, second = await html(http, base + following[1].replace("&amp;", "&"))
    assert second.count('<tr data-id="order-') == 3 and "first page" in second
    _, found = await html(http, base + "/tasks?status=failed&q=order-4")
    assert re.findall(r'<tr data-id="([^"]+)"', found) == ["order-4"]
    status, refused = await html(http, base + "/tasks?since=not-a-time")
    assert status == 400 and "since must be a time in ISO 8601" in refused

    async with http.get(base + "/api/tasks/count?status=failed&queue=billing") as response:
        assert await response.json() == {"count": 7, "capped": False}
    token = await _token(http, base)
    shop.broken = False
    status, report = await _post_json(http, base + "/api/redrive", token,
                                      b'{"filter": {"status": "failed", "queue": "billing"}, "expect": 5}')
    assert status == 200 and len(report["redriven"]) == 5, "no more than the count confirmed"
    await stack.run_until_idle()
    async with http.get(base + "/api/tasks/count?status=failed&queue=billing") as response:
        assert (await response.json())["count"] == 2


async def test_a_task_page_shows_its_attempts_payload_and_result_escaped(console: Any) -> None:
    _shop, stack, http, base = console
    await stack.handler.add_tasks([Task(id="order-9", type="charge", queue_id="billing",
                                        payload={"amount": 9, "note": HOSTILE}, entity=EntityRef(type="user", id="u1"))])
    await stack.run_until_idle()
    status, page = await html(http, base + "/tasks/order-9")
    assert status == 200 and HOSTILE not in page, "a payload or an error is shown as text, never as markup"
    assert "&lt;script&gt;" in page
    assert len(re.findall(r'<li class="fail">attempt (\d) failed', page)) == 3
    assert '"amount": 9,\n' in unescape(page), "the payload pretty-printed"
    assert 'id="redrive"' in page and 'href="/entities?key=user%3Au1"' in page
    async with http.get(base + "/tasks/order-9") as response:
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "DENY", "no page may frame the console's buttons"

    status, missing = await html(http, base + "/tasks/no-such-task")
    assert status == 404 and "no stored task" in missing
    async with http.get(base + "/find?id=order-9", allow_redirects=False) as response:
        assert response.status == 303 and response.headers["Location"] == "/tasks/order-9"
    async with http.get(base + "/entities?key=user:u1", allow_redirects=False) as response:
        assert response.headers["Location"] == "/entities/user/u1"
    _, timeline = await html(http, base + "/entities/user/u1")
    assert 'href="/tasks/order-9"' in timeline and "failed" in timeline


async def test_escaping_check_fails_without_autoescape(monkeypatch: Any) -> None:
    monkeypatch.setattr("jinja2.select_autoescape", lambda **kw: False)
    with pytest.raises(AssertionError, match="never as markup"):
        async with served_console() as served:
            await test_a_task_page_shows_its_attempts_payload_and_result_escaped(served)


async def test_a_flow_page_shows_steps_progress_and_redrives_the_failed_step(console: Any) -> None:
    shop, stack, http, base = console
    await stack.handler.add_tasks([Task(type="parent", queue_id="flows", payload={})])
    await stack.run_until_idle()
    [flow] = shop.flows
    status, page = await html(http, base + f"/flows/{flow}")
    assert status == 200 and 'aria-valuenow="3"' in page and "2 succeeded, 1 failed" in page
    assert len(re.findall(r'<tr data-step="\d">', page)) == 3
    failed = re.search(r'id="redrive-failed-steps" [^>]*data-ids="([^"]+)"', page)
    assert failed, "the failed step can be re-driven"
    assert re.search(r'<span class="status executed">executed</span>', page.split('id="join"')[1]), "the join ran"
    shop.broken = False
    status, report = await _post_json(http, base + "/api/redrive", await _token(http, base),
                                      f'{{"ids": ["{failed[1]}"]}}'.encode())
    assert status == 200 and [t["id"] for t in report["redriven"]] == [failed[1]]
    await stack.run_until_idle()
    _, task_page = await html(http, base + f"/tasks/{failed[1]}")
    assert 'id="task-status">executed<' in task_page and f'href="/flows/{flow}"' in task_page
    assert (await html(http, base + "/flows/nope"))[0] == 404
