from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from tq_cloud import Task, TaskStatus
from tq_cloud.clock import ManualClock
from tq_cloud.domain.task import ExecutionStats
from tq_cloud.errors import PayloadTooLargeError
from tq_cloud.ports.storage import TaskQuery


def t(id_: str, clock: ManualClock, *, at: float = 0, status: TaskStatus = TaskStatus.SCHEDULED,
      retry: int = 0, **kw: Any) -> Task:
    now = clock.now()
    return Task(id=id_, type="t", queue_id="q", payload={"id": id_}, status=status, force_store=True,
                execute_at=now + timedelta(seconds=at), created_at=now, updated_at=now,
                processing_started_at=now if status is TaskStatus.PROCESSING else None,
                execution_stats=ExecutionStats(retry_count=retry), **kw)


async def test_insert_is_set_if_absent(storage: Any, clock: ManualClock) -> None:
    first = await storage.insert([t("a", clock), t("b", clock)])
    again = await storage.insert([t("a", clock, at=99), t("c", clock)])
    assert [x.id for x in first] == ["a", "b"] and [x.id for x in again] == ["c"]
    [a] = await storage.get(["a"])
    assert a.execute_at == clock.now()


async def test_rows_are_copies(storage: Any, clock: ManualClock) -> None:
    task = t("a", clock)
    await storage.insert([task])
    task.payload["id"] = "mutated"
    [row] = await storage.get(["a"])
    assert row.payload == {"id": "a"}


async def test_claim_mature_claims_each_due_task_once(storage: Any, clock: ManualClock) -> None:
    await storage.insert([t(f"d{i}", clock) for i in range(5)] + [t("later", clock, at=60)])
    claims = await asyncio.gather(*(storage.claim_mature(clock.now(), 3) for _ in range(4)))
    claimed = [x.id for batch in claims for x in batch]
    assert sorted(claimed) == [f"d{i}" for i in range(5)]
    rows = {r.id: r for r in await storage.get(["d0", "later"])}
    assert rows["d0"].status is TaskStatus.PROCESSING and rows["later"].status is TaskStatus.SCHEDULED


async def test_a_task_due_later_in_the_same_millisecond_is_not_claimed_yet(storage: Any, clock: ManualClock) -> None:
    """The due index sorts by milliseconds: a row due 0.4 ms after the sweep's now would reach a
    worker early (and, on a manual clock, hold it for ever), so its milliseconds round up."""
    await storage.insert([t("soon", clock, at=0.0004), t("now", clock)])
    assert [x.id for x in await storage.claim_mature(clock.now(), 10)] == ["now"]
    assert [x.id for x in await storage.claim_mature(clock.now() + timedelta(milliseconds=1), 10)] == ["soon"]


async def test_terminal_transitions_happen_once(storage: Any, clock: ManualClock) -> None:
    await storage.insert([t("a", clock, status=TaskStatus.PROCESSING)])
    done = t("a", clock, execution_result={"r": 1})
    await storage.mark_executed([done], clock.now())
    await storage.mark_failed([t("a", clock)], clock.now())
    await storage.schedule_retry([t("a", clock, retry=1)])
    [row] = await storage.get(["a"])
    assert row.status is TaskStatus.EXECUTED and row.execution_result == {"r": 1}


async def test_mark_executed_never_creates_rows(storage: Any, clock: ManualClock) -> None:
    await storage.mark_executed([t("ghost", clock)], clock.now())
    assert await storage.get(["ghost"]) == []


async def test_mark_failed_and_ignored_upsert(storage: Any, clock: ManualClock) -> None:
    await storage.mark_failed([t("f", clock)], clock.now())
    await storage.mark_ignored([t("i", clock)], "no executor", clock.now())
    rows = {r.id: r for r in await storage.get(["f", "i"])}
    assert rows["f"].status is TaskStatus.FAILED and rows["f"].execution_stats.failed_at == clock.now()
    assert rows["i"].status is TaskStatus.IGNORED and rows["i"].execution_stats.ignored_reason == "no executor"


async def test_schedule_retry_only_moves_forward(storage: Any, clock: ManualClock) -> None:
    await storage.insert([t("a", clock, status=TaskStatus.PROCESSING)])
    assert [x.id for x in await storage.schedule_retry([t("a", clock, at=2, retry=1)])] == ["a"]
    assert await storage.schedule_retry([t("a", clock, at=5, retry=1)]) == [], "a replay"
    assert await storage.schedule_retry([t("a", clock, at=5, retry=0)]) == []
    [row] = await storage.get(["a"])
    assert row.retry_count == 1 and row.execute_at == clock.now() + timedelta(seconds=2)
    deferred = t("a", clock, at=30, retry=1)
    deferred.execution_stats.deferrals = 1
    assert len(await storage.schedule_retry([deferred])) == 1
    assert len(await storage.schedule_retry([t("new", clock, retry=1)])) == 1, "creates unstored tasks"


async def test_reset_and_stale_recovery(storage: Any, clock: ManualClock) -> None:
    a = t("a", clock, status=TaskStatus.PROCESSING)
    await storage.insert([a, t("b", clock, status=TaskStatus.PROCESSING)])
    await storage.reset_to_scheduled([a])
    clock._now += timedelta(minutes=10)
    assert await storage.recover_stale(clock.now() - timedelta(minutes=20), clock.now()) == 0
    assert await storage.recover_stale(clock.now() - timedelta(minutes=5), clock.now()) == 1
    rows = await storage.get(["a", "b"])
    assert {r.status for r in rows} == {TaskStatus.SCHEDULED}


async def test_an_unstamped_row_is_stamped_by_the_sweeper_then_recovered(storage: Any, clock: ManualClock) -> None:
    """A row stored as it is sent carries no producer time: the first sweep that sees it stamps
    it with the sweeper's clock, and recovery counts from that stamp."""
    from tq_cloud.ports.storage import NOT_STAMPED

    row = t("u", clock, status=TaskStatus.PROCESSING).model_copy(update={"processing_started_at": NOT_STAMPED})
    await storage.insert([row])
    now = clock.now()
    assert await storage.recover_stale(now - timedelta(minutes=30), now) == 0
    [stamped] = await storage.get(["u"])
    assert stamped.status is TaskStatus.PROCESSING and stamped.processing_started_at == now
    later = now + timedelta(minutes=31)
    assert await storage.recover_stale(later - timedelta(minutes=30), later) == 1
    [recovered] = await storage.get(["u"])
    assert recovered.status is TaskStatus.SCHEDULED


async def test_items_over_the_limit_are_rejected(storage: Any, clock: ManualClock) -> None:
    big = t("big", clock)
    big.payload = {"x": "y" * storage.max_item_bytes}
    with pytest.raises(PayloadTooLargeError, match="big"):
        await storage.insert([big])
    assert await storage.get(["big"]) == []


async def test_a_failure_row_is_always_written_bounded(storage: Any, clock: ManualClock) -> None:
    from tq_cloud.domain.limits import MAX_ERROR_CHARS

    huge = Task(id="huge", type="t", queue_id="q", payload="x" * (500 * 1024), force_store=True,
                execution_stats=ExecutionStats(last_error="e" * 100_000, details={"k": "v"}))
    await storage.mark_failed([huge], clock.now())
    [row] = await storage.get(["huge"])
    assert row.status is TaskStatus.FAILED and len(row.execution_stats.last_error or "") <= MAX_ERROR_CHARS
    assert "payload not kept" in str(row.payload)


async def test_run_leases_are_exclusive_until_they_expire(storage: Any, clock: ManualClock) -> None:
    now = clock.now()
    task = Task(id="l", type="t", queue_id="q", payload={}, force_store=True)
    await storage.insert([task.model_copy(update={"status": TaskStatus.PROCESSING,
                                                  "processing_started_at": now - timedelta(hours=2)})])
    expired = now - timedelta(minutes=30)
    assert await storage.take_leases([task], "a", now, expired) == {"l"}
    [leased] = await storage.get(["l"])
    assert leased.processing_started_at == now, "stale recovery counts from the start of the run"
    assert await storage.recover_stale(now - timedelta(minutes=30), now) == 0, "a queued hour is not a stale run"
    assert await storage.take_leases([task], "b", now, expired) == set(), "another live run holds it"
    assert await storage.take_leases([task], "a", now, expired) == {"l"}, "the owner's retry keeps it"
    later = now + timedelta(minutes=31)
    assert await storage.take_leases([task], "b", later, later - timedelta(minutes=30)) == {"l"}, "expired"
    retry = task.model_copy(update={"execution_stats": task.execution_stats.model_copy(update={"retry_count": 1})})
    assert await storage.take_leases([retry], "c", later, later - timedelta(minutes=30)) == set(), "another attempt"
    await storage.mark_executed([task], later)
    assert await storage.take_leases([task], "c", later, later) == set(), "final"


async def test_a_lease_moves_a_reset_row_back_to_processing(storage: Any, clock: ManualClock) -> None:
    task = Task(id="r", type="t", queue_id="q", payload={}, force_store=True, execute_at=clock.now())
    await storage.insert([task.model_copy(update={"status": TaskStatus.PROCESSING, "processing_started_at": clock.now()})])
    await storage.reset_to_scheduled([task])
    assert await storage.take_leases([task], "a", clock.now(), clock.now()) == {"r"}
    assert await storage.claim_mature(clock.now(), 10) == [], "the sweeper will not send it again"


async def test_a_reset_never_touches_a_later_attempt(storage: Any, clock: ManualClock) -> None:
    first = t("x", clock, status=TaskStatus.PROCESSING)
    await storage.insert([first])
    later = first.model_copy(update={"execution_stats": first.execution_stats.model_copy(update={"retry_count": 1})})
    assert await storage.schedule_retry([later]) == [later]  # the next attempt, written (and sent) meanwhile
    await storage.reset_to_scheduled([first])  # a late reset of the first attempt's failed send
    [row] = await storage.get(["x"])
    assert row.status is TaskStatus.PROCESSING and row.retry_count == 1, "the later attempt is not sent twice"


async def test_an_outcome_never_lands_over_a_later_attempt(storage: Any, clock: ManualClock) -> None:
    await storage.insert([t("a", clock, status=TaskStatus.PROCESSING)])
    assert len(await storage.schedule_retry([t("a", clock, retry=1)])) == 1  # a retry or a re-drive since
    await storage.mark_executed([t("a", clock, execution_result="stale")], clock.now())
    await storage.mark_failed([t("a", clock)], clock.now())
    await storage.mark_ignored([t("a", clock)], "stale", clock.now())
    await storage.keep_history([t("a", clock)], clock.now())
    [row] = await storage.get(["a"])
    assert row.status is TaskStatus.SCHEDULED and row.retry_count == 1
    deferred = t("a", clock, retry=1)
    deferred.execution_stats.deferrals = 1
    assert len(await storage.schedule_retry([deferred])) == 1
    await storage.mark_executed([t("a", clock, retry=1, execution_result="r")], clock.now())
    [row] = await storage.get(["a"])
    assert row.status is TaskStatus.EXECUTED and row.execution_result == "r", "a deferral is not a later attempt"


async def test_a_reset_never_wipes_a_live_lease(storage: Any, clock: ManualClock) -> None:
    now = clock.now()
    task = t("l", clock, status=TaskStatus.PROCESSING)
    await storage.insert([task])
    assert await storage.take_leases([task], "a", now, now - timedelta(minutes=30)) == {"l"}
    await storage.reset_to_scheduled([task])  # the sender lost the answer of a write that went through
    [row] = await storage.get(["l"])
    assert row.status is TaskStatus.PROCESSING
    assert await storage.take_leases([task], "b", now, now - timedelta(minutes=30)) == set()
    assert await storage.claim_mature(now + timedelta(hours=1), 10) == []


async def test_a_lease_ends_at_its_deadline_or_when_released(storage: Any, clock: ManualClock) -> None:
    now = clock.now()
    task = t("e", clock, status=TaskStatus.PROCESSING)
    await storage.insert([task])
    stale = now - timedelta(minutes=30)
    assert await storage.take_leases([task], "a", now, stale, now + timedelta(minutes=1)) == {"e"}
    [row] = await storage.get(["e"])
    assert row.lease_until == now + timedelta(minutes=1)
    assert await storage.take_leases([task], "b", now + timedelta(seconds=59), stale) == set(), "live"
    later = now + timedelta(seconds=61)
    assert await storage.take_leases([task], "b", later, stale, later + timedelta(minutes=1)) == {"e"}, "ended"
    await storage.release_leases([task], "a")  # not the holder: nothing changes
    assert await storage.take_leases([task], "c", later, stale) == set()
    await storage.release_leases([task], "b")
    assert await storage.take_leases([task], "c", later, stale) == {"e"}, "released"
    await storage.release_leases([t("nobody", clock)], "c")
    assert await storage.get(["nobody"]) == []


async def test_cancel_progress_and_kept_results_behave_alike(storage: Any, clock: ManualClock) -> None:
    """The task-control part of the port: a waiting row is cancelled (with its reason and the
    call's id), a leased one keeps the request (which refuses any new lease), a final or missing
    one is left alone; progress lands only under the holder's lease and tells of a request; an
    executed row is kept as long as asked."""
    from tq_cloud.domain.task import TaskProgress
    from tq_cloud.ports.storage import CancelOutcome

    now = clock.now()
    await storage.insert([t("wait", clock, at=60), t("run", clock, status=TaskStatus.PROCESSING),
                          t("done", clock, status=TaskStatus.PROCESSING)])
    assert await storage.take_leases([t("run", clock), t("done", clock)], "me", now, now - timedelta(minutes=5),
                                     now + timedelta(minutes=1)) == {"run", "done"}
    progress = TaskProgress(done=0.25, note="a quarter", at=now)
    assert await storage.record_progress(t("run", clock), "me", progress) is False
    assert await storage.record_progress(t("run", clock), "someone else", progress) is False
    await storage.mark_executed([t("done", clock).model_copy(update={"execution_result": {"n": 1}})], now,
                                keep_for=timedelta(hours=2))
    assert await storage.cancel("wait", "not needed", now, "call-1") is CancelOutcome.CANCELLED
    assert await storage.cancel("run", "stop", now) is CancelOutcome.REQUESTED
    assert await storage.cancel("done", "late", now) is CancelOutcome.FINISHED
    assert await storage.cancel("ghost", "?", now) is CancelOutcome.UNKNOWN
    assert await storage.cancel("wait", "again", now) is CancelOutcome.FINISHED
    assert await storage.cancel_requests(["wait", "run", "done", "ghost"]) == {"run": "stop"}
    assert await storage.record_progress(t("run", clock), "me", progress) is True, "progress hides the request"
    rows = {r.key: r for r in await storage.get(["wait", "run", "done"])}
    assert rows["wait"].status is TaskStatus.CANCELLED
    assert (rows["wait"].execution_stats.cancel_reason, rows["wait"].execution_stats.cancel_id) == (
        "not needed", "call-1")
    assert rows["run"].status is TaskStatus.PROCESSING and rows["run"].cancel_requested == "stop"
    assert rows["run"].progress == progress
    assert rows["done"].execution_result == {"n": 1} and rows["done"].expires_at is not None
    assert timedelta(hours=2) - timedelta(seconds=1) <= rows["done"].expires_at - now <= timedelta(hours=2)
    later = now + timedelta(minutes=2)  # the lease has ended: a new run may not take it, the request stands
    assert await storage.take_leases([t("run", clock)], "next", later, later - timedelta(minutes=5)) == set()
    listed = await storage.list_tasks(TaskQuery(status=TaskStatus.CANCELLED))
    assert [r.key for r in listed.tasks] == ["wait"]


async def test_marks_are_kept_apart_from_tasks(storage: Any, clock: ManualClock) -> None:
    """Marks (a schedule's pause state) are set, replaced and removed by key, and never show as
    tasks: not in `get`, not in a listing."""
    await storage.set_mark("schedule:a", '{"x": 1}')
    await storage.set_mark("schedule:b", "two")
    await storage.set_mark("schedule:a", "one")
    assert await storage.get_marks(["schedule:a", "schedule:b", "schedule:c"]) == {"schedule:a": "one",
                                                                                   "schedule:b": "two"}
    await storage.set_mark("schedule:b", None)
    assert await storage.get_marks(["schedule:b"]) == {} and await storage.get_marks([]) == {}
    assert await storage.get(["schedule:a"]) == []
    for status in TaskStatus:
        assert (await storage.list_tasks(TaskQuery(status=status))).tasks == []


@pytest.mark.parametrize("storage", ["dynamodb"], indirect=True)
async def test_the_same_millisecond_check_fails_with_milliseconds_rounded_down(
        storage: Any, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    import tq_cloud.backends.aws.dynamodb_tasks as tasks_module
    from tq_cloud.backends.aws.dynamo import ms

    monkeypatch.setattr(tasks_module, "due_ms", ms)
    await storage.insert([t("soon", clock, at=0.0004)])
    assert [x.id for x in await storage.claim_mature(clock.now(), 10)] == ["soon"], "claimed before it is due"
