"""The delay lane's forwarder: every message of a batch ends forwarded, recorded as failed with
its reason, or named for redelivery; never deleted unrecorded. The check is shown to fail with
the bug put back (a partial write's report replacing the undecodable messages' one)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tq_cloud import Task, TaskQueuesManager, TaskStatus
from tq_cloud.aws_lambda import delay_forwarder
from tq_cloud.aws_lambda.delay_forwarder import forward_due
from tq_cloud.core.codec import encode_task
from tq_cloud.errors import QueueWriteError
from tq_cloud.ports.storage import TaskQuery
from tq_cloud.testing import InMemoryStack


def message(message_id: str, body: str) -> dict[str, Any]:
    return {"messageId": message_id, "body": body, "eventSource": "aws:sqs"}


def body(task_id: str, payload: Any = None) -> str:
    return encode_task(Task(id=task_id, type="t", queue_id="q", payload=payload or {})).decode()


class Refusing:
    """Writes every task but those named `unwritten` (throttled) or `rejected` (never writable)."""

    def __init__(self, inner: Any, unwritten: set[str], rejected: set[str], error: Exception | None = None) -> None:
        self.inner, self.unwritten, self.rejected, self.error = inner, unwritten, rejected, error

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    async def publish(self, tasks: list[Task]) -> None:
        if self.error is not None:
            raise self.error
        await self.inner.publish([t for t in tasks if t.key not in self.unwritten | self.rejected])
        if self.unwritten or self.rejected:
            raise QueueWriteError("partial", sorted(self.unwritten), {k: "over the limit" for k in self.rejected})


async def _forward(stack: InMemoryStack, records: list[dict[str, Any]], **refusing: Any) -> list[str]:
    stack.handler.router.queue = Refusing(stack.queue, **refusing)  # type: ignore[assignment]
    return await forward_due(stack.handler, records)


async def test_every_message_is_forwarded_recorded_or_delivered_again() -> None:
    stack = InMemoryStack.create(TaskQueuesManager())
    records = [message("m-ok", body("ok")), message("m-slow", body("slow")), message("m-big", body("big")),
               message("m-junk", "not a task")]
    stack.storage.fail_next_writes = 1  # recording the junk message fails this time
    again = await _forward(stack, records, unwritten={"slow"}, rejected={"big"})
    assert set(again) == {"m-slow", "m-junk"}, "a message was deleted unrecorded"
    [big] = await stack.storage.get(["big"])
    assert big.status is TaskStatus.FAILED and "over the limit" in (big.execution_stats.last_error or "")
    assert [t.key for t in await stack.queue.receive("q", 10)] == ["ok"]


async def test_a_rejected_task_whose_failure_cannot_be_recorded_comes_back() -> None:
    stack = InMemoryStack.create(TaskQueuesManager())
    stack.storage.fail_next_writes = 1
    assert await _forward(stack, [message("m-big", body("big"))], unwritten=set(), rejected={"big"}) == ["m-big"]


async def test_a_write_that_fails_outright_sends_every_message_back() -> None:
    stack = InMemoryStack.create(TaskQueuesManager())
    records = [message("m1", body("a")), message("m2", body("b"))]
    assert await _forward(stack, records, unwritten=set(), rejected=set(), error=TimeoutError()) == ["m1", "m2"]


async def test_the_forwarder_check_fails_when_a_message_is_dropped_unrecorded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def pretend(self: Any, poison: Any) -> None:  # says recorded, writes nothing
        return None

    monkeypatch.setattr("tq_cloud.assembly.handler.TaskHandler.record_undecodable", pretend)
    with pytest.raises(AssertionError, match="deleted unrecorded"):
        await test_every_message_is_forwarded_recorded_or_delivered_again()


async def test_the_rejected_check_fails_when_a_failed_recording_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    async def dropping(handler: Any, tasks: dict[str, list[Task]]) -> set[str]:
        try:
            await handler.router.queue.publish([t for group in tasks.values() for t in group])
        except QueueWriteError as exc:
            return {m for m, group in tasks.items() if any(t.key in set(exc.task_ids) for t in group)}
        return set()

    monkeypatch.setattr(delay_forwarder, "_publish", dropping)
    with pytest.raises(AssertionError):
        await test_a_rejected_task_whose_failure_cannot_be_recorded_comes_back()


def test_bodies_are_json_tasks() -> None:
    assert json.loads(body("x"))["id"] == "x"


def packed(*bodies: str) -> str:
    return "[" + ",".join(bodies) + "]"


async def test_a_packed_message_forwards_its_tasks_and_comes_back_whole_when_one_is_not_written() -> None:
    """Tasks due in the same second share a message: all are forwarded; one not written sends
    the whole message back (its written tasks are forwarded again, as a message delivered twice
    is); one that is not a task is recorded on its own, and the others go on."""
    stack = InMemoryStack.create(TaskQueuesManager())
    records = [message("m-pair", packed(body("a"), body("b"))), message("m-trio", packed(body("c"), body("d"),
                                                                                         body("e"))),
               message("m-mixed", packed(body("f"), '{"type": 5}'))]
    again = await _forward(stack, records, unwritten={"d"}, rejected=set())
    assert again == ["m-trio"], "only the message with a task not written comes back"
    assert sorted(t.key for t in await stack.queue.receive("q", 10)) == ["a", "b", "c", "e", "f"]
    failed = (await stack.storage.list_tasks(TaskQuery(status=TaskStatus.FAILED))).tasks
    assert [t.type for t in failed] == ["_tq.undecodable"], "the part that is not a task, recorded once"


def test_a_packed_body_decodes_into_each_task_and_a_bad_one_into_its_own_failure() -> None:
    from tq_cloud.aws_lambda.delay_forwarder import decode_lane_body
    from tq_cloud.core.codec import UndecodableRecord

    decoded = decode_lane_body(packed(body("a"), '{"type": 5}', body("c")).encode(), "sqs:m1")
    assert [d.key if isinstance(d, Task) else d.record_id for d in decoded] == ["a", "sqs:m1:1", "c"]
    assert isinstance(decoded[1], UndecodableRecord)
    [broken] = decode_lane_body(b"[not json", "sqs:m2")
    assert isinstance(broken, UndecodableRecord) and broken.record_id == "sqs:m2"
    [single] = decode_lane_body(body("z").encode(), "sqs:m3")
    assert isinstance(single, Task) and single.key == "z", "a message of one task is that task's JSON, as before"


async def test_the_packed_check_fails_when_a_packed_message_comes_back_only_for_its_first_task(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Reintroduce the bug a packed message invites: a message sent back only when its first
    task was not written drops the others."""
    async def first_only(handler: Any, tasks: dict[str, list[Task]]) -> set[str]:
        try:
            await handler.router.queue.publish([t for group in tasks.values() for t in group])
        except QueueWriteError as exc:
            return {m for m, group in tasks.items() if group[0].key in set(exc.task_ids)}
        return set()

    monkeypatch.setattr(delay_forwarder, "_publish", first_only)
    with pytest.raises(AssertionError, match="only the message"):
        await test_a_packed_message_forwards_its_tasks_and_comes_back_whole_when_one_is_not_written()
