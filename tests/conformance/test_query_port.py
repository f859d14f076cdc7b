"""The query API of the storage, barrier and projection ports, and re-driving, on every backend:
listings by status (filtered, paged, newest first), history rows, re-drives that happen once,
flows by start, an entity's timeline."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from tests.conformance.test_storage_port import t
from tq_cloud import TaskStatus
from tq_cloud.clock import ManualClock
from tq_cloud.ports.projections import EntityTaskProjection, ProjectionStatus
from tq_cloud.ports.storage import NOT_STAMPED, TaskQuery


def typed(id_: str, clock: ManualClock, queue: str, type_: str, **kw: Any) -> Any:
    return t(id_, clock, **kw).model_copy(update={"queue_id": queue, "type": type_})


async def _pages(storage: Any, query: TaskQuery, most: int = 100) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        assert len(pages) < most, f"limit {query.limit}: no end after {most} pages ({pages[:3]}...)"
        page = await storage.list_tasks(replace(query, cursor=cursor))
        pages.append([x.key for x in page.tasks])
        if page.cursor is None:
            return pages
        cursor = page.cursor


async def test_failed_tasks_are_listed_newest_first_page_by_page(storage: Any, clock: ManualClock) -> None:
    for i in range(7):
        await storage.mark_failed([typed(f"f{i}", clock, "q", "t", at=0)], clock.now())
        await clock.advance(1)
    await storage.mark_ignored([typed("i0", clock, "q", "t")], "no executor", clock.now())
    await storage.insert([typed("s0", clock, "q", "t", at=30)])
    pages = await _pages(storage, TaskQuery(status=TaskStatus.FAILED, limit=3))
    assert pages == [["f6", "f5", "f4"], ["f3", "f2", "f1"], ["f0"]]
    [row] = (await storage.list_tasks(TaskQuery(status=TaskStatus.FAILED, limit=1))).tasks
    assert row.status is TaskStatus.FAILED and row.payload == {"id": "f6"}
    assert [x.key for x in (await storage.list_tasks(TaskQuery(status=TaskStatus.IGNORED))).tasks] == ["i0"]
    assert [x.key for x in (await storage.list_tasks(TaskQuery(status=TaskStatus.SCHEDULED))).tasks] == ["s0"]
    since = clock.now() - timedelta(seconds=2.5)
    assert [x.key for x in (await storage.list_tasks(TaskQuery(status=TaskStatus.FAILED, since=since))).tasks] == [
        "f6", "f5"]


async def test_listings_filter_by_queue_and_type(storage: Any, clock: ManualClock) -> None:
    rows = [typed(f"{q}{k}{i}", clock, q, k) for q in ("a", "b") for k in ("x", "y") for i in range(3)]
    for row in rows:
        await storage.mark_failed([row], clock.now())
        await clock.advance(0.01)
    query = TaskQuery(status=TaskStatus.FAILED, queue="b", type="x", limit=2)
    assert sorted(k for page in await _pages(storage, query) for k in page) == ["bx0", "bx1", "bx2"]
    only_queue = (await storage.list_tasks(TaskQuery(status=TaskStatus.FAILED, queue="a", limit=100))).tasks
    assert sorted(x.key for x in only_queue) == sorted(r.key for r in rows if r.queue_id == "a")


async def test_listings_filter_by_time_range_and_by_text_in_id_or_error(storage: Any, clock: ManualClock) -> None:
    start = clock.now()
    for i in range(6):
        row = typed(f"order-{i}", clock, "q", "t")
        row.execution_stats.last_error = "card declined" if i % 2 else "timeout talking to the bank"
        await storage.mark_failed([row], clock.now())
        await clock.advance(10)
    window = TaskQuery(status=TaskStatus.FAILED, since=start + timedelta(seconds=15),
                       until=start + timedelta(seconds=35), limit=1)
    assert [k for page in await _pages(storage, window) for k in page] == ["order-3", "order-2"]
    declined = TaskQuery(status=TaskStatus.FAILED, search="DECLINED", limit=2)
    assert sorted(k for page in await _pages(storage, declined) for k in page) == ["order-1", "order-3", "order-5"]
    by_id = await storage.list_tasks(TaskQuery(status=TaskStatus.FAILED, search="order-4"))
    assert [x.key for x in by_id.tasks] == ["order-4"]
    with pytest.raises(ValueError, match="after until"):
        TaskQuery(status=TaskStatus.FAILED, since=start, until=start - timedelta(seconds=1))


async def test_a_cursor_from_nowhere_is_refused(storage: Any) -> None:
    with pytest.raises(ValueError, match="not a cursor"):
        await storage.list_tasks(TaskQuery(status=TaskStatus.FAILED, cursor="garbage"))


def _redriven(row: Any, clock: ManualClock) -> Any:
    stats = row.execution_stats.model_copy(update={"retry_count": row.retry_count + 1, "redrives": 1,
                                                   "redrive_base": row.retry_count + 1})
    return row.model_copy(update={"status": TaskStatus.PROCESSING, "processing_started_at": NOT_STAMPED,
                                  "execution_stats": stats})


async def test_a_redrive_moves_a_final_failure_back_once(storage: Any, clock: ManualClock) -> None:
    await storage.mark_failed([t("f", clock, retry=2)], clock.now())
    await storage.mark_ignored([t("i", clock)], "no executor", clock.now())
    await storage.insert([t("s", clock)])
    rows = {r.key: r for r in await storage.get(["f", "i", "s"])}
    copies = [_redriven(rows[k], clock) for k in ("f", "i", "s")]
    assert sorted(x.key for x in await storage.redrive(copies, clock.now())) == ["f", "i"], "only final failures"
    assert await storage.redrive(copies, clock.now()) == [], "the same redrive again writes nothing"
    [f] = await storage.get(["f"])
    assert f.status is TaskStatus.PROCESSING and f.retry_count == 3 and f.execution_stats.redrives == 1
    assert (await storage.list_tasks(TaskQuery(status=TaskStatus.FAILED))).tasks == []
    claimed = await storage.claim_mature(clock.now() + timedelta(hours=1), 10)
    assert [x.key for x in claimed] == ["s"], "a re-driven row is sent by the redrive, not by a sweep"


async def test_history_keeps_executed_rows_but_never_over_a_final_row(storage: Any, clock: ManualClock) -> None:
    await storage.mark_failed([t("f", clock)], clock.now())
    done = t("f", clock, execution_result={"r": 1})
    await storage.keep_history([done, t("new", clock, execution_result={"r": 2})], clock.now())
    rows = {r.key: r for r in await storage.get(["f", "new"])}
    assert rows["f"].status is TaskStatus.FAILED
    assert rows["new"].status is TaskStatus.EXECUTED and rows["new"].execution_result == {"r": 2}
    assert [x.key for x in (await storage.list_tasks(TaskQuery(status=TaskStatus.EXECUTED))).tasks] == ["new"]


async def test_flows_are_listed_newest_first_active_and_closed(barriers: Any, clock: ManualClock) -> None:
    from tq_cloud.ports.barrier import BarrierState

    for i in range(5):
        await barriers.init_barrier(f"flow{i}", 2, clock.now())
        await clock.advance(1)
    assert await barriers.close("flow1", BarrierState.ABORTED)
    first = await barriers.list_flows(limit=3)
    assert [f.flow_id for f in first.flows] == ["flow4", "flow3", "flow2"] and first.cursor
    rest = await barriers.list_flows(limit=3, cursor=first.cursor)
    assert [(f.flow_id, f.state) for f in rest.flows] == [("flow1", BarrierState.ABORTED),
                                                            ("flow0", BarrierState.ACTIVE)]
    assert rest.cursor is None


async def test_an_entity_timeline_is_oldest_first(projections: Any, clock: ManualClock) -> None:
    entries = []
    for i in range(3):
        entries.append(EntityTaskProjection(
            task_id=f"p{i}", entity_id="42", entity_type="user", task_type="t", queue_id="q",
            status=ProjectionStatus.EXECUTED, created_at=clock.now(), updated_at=clock.now()))
        await clock.advance(1)
    await projections.upsert_projections(list(reversed(entries)))
    assert [p.task_id for p in await projections.timeline("user", "42", limit=2)] == ["p0", "p1"]
    assert await projections.timeline("user", "nobody") == []


def _operations(client: Any) -> list[str]:
    seen: list[str] = []
    client.meta.events.register("before-parameter-build.dynamodb.*", lambda model, **_: seen.append(model.name))
    return seen


async def _list_everything(storage: Any, barriers: Any) -> None:
    for status in TaskStatus:
        await storage.list_tasks(TaskQuery(status=status, queue="q", type="t", limit=5))
    await barriers.list_flows(limit=5)


@pytest.mark.parametrize("scanning", [False, True], ids=["as built", "a scan put back (the check fails)"])
async def test_listings_query_indexes_and_never_scan(aws_target: Any, scanning: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.aws_support import aws_resources
    from tq_cloud.backends.aws import DynamoDbAdapter, DynamoDbFlowBarrierProvider

    settings = aws_target.settings()
    async with aws_resources(settings) as clients:
        storage = DynamoDbAdapter(clients.dynamodb, settings.tasks_table)
        barriers = DynamoDbFlowBarrierProvider(clients.dynamodb, settings.barriers_table)
        await storage.mark_failed([t("f", ManualClock())], ManualClock().now())
        if scanning:
            async def scan_all(query: TaskQuery) -> Any:
                await clients.dynamodb.scan(TableName=settings.tasks_table)
            monkeypatch.setattr(storage, "list_tasks", scan_all)
        seen = _operations(clients.dynamodb)
        await _list_everything(storage, barriers)
    assert ("Scan" in seen) is scanning
    assert scanning or set(seen) <= {"Query", "BatchGetItem", "GetItem"}


async def test_pages_step_past_any_number_of_rows_sharing_one_time(storage: Any, clock: ManualClock) -> None:
    """One batch's failures share their finish millisecond: a listing still pages through
    every one of them exactly once, whatever the page size."""
    ids = [f"tie{i:02d}" for i in range(23)]
    await storage.mark_failed([typed(i, clock, "q", "t") for i in ids], clock.now())
    for limit in (1, 4, 10):
        pages = await _pages(storage, TaskQuery(status=TaskStatus.FAILED, limit=limit))
        listed = [k for page in pages for k in page]
        assert sorted(listed) == ids and len(listed) == len(set(listed)), f"limit {limit}: {pages}"
        assert all(len(page) == limit for page in pages[:-1])
    filtered = await _pages(storage, TaskQuery(status=TaskStatus.FAILED, type="other", limit=3))
    assert [k for page in filtered for k in page] == []


async def test_flow_pages_step_past_flows_started_at_once(barriers: Any, clock: ManualClock) -> None:
    for i in range(12):
        await barriers.init_barrier(f"same{i}", 2, clock.now())
    listed, cursor = [], None
    while True:
        page = await barriers.list_flows(limit=5, cursor=cursor)
        listed += [f.flow_id for f in page.flows]
        if page.cursor is None:
            break
        cursor = page.cursor
    assert sorted(listed) == sorted(f"same{i}" for i in range(12)) and len(listed) == 12


async def test_the_ties_check_fails_with_a_cursor_of_a_sort_value(aws_target: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The bug put back: each bucket read on from the last sort value, not the last row."""
    from tests.aws_support import aws_resources
    from tq_cloud.backends.aws import DynamoDbAdapter, bucket_pages

    original = bucket_pages.read_page

    async def by_value(*args: Any, **kwargs: Any) -> Any:
        cursor = kwargs.get("cursor")
        if cursor:  # forget each bucket's row: start again at the top of the shared time
            kwargs["cursor"] = bucket_pages.encode_cursor(
                {b: p for b, p in bucket_pages.decode_cursor(cursor).items() if p == bucket_pages.EXHAUSTED})
        return await original(*args, **kwargs)

    monkeypatch.setattr("tq_cloud.backends.aws.dynamodb_tasks.read_page", by_value)
    settings = aws_target.settings()
    async with aws_resources(settings) as clients:
        storage = DynamoDbAdapter(clients.dynamodb, settings.tasks_table, buckets=1)
        clock = ManualClock()
        with pytest.raises(AssertionError, match="limit"):
            await test_pages_step_past_any_number_of_rows_sharing_one_time(storage, clock)
