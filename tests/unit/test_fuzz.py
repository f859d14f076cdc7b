"""Bad input, fuzzed: whatever arrives, the decoder never raises, a batch never crashes, and no
good neighbour record is lost."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tq_cloud import ExecutorActions, Task, TaskStatus
from tq_cloud.core.codec import UndecodableRecord, decode_task, encode_task
from tq_cloud.errors import TqError
from tq_cloud.testing import InMemoryStack

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30)

task_like = st.fixed_dictionaries({}, optional={
    "id": st.one_of(st.text(max_size=10), st.integers(), st.none()),
    "type": st.one_of(st.sampled_from(["t", "unknown", ""]), st.integers()),
    "queue_id": st.one_of(st.just("q"), st.text(max_size=5), st.none()),
    "payload": json_values,
    "execute_at": st.one_of(st.just("2026-01-01T00:00:00Z"), st.just("yesterday"), st.just("2026-01-01T00:00:00"),
                            st.integers()),
    "retries": st.one_of(st.integers(-3, 5), st.text(max_size=3)),
    "metadata": st.one_of(st.just({}), json_values),
    "nonsense": json_values,
})


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=200), task_like.map(lambda d: json.dumps(d).encode())))
def test_the_decoder_never_raises(data: bytes) -> None:
    decoded = decode_task(data, "seq-1")
    assert isinstance(decoded, Task | UndecodableRecord)
    if isinstance(decoded, UndecodableRecord):
        assert decoded.record_id == "seq-1" and decoded.error


def test_deep_nesting_is_an_undecodable_record_not_a_crash() -> None:
    deep = b'{"type": "t", "queue_id": "q", "payload": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert isinstance(decode_task(deep, "deep"), UndecodableRecord | Task)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=60), task_like.map(lambda d: json.dumps(d).encode())), max_size=8),
       st.integers(1, 6))
def test_a_batch_with_garbage_loses_no_good_neighbour(garbage: list[bytes], good_count: int) -> None:
    asyncio.run(_batch_with_garbage(garbage, good_count))


async def _batch_with_garbage(garbage: list[bytes], good_count: int) -> None:
    stack = InMemoryStack.create()
    ran: list[str] = []

    @stack.registry.task("q", "t")
    async def ok(task: Task, actions: ExecutorActions) -> None:
        ran.append(task.key)
        actions.success(task)

    good = [Task(id=f"good-{i}", type="t", queue_id="q", payload={"i": i}) for i in range(good_count)]
    records = [decode_task(encode_task(t), f"g{i}") for i, t in enumerate(good)]
    records += [decode_task(data, f"x{i}") for i, data in enumerate(garbage)]
    report = await stack.handler.process_records(records)
    assert report.not_committed == [] and report.unrecorded == []
    assert {f"good-{i}" for i in range(good_count)} <= set(ran)
    poison = [r for r in records if isinstance(r, UndecodableRecord)]
    failed = [t for t in stack.storage.by_status(TaskStatus.FAILED) if t.type == "_tq.undecodable"]
    assert len(failed) == len({p.record_id for p in poison})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(task_like)
def test_add_tasks_rejects_bad_tasks_with_a_clear_error_or_routes_them(raw: dict[str, Any]) -> None:
    asyncio.run(_add(raw))


async def _add(raw: dict[str, Any]) -> None:
    stack = InMemoryStack.create()
    try:
        task = Task.model_validate(raw)
    except ValidationError as exc:
        assert exc.errors()
        return
    try:
        [routed] = await stack.handler.add_tasks([task], allow_unknown=True)
    except TqError as exc:
        assert str(exc)
        return
    assert routed.id and (stack.queue.depth() == 1 or routed.key in stack.storage.snapshot())


async def test_huge_payload_is_refused_with_the_limit_named() -> None:
    stack = InMemoryStack.create()
    try:
        await stack.handler.add_tasks([Task(id="big", type="t", queue_id="q", payload="x" * 2_000_000)], allow_unknown=True)
    except TqError as exc:
        assert "1048576-byte limit" in str(exc) and "'big'" in str(exc)
    else:
        raise AssertionError("a 2 MB payload was accepted")
