"""Deduplication (#27, part one): a task's `dedup_key` keeps a second task of the same queue,
type and key from being sent within its executor's `dedup_window`; `add_tasks` and
`handler.send` return the first task for it. In memory and on the AWS backends, through the
storage port and through the handler; shown to fail with the check put back."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.conformance.test_task_control import Engine, engine  # noqa: F401 - the same two engines
from tq_cloud import ExecutorActions, Task
from tq_cloud.clock import ManualClock


async def test_a_scope_is_held_for_its_window(storage: Any, clock: ManualClock) -> None:
    now, window = clock.now(), timedelta(minutes=10)
    assert await storage.claim_dedup("q\x1ft\x1fk", "first", now, window) == "first"
    assert await storage.claim_dedup("q\x1ft\x1fk", "second", now + timedelta(minutes=9), window) == "first"
    assert await storage.claim_dedup("q\x1ft\x1fk", "first", now, window) == "first", "a replay is its own"
    assert await storage.claim_dedup("q\x1ft\x1fother", "second", now, window) == "second"
    later = now + timedelta(minutes=11)
    assert await storage.claim_dedup("q\x1ft\x1fk", "third", later, window) == "third", "the window ended"
    await storage.release_dedup("q\x1ft\x1fk", "someone else")
    assert await storage.claim_dedup("q\x1ft\x1fk", "fourth", later, window) == "third"
    await storage.release_dedup("q\x1ft\x1fk", "third")
    assert await storage.claim_dedup("q\x1ft\x1fk", "fourth", later, window) == "fourth", "released"


async def test_a_duplicate_is_not_sent_and_comes_back_as_the_first(engine: Engine) -> None:  # noqa: F811
    ran: list[Any] = []

    @engine.registry.task("hooks", "order-paid", dedup_window=timedelta(minutes=5))
    async def paid(task: Task, actions: ExecutorActions) -> None:
        ran.append(task.payload)

    first = await engine.handler.send(paid, {"n": 1}, dedup_key="order-7")
    again = await engine.handler.send(paid, {"n": 2}, dedup_key="order-7")
    [twin, other] = await engine.handler.add_tasks([
        Task(type="order-paid", queue_id="hooks", payload={"n": 3}, dedup_key="order-7"),
        Task(type="order-paid", queue_id="hooks", payload={"n": 4}, dedup_key="order-8")])
    plain = await engine.handler.send(paid, {"n": 5})
    assert again.key == first.key == twin.key and other.key != first.key and plain.key != first.key
    await engine.drain()
    assert sorted(p["n"] for p in ran) == [1, 4, 5], "a duplicate ran"
    await engine.later(6 * 60)
    await engine.handler.send(paid, {"n": 6}, dedup_key="order-7")
    await engine.drain()
    assert sorted(p["n"] for p in ran) == [1, 4, 5, 6], "the window ended: the key is free again"


async def test_a_task_without_a_key_costs_no_dedup_write(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    @engine.registry.task("q", "t")
    async def t(task: Task, actions: ExecutorActions) -> None:
        return None

    async def refuse(*args: Any) -> str:
        raise AssertionError("a dedup write for a task without a key")

    monkeypatch.setattr(type(engine.handler.router.storage), "claim_dedup", refuse, raising=False)
    await engine.handler.send(t, {})


async def test_a_key_whose_task_was_not_sent_is_free_for_the_retry() -> None:
    """A send that fails (the queue refused it) releases its key: the producer's retry is sent,
    not taken for a duplicate of a task that never went out."""
    from tq_cloud.errors import QueueWriteError
    from tq_cloud.testing import InMemoryStack

    stack = InMemoryStack.create()
    ran: list[str] = []

    @stack.registry.task("q", "t")
    async def t(task: Task, actions: ExecutorActions) -> None:
        ran.append(task.key)

    publish, broken = stack.queue.publish, [True]

    async def refused(tasks: Any) -> None:
        if broken:
            raise QueueWriteError("throttled", [x.key for x in tasks])
        await publish(tasks)

    stack.queue.publish = refused  # type: ignore[method-assign]
    with pytest.raises(QueueWriteError):
        await stack.handler.send(t, {}, dedup_key="k")
    broken.clear()
    retried = await stack.handler.send(t, {}, dedup_key="k")
    await stack.run_until_idle()
    assert ran == [retried.key], "the retry was taken for a duplicate of a task never sent"


async def test_mutation_without_the_check_a_duplicate_runs(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    async def nothing(self: Any, tasks: Any, now: Any) -> dict[int, Task]:
        return {}

    monkeypatch.setattr("tq_cloud.core.routing.TaskRouter._deduplicated", nothing)
    with pytest.raises(AssertionError):
        await test_a_duplicate_is_not_sent_and_comes_back_as_the_first(engine)



async def test_mutation_a_key_kept_after_a_failed_send_loses_the_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    async def keep(self: Any, tasks: Any) -> None:
        return None

    monkeypatch.setattr("tq_cloud.core.routing.TaskRouter._release_dedup", keep)
    with pytest.raises(AssertionError, match="never sent"):
        await test_a_key_whose_task_was_not_sent_is_free_for_the_retry()
