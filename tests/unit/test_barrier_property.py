"""Property: whatever the interleaving, batching and duplication of step completions, a flow
dispatches exactly one join, carrying each step's final result exactly once."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from tq_cloud import ExecutorActions, FlowConfig, JoinTarget, Task
from tq_cloud.testing import InMemoryStack


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[int, str, list[list[int]], bool]:
    n = draw(st.integers(min_value=1, max_value=8))
    policy = draw(st.sampled_from(["continue", "abort"]))
    # each step delivered 1-3 times, in any order, cut into batches of any size
    copies = [i for i in range(n) for _ in range(draw(st.integers(1, 3)))]
    order = draw(st.permutations(copies))
    cuts = sorted(draw(st.sets(st.integers(1, max(len(order) - 1, 1)), max_size=len(order))))
    batches = [list(order[a:b]) for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True) if order[a:b]]
    with_timeout = draw(st.booleans())
    return n, policy, batches, with_timeout


@settings(max_examples=150, deadline=None)
@given(deliveries(), st.sets(st.integers(0, 7)))
def test_exactly_one_join_with_each_final_result_once(
    case: tuple[int, str, list[list[int]], bool], failing: set[int]
) -> None:
    asyncio.run(_scenario(*case, failing))


async def _scenario(n: int, policy: str, batches: list[list[int]], with_timeout: bool, failing: set[int]) -> None:
    stack = InMemoryStack.create()
    joins: list[dict[str, object]] = []

    @stack.registry.task("f", "parent")
    async def parent(task: Task, actions: ExecutorActions) -> None:
        actions.start_flow([{"type": "step", "queue_id": "f", "payload": i} for i in range(n)],
                           FlowConfig(join=JoinTarget(type="join", queue_id="f"), failure_policy=policy,
                                      timeout_ms=1000 if with_timeout else None))  # type: ignore[arg-type]
        actions.success(task)

    @stack.registry.task("f", "step")
    async def step(task: Task, actions: ExecutorActions) -> None:
        if task.payload in failing:
            actions.fail(task, f"e{task.payload}")
        else:
            actions.success(task, task.payload)

    @stack.registry.task("f", "join")
    async def join(task: Task, actions: ExecutorActions) -> None:
        joins.append(task.payload["flow_results"])
        actions.success(task)

    await stack.handler.add_tasks([Task(type="parent", queue_id="f", payload=None)])
    await stack.step("f")
    steps = {t.payload: t for t in await stack.queue.receive("f", 100) if t.type == "step"}
    assert sorted(steps) == list(range(n))
    for index, batch in enumerate(batches):
        if with_timeout and index == len(batches) // 2:
            await stack.clock.advance(1)
            await stack.handler.process_mature_tasks()
            await stack.process_ready()
        await stack.handler.process_batch([steps[i].model_copy(deep=True) for i in batch])
        await stack.process_ready()
    await stack.run_until_idle()

    assert len(joins) == 1
    [results] = joins
    indices = [s["step_index"] for s in results["steps"]]  # type: ignore[index, union-attr]
    assert indices == sorted(set(indices)), "each step at most once, in order"
    for s in results["steps"]:  # type: ignore[union-attr]
        i = s["step_index"]
        assert s["status"] == ("fail" if i in failing else "success")
        assert s["result"] == (None if i in failing else i)
    if not results["aborted"] and not results["timed_out"]:
        assert indices == list(range(n))
    if results["aborted"]:
        assert policy == "abort" and failing & set(indices)
