"""Builds entity projections at each point of a task's life and sends each phase's batch in one
provider call. Projections are advisory: a provider error is logged and processing goes on.
`ProjectionStep` is the commit pipeline's step for terminal projections."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tq_cloud.clock import Clock
from tq_cloud.core.commit import CommitBatch
from tq_cloud.domain.outcomes import Verdict
from tq_cloud.domain.task import FlowMeta, Task, TaskStatus
from tq_cloud.errors import MissingTaskIdError
from tq_cloud.ports.projections import (
    EntityProjectionProvider,
    EntityTaskProjection,
    ProjectionStatus,
)

if TYPE_CHECKING:
    from tq_cloud.domain.flows import StartedFlow
    from tq_cloud.domain.outcomes import Outcome

log = logging.getLogger("tq_cloud.projections")


@dataclass(frozen=True, kw_only=True)
class ProjectionConfig:
    """How entity projections are written (`include_payload`: keep each task's payload on its
    projection, for timelines that show what was asked).

    Example:
        TaskHandler(queue=queue, registry=app, storage=storage, locks=locks, projections=provider,
                    projection_config=ProjectionConfig(include_payload=True))
    """
    include_payload: bool = False


def build_projection(
    task: Task, status: ProjectionStatus, now: Any, *, include_payload: bool = False,
    error: str | None = None, result: Any = None,
) -> EntityTaskProjection | None:
    """None for a task without an entity; MissingTaskIdError for an entity task without an id."""
    if task.entity is None:
        return None
    if task.id is None:
        raise MissingTaskIdError(task.entity.type, task.entity.id)
    payload = task.payload
    if include_payload and hasattr(payload, "model_dump"):
        payload = payload.model_dump(mode="json")
    return EntityTaskProjection(
        task_id=task.id, entity_id=task.entity.id, entity_type=task.entity.type,
        task_type=task.type, queue_id=task.queue_id, status=status,
        payload=payload if include_payload else None, error=error, result=result,
        created_at=task.created_at or now, updated_at=now)


class ProjectionSink:
    def __init__(self, provider: EntityProjectionProvider, clock: Clock,
                 config: ProjectionConfig | None = None) -> None:
        self.provider = provider
        self.clock = clock
        self.config = config or ProjectionConfig()

    def _build(self, tasks: Sequence[Task], status: ProjectionStatus,
               error: Callable[[Task], str | None] | None = None,
               result: Callable[[Task], Any] | None = None) -> list[EntityTaskProjection]:
        now = self.clock.now()
        out = []
        for task in [t for t in tasks if t.entity is not None]:
            try:
                entry = build_projection(
                    task, status, now, include_payload=self.config.include_payload,
                    error=error(task) if error else None, result=result(task) if result else None)
            except MissingTaskIdError:
                log.exception("projection skipped")
                continue
            if entry is not None:
                out.append(entry)
        return out

    async def _send(self, entries: list[EntityTaskProjection], attempts: int = 3) -> None:
        """A few tries (upserts are idempotent), then give up: projections never fail a batch."""
        for attempt in range(1, attempts + 1):
            if not entries:
                return
            try:
                await self.provider.upsert_projections(entries)
                return
            except Exception:
                if attempt == attempts:
                    log.exception("entity projection provider failed for %d entries", len(entries))

    async def scheduled(self, tasks: Sequence[Task]) -> None:
        await self._send(self._build(tasks, ProjectionStatus.SCHEDULED))

    async def processing(self, tasks: Sequence[Task]) -> None:
        await self._send(self._build(tasks, ProjectionStatus.PROCESSING))

    async def terminal(self, succeeded: Sequence[Outcome], failed: Sequence[Outcome],
                       flows: Sequence[StartedFlow], committed_rows: Sequence[Task] = ()) -> None:
        results = {o.key: o.result for o in succeeded}
        errors = {o.key: o.error or "task failed" for o in failed}
        for row in committed_rows:
            if row.status is TaskStatus.EXECUTED:
                results[row.key] = row.execution_result
            else:
                errors[row.key] = row.execution_stats.last_error or row.status.value
        done = [o.task for o in succeeded] + [r for r in committed_rows if r.status is TaskStatus.EXECUTED]
        entries = self._build(done, ProjectionStatus.EXECUTED, result=lambda t: results.get(t.key))
        broken = [o.task for o in failed] + [r for r in committed_rows if r.status is not TaskStatus.EXECUTED]
        entries += self._build(broken, ProjectionStatus.FAILED, error=lambda t: errors.get(t.key))
        now = self.clock.now()
        for flow in flows:
            entity = flow.config.entity
            if entity is not None:
                entries.append(EntityTaskProjection(
                    task_id=flow.flow_id, entity_id=entity.id, entity_type=entity.type,
                    task_type=flow.config.join.type, queue_id=flow.config.join.queue_id,
                    status=ProjectionStatus.PROCESSING, created_at=flow.started_at, updated_at=now))
        await self._send(entries)

    async def flow_final(self, meta: FlowMeta, *, succeeded: bool, result: Any = None,
                         error: str | None = None) -> None:
        if meta.entity is None:
            return
        now = self.clock.now()
        await self._send([EntityTaskProjection(
            task_id=meta.flow_id, entity_id=meta.entity.id, entity_type=meta.entity.type,
            task_type=meta.join.type, queue_id=meta.join.queue_id,
            status=ProjectionStatus.EXECUTED if succeeded else ProjectionStatus.FAILED,
            result=result if succeeded else None, error=None if succeeded else error,
            created_at=meta.started_at or now, updated_at=now)])


class ProjectionStep:
    """Terminal projections of a committed batch, after the store writes (never fails it)."""

    def __init__(self, sink: ProjectionSink) -> None:
        self.sink = sink

    async def __call__(self, batch: CommitBatch) -> None:
        failed = batch.of(Verdict.FAILED, Verdict.DISCARDED, Verdict.CANCELLED)
        await self.sink.terminal(batch.of(Verdict.EXECUTED), failed, batch.flows, batch.committed_rows)
