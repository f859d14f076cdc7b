"""The entity projection port: the latest status of each task, per domain object."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel


class ProjectionStatus(StrEnum):
    SCHEDULED = "scheduled"
    PROCESSING = "processing"
    EXECUTED = "executed"
    FAILED = "failed"

    @property
    def rank(self) -> int:
        """Statuses only move up in rank; executed and failed are both final."""
        return _RANK[self]


_RANK = {ProjectionStatus.SCHEDULED: 0, ProjectionStatus.PROCESSING: 1,
         ProjectionStatus.EXECUTED: 2, ProjectionStatus.FAILED: 2}


class EntityTaskProjection(BaseModel):
    task_id: str
    entity_id: str
    entity_type: str
    task_type: str
    queue_id: str
    status: ProjectionStatus
    payload: Any = None
    error: str | None = None
    result: Any = None
    created_at: datetime
    updated_at: datetime


class EntityProjectionProvider(Protocol):
    async def upsert_projections(self, entries: Sequence[EntityTaskProjection]) -> None:
        """Upsert by task_id, never moving a status to a lower rank (updates can arrive out
        of order under at-least-once delivery)."""
        ...

    async def timeline(self, entity_type: str, entity_id: str, limit: int = 100) -> list[EntityTaskProjection]:
        """The entity's tasks, oldest first, at most `limit` (an index query on DynamoDB)."""
        ...
