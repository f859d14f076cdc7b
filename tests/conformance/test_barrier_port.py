from __future__ import annotations

from typing import Any

from tq_cloud.clock import ManualClock
from tq_cloud.flows.models import FlowStepResult
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
    assert (await barriers.batch_decrement_and_check("nope", [ok(0)])).remaining == -1
    assert await barriers.get_step_results("nope") == []
    assert await barriers.get("nope") is None
    assert not await barriers.close("nope", BarrierState.ABORTED)
    await barriers.init_barrier("f", 1, clock.now())
    await barriers.batch_decrement_and_check("f", [ok(0)])
    await barriers.mark_join_dispatched("f")
    snap = await barriers.get("f")
    assert snap.join_dispatched and snap.started_at == clock.now() and snap.total_steps == 1
    assert (await barriers.batch_decrement_and_check("f", [ok(0)])).join_dispatched
