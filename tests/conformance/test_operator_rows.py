"""Rows an operator meets that are not plain tasks: one this version cannot decode (a newer
producer in a rolling deploy) and one that keeps a stand-in instead of an oversized payload.
Each is listed as what it is and skipped by re-drive with the reason; both checks are shown to
fail with their bugs put back."""

from __future__ import annotations

from typing import Any

import pytest

from tq_cloud import Task, TaskStatus
from tq_cloud.backends.aws import DynamoDbAdapter
from tq_cloud.backends.aws.dynamo import n, s
from tq_cloud.backends.memory import InMemoryQueue
from tq_cloud.clock import ManualClock
from tq_cloud.core import redrive as redrive_module
from tq_cloud.core.redrive import Redriver
from tq_cloud.ports.storage import TaskQuery

FAILED = TaskQuery(status=TaskStatus.FAILED)


async def test_a_row_with_a_stand_in_payload_is_not_redriven(storage: Any, clock: ManualClock) -> None:
    huge = Task(id="huge", type="t", queue_id="q", payload="x" * (500 * 1024), force_store=True)
    small = Task(id="small", type="t", queue_id="q", payload={}, force_store=True)
    await storage.mark_failed([huge, small], clock.now())
    [row] = await storage.get(["huge"])
    assert row.execution_stats.not_redrivable and "payload" in row.execution_stats.not_redrivable
    report = await Redriver(storage, InMemoryQueue(clock), clock).redrive(["huge", "small", "ghost"])
    assert [t.key for t in report.sent] == ["small"], "a stand-in was sent as the task's payload"
    assert "note instead of the payload" in report.skipped["huge"] and "no stored task" in report.skipped["ghost"]
    again = await Redriver(storage, InMemoryQueue(clock), clock).redrive(["small"])
    assert "processing, not failed" in again.skipped["small"]


async def test_the_stand_in_check_fails_when_redrive_ignores_the_mark(
        storage: Any, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redrive_module, "_skip_reason",
                        lambda row: None if row is not None and row.status.is_terminal else "not final")
    with pytest.raises(AssertionError, match="stand-in was sent"):
        await test_a_row_with_a_stand_in_payload_is_not_redriven(storage, clock)


@pytest.fixture
async def dynamodb(aws_target: Any) -> Any:
    from tests.aws_support import aws_resources

    settings = aws_target.settings()
    async with aws_resources(settings) as clients:
        yield DynamoDbAdapter(clients.dynamodb, settings.tasks_table), clients.dynamodb


async def test_an_undecodable_row_is_listed_as_what_it_is_and_skipped(dynamodb: Any) -> None:
    adapter, client = dynamodb
    clock = ManualClock()
    await adapter.mark_failed([Task(id="ok", type="t", queue_id="q", payload={}, force_store=True)], clock.now())
    await client.put_item(TableName=adapter.table, Item={
        "id": s("newer"), "status": s("failed"), "body": s('{"id": "newer", "kind": "from a newer producer"}'),
        "retry_count": n(2), "deferrals": n(0), "finished_key": s(f"failed#{adapter._bucket('newer')}"),
        "finished_ms": n(int(clock.now().timestamp() * 1000))})
    page = await adapter.list_tasks(FAILED)
    rows = {t.key: t for t in page.tasks}
    assert set(rows) == {"ok", "newer"}
    newer = rows["newer"]
    assert newer.status is TaskStatus.FAILED and newer.retry_count == 2
    assert "cannot decode" in (newer.execution_stats.last_error or "")
    report = await Redriver(adapter, InMemoryQueue(clock), clock).redrive_matching(FAILED)
    assert [t.key for t in report.sent] == ["ok"] and "cannot decode" in report.skipped["newer"]
    [kept] = await adapter.get(["newer"])
    assert kept.status is TaskStatus.FAILED, "the row is left as it is"


async def test_the_undecodable_check_fails_when_listings_decode_strictly(
        dynamodb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DynamoDbAdapter, "_decode_or_stand_in", staticmethod(DynamoDbAdapter._decode))
    with pytest.raises(ValueError):
        await test_an_undecodable_row_is_listed_as_what_it_is_and_skipped(dynamodb)
