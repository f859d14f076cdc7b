"""Tasks on the wire: one JSON document per record, defaults left out to keep records small.

Decoding never raises: a record that is not a valid task becomes an `UndecodableRecord`,
which the handler stores as a failed task, so a poison record is visible and never blocks
its shard. Encoding raises `UnserialisableTaskError` naming the task, so a payload that is not
JSON is that task's error, never its batch's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from tq_cloud.domain.limits import MAX_ID_CHARS, RESERVED_ID_PREFIX, describe_validation_error
from tq_cloud.domain.task import ExecutionStats, Task, TaskStatus
from tq_cloud.errors import UnserialisableTaskError
from tq_cloud.ids import derived_id

UNDECODABLE_TYPE = "_tq.undecodable"
UNDECODABLE_QUEUE = "_tq"
_PREVIEW_CHARS = 2000


@dataclass(frozen=True, slots=True)
class UndecodableRecord:
    record_id: str
    error: str
    preview: str

    def as_failed_task(self, now: datetime) -> Task:
        return Task(
            id=derived_id("undecodable", self.record_id), type=UNDECODABLE_TYPE,
            queue_id=UNDECODABLE_QUEUE, payload={"record_id": self.record_id, "data": self.preview},
            status=TaskStatus.FAILED, force_store=True, created_at=now, updated_at=now,
            execution_stats=ExecutionStats(last_error=self.error, last_error_type="UndecodableRecord"),
        )


_ENCODED: ContextVar[dict[int, tuple[Task, bytes]] | None] = ContextVar("tq_cloud_encoded", default=None)
"""The encodings made within `encoding_once()`, by task object (none outside one)."""


@contextmanager
def encoding_once() -> Iterator[None]:
    """Within the block, a task object is encoded once: routing measures a task's size and the
    queue writes its record from the same bytes. Only for the router's own copies of tasks,
    which nothing changes in place while it routes them (a change would make the kept bytes
    stale); the memo ends with the block.

    Example:
        with encoding_once():
            size = len(encode_task(task))       # encodes
            data = encode_task(task)            # the same bytes, not encoded again
    """
    token = _ENCODED.set({})
    try:
        yield
    finally:
        _ENCODED.reset(token)


def encode_task(task: Task) -> bytes:
    memo = _ENCODED.get()
    if memo is not None and (hit := memo.get(id(task))) is not None and hit[0] is task:
        return hit[1]
    try:
        data = task.model_dump_json(exclude_defaults=True, exclude=_pristine(task)).encode()
    except (PydanticSerializationError, TypeError, ValueError) as exc:
        raise UnserialisableTaskError(task.id, str(exc)[:300]) from exc
    if memo is not None:
        memo[id(task)] = (task, data)
    return data


def _pristine(task: Task) -> set[str] | None:
    """The sub-models still as their defaults made them (no field ever set), left out before
    `exclude_defaults` would build a default of each to compare with: half an encoding's time."""
    left = {name for name in ("execution_stats", "metadata") if not getattr(task, name).model_fields_set}
    return left or None


def decode_task(data: bytes, record_id: str) -> Task | UndecodableRecord:
    """A task from a record's bytes. A record whose id is missing, empty or over-long gets one
    derived from the record's own id (its sequence number), so a redelivery of the record
    replays into the same task, never a new one."""
    try:
        task = Task.model_validate_json(data)
    except ValidationError as exc:
        return UndecodableRecord(record_id, f"record is not a valid task: {describe_validation_error(exc)}",
                                 data[:_PREVIEW_CHARS].decode("utf-8", "replace"))
    return _with_usable_id(task, record_id)


def decode_task_object(item: object, record_id: str) -> Task | UndecodableRecord:
    """As `decode_task`, from JSON already parsed (an element of a packed lane message)."""
    try:
        task = Task.model_validate(item)
    except ValidationError as exc:
        return UndecodableRecord(record_id, f"record is not a valid task: {describe_validation_error(exc)}",
                                 json.dumps(item, default=str)[:_PREVIEW_CHARS])
    return _with_usable_id(task, record_id)


def _with_usable_id(task: Task, record_id: str) -> Task:
    return task if usable_id(task.id) else task.model_copy(update={"id": derived_id("record", record_id)})


def usable_id(task_id: str | None) -> bool:
    """1 to MAX_ID_CHARS characters, not in the stores' reserved key space."""
    return bool(task_id) and len(task_id or "") <= MAX_ID_CHARS and not (task_id or "").startswith(RESERVED_ID_PREFIX)
