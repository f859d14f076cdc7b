"""Bad values where they are given: delays and deferrals out of range, ids in the stores'
reserved key space, characters a transport refuses. Each fails only its own task, at the call,
with a clear error; each check is shown to fail with its bug put back."""

from __future__ import annotations

import math
import re
from collections import Counter
from datetime import UTC, datetime

import pytest

from tq_cloud import ExecutorActions, Task, TaskQueuesManager, TaskStatus
from tq_cloud.backends.aws import sqs_delay
from tq_cloud.core import commit
from tq_cloud.core.codec import decode_task, encode_task
from tq_cloud.domain import limits
from tq_cloud.domain.flows import FlowConfig
from tq_cloud.errors import InvalidDelayError, InvalidTaskError
from tq_cloud.testing import InMemoryStack

SQS_ALLOWED = re.compile("^[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*$")


def deferring_app(runs: Counter[str], delays: dict[str, float]) -> TaskQueuesManager:
    app = TaskQueuesManager()

    @app.task("q", "defer", retries=0, store_on_failure=True)
    async def defer(task: Task, actions: ExecutorActions) -> None:
        runs[task.key] += 1
        if runs[task.key] == 1:
            actions.defer(task, delays[task.key])
        else:
            actions.success(task)

    return app


@pytest.mark.parametrize("delay", [1e12, math.inf, math.nan, -5.0])
async def test_an_out_of_range_deferral_fails_only_its_task(delay: float) -> None:
    runs: Counter[str] = Counter()
    stack = InMemoryStack.create(deferring_app(runs, {"bad": delay, "good": 3.0}))
    await stack.handler.add_tasks([Task(id=i, type="defer", queue_id="q", payload={}) for i in ("bad", "good")])
    await stack.run_until_idle()
    assert all(not r.not_committed for r in stack.reports), "no batch went back"
    rows = {r.key: r for r in await stack.storage.get(["bad", "good"])}
    assert rows["bad"].status is TaskStatus.FAILED and "not a delay" in (rows["bad"].execution_stats.last_error or "")
    assert runs == Counter({"bad": 1, "good": 2})


def test_checked_delay_takes_finite_seconds_within_the_limit() -> None:
    assert limits.checked_delay(0, "x") == 0.0 and limits.checked_delay(86400, "x") == 86400.0
    for bad in (math.nan, math.inf, -1, 1e12, True, "5"):
        with pytest.raises(InvalidDelayError, match="finite number of seconds"):
            limits.checked_delay(bad, "defer")  # type: ignore[arg-type]
    assert limits.clamped_delay(math.nan) == 0.0 and limits.clamped_delay(1e12) == limits.MAX_DELAY.total_seconds()
    with pytest.raises(ValueError, match="timeout_ms"):
        FlowConfig.model_validate({"join": {"type": "j", "queue_id": "q"}, "timeout_ms": 10**15})


async def test_the_deferral_check_fails_when_delays_are_not_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tq_cloud.core.actions.checked_delay", lambda seconds, what: seconds)
    monkeypatch.setattr(commit, "clamped_delay", lambda seconds: seconds or 0)
    with pytest.raises((AssertionError, OverflowError, ValueError)):
        await test_an_out_of_range_deferral_fails_only_its_task(1e12)


async def test_a_reserved_id_is_refused_at_the_producer_and_replaced_on_a_record() -> None:
    stack = InMemoryStack.create(TaskQueuesManager())
    with pytest.raises(InvalidTaskError, match="not start with '_tq#'"):
        await stack.handler.add_tasks([Task(id="_tq#meta#buckets", type="t", queue_id="q", payload={})],
                                      allow_unknown=True)
    foreign = Task(id="_tq#meta#buckets", type="t", queue_id="q", payload={})
    decoded = decode_task(encode_task(foreign), "seq-1")
    assert isinstance(decoded, Task) and not decoded.key.startswith("_tq#")


def test_a_delay_lane_body_holds_only_what_sqs_accepts() -> None:
    task = Task(id="x", type="t", queue_id="q", payload={"s": "a\ufffe\uffffb\u00e9\U0001f600\x00"})
    body, _ = sqs_delay.lane_message(task, datetime.now(UTC))
    assert SQS_ALLOWED.match(body.decode()), "SQS would refuse this body"
    decoded = decode_task(body, "m")
    assert isinstance(decoded, Task) and decoded.payload == task.payload


def test_the_sqs_body_check_fails_without_the_escaping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqs_delay, "sqs_safe", lambda body: body)
    with pytest.raises(AssertionError, match="would refuse"):
        test_a_delay_lane_body_holds_only_what_sqs_accepts()


async def test_an_unknown_type_is_refused_at_the_producer_unless_allowed() -> None:
    from tq_cloud.errors import UnknownTaskTypeError

    app = TaskQueuesManager()

    @app.task("email", "send")
    async def send(task: Task, actions: ExecutorActions) -> None:
        actions.success(task)

    stack = InMemoryStack.create(app)
    with pytest.raises(UnknownTaskTypeError, match=r"'sned'.*this queue has send"):
        await stack.handler.add_tasks([Task(id="ok", type="send", queue_id="email", payload={}),
                                       Task(id="typo", type="sned", queue_id="email", payload={})])
    assert await stack.queue.receive("email", 10) == [], "nothing of the call was sent"
    await stack.handler.add_tasks([Task(id="elsewhere", type="other", queue_id="email", payload={})],
                                  allow_unknown=True)
    await stack.run_until_idle()
    [row] = await stack.storage.get(["elsewhere"])
    assert row.status is TaskStatus.IGNORED


async def test_the_unknown_type_check_fails_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from tq_cloud.core.routing import TaskRouter

    monkeypatch.setattr(TaskRouter, "check_known", lambda self, task: None)
    with pytest.raises(pytest.fail.Exception):
        await test_an_unknown_type_is_refused_at_the_producer_unless_allowed()


def test_an_entity_key_past_the_index_limit_is_refused_where_it_is_made() -> None:
    from pydantic import ValidationError

    from tq_cloud import EntityRef
    from tq_cloud.domain.task import MAX_ENTITY_KEY_BYTES

    with pytest.raises(ValidationError, match="limit of the index"):
        Task(id="t", type="t", queue_id="q", payload={}, entity={"type": "user", "id": "é" * 600})
    fits = EntityRef(type="user", id="x" * (MAX_ENTITY_KEY_BYTES - 20))
    assert len(fits.id) > 1000


def test_the_reserved_id_check_fails_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from tq_cloud.core import codec

    monkeypatch.setattr(codec, "RESERVED_ID_PREFIX", "\x00never")
    with pytest.raises((pytest.fail.Exception, AssertionError)):
        asyncio.run(test_a_reserved_id_is_refused_at_the_producer_and_replaced_on_a_record())
