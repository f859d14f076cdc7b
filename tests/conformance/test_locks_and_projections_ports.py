from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tq_cloud.clock import ManualClock
from tq_cloud.ports.projections import EntityTaskProjection, ProjectionStatus


async def test_locks_are_exclusive_until_released_or_expired(locks: Any, clock: ManualClock) -> None:
    ttl = timedelta(seconds=30)
    assert await locks.acquire(["a", "b"], "w1", ttl) == {"a", "b"}
    assert await locks.acquire(["a", "c"], "w2", ttl) == {"c"}
    await locks.release(["a"], "w2")
    assert await locks.acquire(["a"], "w2", ttl) == set(), "only the owner releases"
    await locks.release(["a"], "w1")
    assert await locks.acquire(["a"], "w2", ttl) == {"a"}
    await clock.advance(31)
    assert await locks.acquire(["b"], "w3", ttl) == {"b"}, "an expired claim can be taken"


async def test_projections_are_monotonic(projections: Any) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def p(status: str, s: int) -> EntityTaskProjection:
        return EntityTaskProjection(task_id="x", entity_id="e", entity_type="t", task_type="k",
                                    queue_id="q", status=ProjectionStatus(status), created_at=t0,
                                    updated_at=t0 + timedelta(seconds=s))

    await projections.upsert_projections([p("processing", 2)])
    await projections.upsert_projections([p("scheduled", 1)])
    assert projections.get("x").status == "processing"
    await projections.upsert_projections([p("failed", 3), p("executed", 4)])
    assert projections.get("x").status == "failed"


async def _for_entity(projections: Any, entity_type: str, entity_id: str) -> list[EntityTaskProjection]:
    provider = getattr(projections, "provider", projections)
    found = provider.for_entity(entity_type, entity_id)
    return list(await found) if hasattr(found, "__await__") else list(found)


async def test_entities_whose_strings_share_a_separator_never_share_a_key(projections: Any) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def p(task_id: str, entity_type: str, entity_id: str) -> EntityTaskProjection:
        return EntityTaskProjection(task_id=task_id, entity_id=entity_id, entity_type=entity_type, task_type="k",
                                    queue_id="q", status=ProjectionStatus.SCHEDULED, created_at=t0, updated_at=t0)

    await projections.upsert_projections([p("x", "a#b", "c"), p("y", "a", "b#c")])
    assert [e.task_id for e in await _for_entity(projections, "a#b", "c")] == ["x"]
    assert [e.task_id for e in await _for_entity(projections, "a", "b#c")] == ["y"]


async def test_an_older_update_of_the_same_status_never_overwrites_a_newer_one(projections: Any) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def p(seconds: int, error: str) -> EntityTaskProjection:
        return EntityTaskProjection(task_id="x", entity_id="e", entity_type="t", task_type="k", queue_id="q",
                                    status=ProjectionStatus.FAILED, error=error, created_at=t0,
                                    updated_at=t0 + timedelta(seconds=seconds))

    await projections.upsert_projections([p(5, "newer")])
    await projections.upsert_projections([p(1, "older")])
    assert projections.get("x").error == "newer"


async def test_a_claim_retried_by_its_owner_is_still_its_own(locks: Any) -> None:
    ttl = timedelta(seconds=30)
    assert await locks.acquire(["a"], "w1", ttl) == {"a"}
    assert await locks.acquire(["a"], "w1", ttl) == {"a"}, "the same call, retried after a lost response"
    assert await locks.acquire(["a"], "w2", ttl) == set()
