"""Tasks on the wire: one JSON document per record, defaults left out to keep records small.

Decoding never raises: a record that is not a valid task becomes an `UndecodableRecord`,
which the handler stores as a failed task, so a poison record is visible and never blocks
its shard."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from tq_cloud.core.models import ExecutionStats, Task, TaskStatus
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


def encode_task(task: Task) -> bytes:
    return task.model_dump_json(exclude_defaults=True).encode()


def decode_task(data: bytes, record_id: str) -> Task | UndecodableRecord:
    try:
        return Task.model_validate_json(data)
    except ValidationError as exc:
        return UndecodableRecord(record_id, f"record is not a valid task: {exc}",
                                 data[:_PREVIEW_CHARS].decode("utf-8", "replace"))
