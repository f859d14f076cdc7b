from __future__ import annotations

from typing import Any

import pytest

from tq_cloud.clock import ManualClock
from tq_cloud.domain.flows import FlowStepResult
from tq_cloud.local.view import scan_all
from tq_cloud.ports.barrier import BarrierState


def ok(i: int) -> FlowStepResult:
    return FlowStepResult(step_index=i, status="success", result=i)


def bad(i: int) -> FlowStepResult:
    return FlowStepResult(step_index=i, status="fail", error=f"e{i}")


async def test_decrement_counts_each_step_once(barriers: Any, clock: ManualClock) -> None:
    await barriers.init_barrier("f", 3, clock.now())
    await barriers.init_barrier("f", 99, clock.now())
    assert (await barriers.batch_decrement_and_check("f", [ok(0), ok(0)])).remaining == 2
    assert (await barriers.batch_decrement_and_check("f", [ok(0)])).remaining == 2
    r = await barriers.batch_decrement_and_check("f", [ok(1), ok(2)])
    assert (r.remaining, r.state, r.closed) == (0, BarrierState.COMPLETE, True)
    late = await barriers.batch_decrement_and_check("f", [ok(2)])
    assert (late.remaining, late.closed, late.join_dispatched) == (-1, False, False)
    assert [s.step_index for s in await barriers.get_step_results("f")] == [0, 1, 2]


async def test_a_steps_trace_is_kept_with_its_result(barriers: Any, clock: ManualClock) -> None:
    """The traceparent of a step's run comes back with its result: what a join's span links."""
    traced = FlowStepResult(step_index=0, status="success", result=1,
                            trace="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    await barriers.init_barrier("f", 2, clock.now())
    await barriers.batch_decrement_and_check("f", [traced, ok(1)])
    assert [r.trace for r in await barriers.get_step_results("f")] == [traced.trace, None]


async def test_first_write_wins(barriers: Any, clock: ManualClock) -> None:
    await barriers.init_barrier("f", 2, clock.now())
    await barriers.batch_decrement_and_check("f", [ok(0)])
    await barriers.batch_decrement_and_check("f", [bad(0)])
    [first] = await barriers.get_step_results("f")
    assert first.status == "success"


async def test_close_once_and_abort_on_failure(barriers: Any, clock: ManualClock) -> None:
    await barriers.init_barrier("a", 3, clock.now())
    r = await barriers.batch_decrement_and_check("a", [ok(0), bad(1)], abort_on_failure=True)
    assert (r.remaining, r.state, r.closed) == (1, BarrierState.ABORTED, True)
    assert [s.step_index for s in await barriers.get_step_results("a")] == [0, 1]
    assert not await barriers.close("a", BarrierState.TIMED_OUT)
    assert (await barriers.batch_decrement_and_check("a", [ok(2)])).remaining == -1
    await barriers.init_barrier("t", 2, clock.now())
    assert await barriers.close("t", BarrierState.TIMED_OUT)
    assert not await barriers.close("t", BarrierState.ABORTED)


async def test_join_dispatch_flag_and_unknown_flows(barriers: Any, clock: ManualClock) -> None:
    assert await barriers.get_step_results("nope") == []
    assert await barriers.step_results_page("nope") == []
    assert (await barriers.batch_decrement_and_check("nope", [ok(0)])).remaining == -1
    assert await barriers.get("nope") is None
    assert not await barriers.close("nope", BarrierState.ABORTED)
    await barriers.init_barrier("f", 1, clock.now())
    await barriers.batch_decrement_and_check("f", [ok(0)])
    await barriers.mark_join_dispatched("f")
    snap = await barriers.get("f")
    assert snap.join_dispatched and snap.started_at == clock.now() and snap.total_steps == 1
    assert (await barriers.batch_decrement_and_check("f", [ok(0)])).join_dispatched


async def test_a_large_flow_counts_each_step_once_whatever_the_order(barriers: Any, clock: ManualClock) -> None:
    """250 steps over three shards of the DynamoDB barrier, reported in a shuffled order, in
    batches that repeat steps: exactly the report with the last new step closes the flow."""
    import random

    await barriers.init_barrier("big", 250, clock.now())
    order = list(range(250))
    random.Random(7).shuffle(order)
    closes = []
    for start in range(0, 250, 20):
        batch = [ok(i) for i in order[start:start + 20]] + [ok(i) for i in order[max(start - 5, 0):start]]
        outcome = await barriers.batch_decrement_and_check("big", batch)
        closes.append(outcome.closed)
        assert outcome.remaining > 0 or start + 20 >= 250
    assert closes == [False] * 12 + [True]
    assert (await barriers.get("big")).state is BarrierState.COMPLETE
    assert (await barriers.step_counts("big")).succeeded == 250


async def test_results_are_read_a_page_at_a_time(barriers: Any, clock: ManualClock) -> None:
    await barriers.init_barrier("p", 250, clock.now())
    await barriers.batch_decrement_and_check("p", [ok(i) for i in range(0, 250, 2)])
    first = await barriers.step_results_page("p", -1, 50)
    assert [r.step_index for r in first] == list(range(0, 100, 2))
    rest = await barriers.step_results_page("p", first[-1].step_index, 1000)
    assert [r.step_index for r in rest] == list(range(100, 250, 2)) and rest[0].result == 100
    assert await barriers.step_results_page("p", 248) == []


async def test_a_replayed_failure_still_aborts(barriers: Any, clock: ManualClock) -> None:
    """A crash between recording a failure and closing the flow: the replay of the same report
    finds the failure recorded (first write wins, even if the replay's own result differs)
    and closes the flow."""
    await barriers.init_barrier("r", 3, clock.now())
    assert not (await barriers.batch_decrement_and_check("r", [bad(1)])).closed  # recorded; the closer died
    replay = await barriers.batch_decrement_and_check("r", [ok(1)], abort_steps={1})
    assert (replay.state, replay.closed) == (BarrierState.ABORTED, True)


async def test_counts_by_status(barriers: Any, clock: ManualClock) -> None:
    await barriers.init_barrier("c", 4, clock.now())
    ignored = FlowStepResult(step_index=3, status="ignored", error="not needed")
    outcome = await barriers.batch_decrement_and_check("c", [ok(0), ok(1), bad(2), ignored])
    assert outcome.closed and outcome.state is BarrierState.COMPLETE
    counts = await barriers.step_counts("c")
    assert (counts.succeeded, counts.failed, counts.ignored) == (2, 1, 1)


async def test_concurrent_reports_of_one_flow_close_it_once(barriers: Any, clock: ManualClock) -> None:
    """Twelve workers report overlapping batches of one flow at once: none is refused for
    contention, every step counts once, and exactly one report closes the flow."""
    import asyncio

    await barriers.init_barrier("hot", 300, clock.now())

    async def worker(w: int) -> list[bool]:
        closed = []
        for start in range(w * 25, w * 25 + 50, 10):  # each batch overlaps the next worker's
            outcome = await barriers.batch_decrement_and_check("hot", [ok(i % 300) for i in range(start, start + 10)])
            closed.append(outcome.closed)
        return closed

    closed = [c for run in await asyncio.gather(*(worker(w) for w in range(12))) for c in run]
    assert closed.count(True) == 1
    assert (await barriers.step_counts("hot")).succeeded == 300


async def test_a_flow_without_a_deadline_keeps_its_items_while_active(aws_target: Any) -> None:
    """Its counters and results never expire while it runs, however long (as its meta item);
    after its close `retire` dates them all, and a step reported later dates itself."""
    from datetime import UTC, datetime

    from tests.aws_support import aws_resources
    from tq_cloud.backends.aws import DynamoDbFlowBarrierProvider
    from tq_cloud.domain.flows import FlowStepResult
    from tq_cloud.ports.barrier import BarrierState

    settings = aws_target.settings()
    async with aws_resources(settings) as clients:
        barriers = DynamoDbFlowBarrierProvider(clients.dynamodb, settings.barriers_table)
        await barriers.init_barrier("open", 250, datetime.now(UTC), deadline=None)
        for i in range(0, 240, 2):  # 120 reports of two steps: 120 pack items
            done = [FlowStepResult(step_index=j, status="success", result=j) for j in (i, i + 1)]
            await barriers.batch_decrement_and_check("open", done, keep_until=None)
        items = await scan_all(clients.dynamodb, settings.barriers_table)
        assert items and not [i["sk"]["S"] for i in items if "expires_at" in i], "an item of a live flow expires"
        assert await barriers.close("open", BarrierState.ABORTED)
        after, pages = -1, 0
        while (after := await barriers.retire("open", after, limit=100)) is not None:
            pages += 1
            assert pages < 10
        late = [FlowStepResult(step_index=245, status="success", result=245)]
        await barriers.batch_decrement_and_check("open", late, keep_until=None)
        items = await scan_all(clients.dynamodb, settings.barriers_table)
        assert pages == 1, "120 packs: a page of 100, then the rest"
        assert all("expires_at" in i for i in items), [i["sk"]["S"] for i in items if "expires_at" not in i]


async def test_the_lifetime_check_fails_when_items_expire_from_the_start(aws_target: Any,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from tq_cloud.backends.aws import DynamoDbFlowBarrierProvider

    monkeypatch.setattr(DynamoDbFlowBarrierProvider, "_kept",
                        lambda self, keep_until: {"expires_at": self._expiry(keep_until)})
    with pytest.raises(AssertionError, match="of a live flow expires"):
        await test_a_flow_without_a_deadline_keeps_its_items_while_active(aws_target)


async def test_a_flow_started_before_packs_goes_on_as_it_began(aws_target: Any) -> None:
    """Shard items written by the version before packs (no `packed`): reports after a deploy
    record a step item per step and count statuses in number sets, as that flow began; the
    counts, the first result of a step reported twice and `retire` hold; no pack is left to
    live for ever."""
    from datetime import UTC, datetime

    from tests.aws_support import aws_resources
    from tq_cloud.backends.aws import DynamoDbFlowBarrierProvider
    from tq_cloud.domain.flows import StepCounts

    settings = aws_target.settings()
    async with aws_resources(settings) as clients:
        ddb, table = clients.dynamodb, settings.barriers_table
        barriers = DynamoDbFlowBarrierProvider(ddb, table)
        await barriers.init_barrier("old", 3, datetime.now(UTC), deadline=None)
        await ddb.update_item(TableName=table, Key={"pk": {"S": "flow#old"}, "sk": {"S": "count#00000"}},
                              UpdateExpression="REMOVE packed")
        assert (await barriers.batch_decrement_and_check("old", [ok(0), bad(1)])).remaining == 1
        closing = await barriers.batch_decrement_and_check("old", [bad(0), FlowStepResult(step_index=2, status="ignored")])
        assert closing.closed and closing.state is BarrierState.COMPLETE
        assert await barriers.step_counts("old") == StepCounts(succeeded=1, failed=1, ignored=1)
        assert [(r.step_index, r.status) for r in await barriers.get_step_results("old")] == [
            (0, "success"), (1, "fail"), (2, "ignored")], "step 0 keeps its first report"
        items = await scan_all(ddb, table)
        assert sorted(i["sk"]["S"] for i in items if i["sk"]["S"].startswith("step#")) == [
            "step#0000000", "step#0000001", "step#0000002"]
        assert all("expires_at" in i for i in items if i["sk"]["S"].startswith("pack#"))
        assert await barriers.retire("old") is None
        assert all("expires_at" in i for i in await scan_all(ddb, table))


async def test_a_step_reported_again_with_another_status_counts_as_its_first(barriers: Any, clock: ManualClock) -> None:
    from tq_cloud.domain.flows import StepCounts

    await barriers.init_barrier("f", 2, clock.now())
    await barriers.batch_decrement_and_check("f", [bad(0)])
    closing = await barriers.batch_decrement_and_check("f", [ok(0), ok(1)])
    assert closing.closed and await barriers.step_counts("f") == StepCounts(succeeded=1, failed=1)
    assert [(r.step_index, r.status) for r in await barriers.get_step_results("f")] == [(0, "fail"), (1, "success")]


async def test_the_first_report_check_fails_when_a_later_report_overwrites(aws_target: Any) -> None:
    """A mutation: each report's `o<index>` set unconditionally (last write wins)."""
    import re

    from tests.aws_support import aws_resources
    from tq_cloud.backends.aws import DynamoDbFlowBarrierProvider

    def last_wins(params: dict[str, Any], **_: Any) -> None:
        params["UpdateExpression"] = re.sub(r"if_not_exists\((#o\d+), (:o\d+)\)", r"\2", params["UpdateExpression"])

    settings = aws_target.settings()
    async with aws_resources(settings) as clients:
        clients.dynamodb.meta.events.register("before-parameter-build.dynamodb.UpdateItem", last_wins)
        barriers = DynamoDbFlowBarrierProvider(clients.dynamodb, settings.barriers_table)
        with pytest.raises(AssertionError):
            await test_a_step_reported_again_with_another_status_counts_as_its_first(barriers, ManualClock())
