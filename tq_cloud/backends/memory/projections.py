"""In-process projections, queryable by entity (tests, the demo, a local dashboard)."""

from __future__ import annotations

from collections.abc import Sequence

from tq_cloud.ports.projections import EntityTaskProjection


class InMemoryProjectionProvider:
    """Entity projections in memory.

    Example:
        projections = InMemoryProjectionProvider()
        timeline = await projections.timeline("order", "o-1")
    """
    def __init__(self) -> None:
        self._by_task: dict[str, EntityTaskProjection] = {}
        self.calls = 0
        self.fail_next = 0

    async def upsert_projections(self, entries: Sequence[EntityTaskProjection]) -> None:
        self.calls += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            raise RuntimeError("injected projection failure")
        for entry in entries:
            current = self._by_task.get(entry.task_id)
            if current is None or entry.status.rank > current.status.rank or (
                entry.status == current.status and entry.updated_at >= current.updated_at
            ):
                self._by_task[entry.task_id] = entry.model_copy()

    def get(self, task_id: str) -> EntityTaskProjection | None:
        return self._by_task.get(task_id)

    def for_entity(self, entity_type: str, entity_id: str) -> list[EntityTaskProjection]:
        return sorted((p for p in self._by_task.values()
                       if p.entity_type == entity_type and p.entity_id == entity_id),
                      key=lambda p: (p.created_at, p.task_id))

    async def timeline(self, entity_type: str, entity_id: str, limit: int = 100) -> list[EntityTaskProjection]:
        return self.for_entity(entity_type, entity_id)[:limit]

    def all(self) -> list[EntityTaskProjection]:
        return list(self._by_task.values())
