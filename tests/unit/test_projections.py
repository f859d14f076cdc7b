"""Entity projections: when they are emitted, monotonic statuses, failures never fatal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tq_cloud import EntityRef, ExecutorActions, ProjectionConfig, Task
from tq_cloud.backends.memory import InMemoryProjectionProvider
from tq_cloud.errors import MissingTaskIdError
from tq_cloud.ports.projections import EntityTaskProjection, ProjectionStatus
from tq_cloud.projections.sink import build_projection
from tq_cloud.testing import InMemoryStack

USER = EntityRef(id="u1", type="user")


class Recording(InMemoryProjectionProvider):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[tuple[str, str]]] = []

    async def upsert_projections(self, entries: object) -> None:
        self.batches.append([(e.task_id, e.status.value) for e in entries])  # type: ignore[attr-defined]
        await super().upsert_projections(entries)  # type: ignore[arg-type]


async def test_lifecycle_scheduled_processing_executed(stack: InMemoryStack) -> None:
    @stack.registry.task("q", "t")
    async def ok(task: Task, actions: ExecutorActions) -> None:
        assert stack.projections.get(task.key).status == "processing"  # type: ignore[union-attr]
        actions.success(task, {"r": 1})

    [added] = await stack.handler.add_tasks([Task(type="t", queue_id="q", payload={"p": 1}, entity=USER)], allow_unknown=True)
    assert stack.projections.get(added.key).status == "scheduled"  # type: ignore[union-attr]
    await stack.run_until_idle()
    final = stack.projections.get(added.key)
    assert final is not None and final.status == "executed" and final.result == {"r": 1}
    assert final.payload is None, "payloads are not projected unless configured"


async def test_failed_projection_only_when_final_and_processing_only_first_attempt(stack: InMemoryStack) -> None:
    recording = Recording()
    stack = InMemoryStack.create(stack.registry, projections=recording)

    @stack.registry.task("q", "t", retries=2, store_on_failure=True)
    async def broken(task: Task, actions: ExecutorActions) -> None:
        actions.fail(task, "bad")

    [added] = await stack.handler.add_tasks([Task(type="t", queue_id="q", payload={}, entity=USER)], allow_unknown=True)
    await stack.run_until_idle()
    statuses = [status for batch in recording.batches for _, status in batch]
    assert statuses == ["scheduled", "processing", "failed"]
    final = recording.get(added.key)
    assert final is not None and final.error == "bad"


async def test_one_provider_call_per_phase_for_a_batch() -> None:
    recording = Recording()
    stack = InMemoryStack.create(projections=recording)

    @stack.registry.batch_task("q", "t")
    async def ok(tasks: list[Task], actions: ExecutorActions) -> None:
        for t in tasks:
            actions.success(t)

    tasks = [Task(type="t", queue_id="q", payload=i, entity=USER if i % 3 == 0 else None) for i in range(30)]
    await stack.handler.add_tasks(tasks, allow_unknown=True)
    await stack.run_until_idle()
    assert [len(b) for b in recording.batches] == [10, 10, 10]


async def test_provider_errors_are_not_fatal(stack: InMemoryStack) -> None:
    stack.projections.fail_next = 10

    @stack.registry.task("q", "t", store_on_failure=True)
    async def ok(task: Task, actions: ExecutorActions) -> None:
        actions.success(task)

    [added] = await stack.handler.add_tasks([Task(type="t", queue_id="q", payload={}, entity=USER,
                                                  force_store=True)], allow_unknown=True)
    await stack.run_until_idle()
    assert stack.storage.snapshot()[added.key].status == "executed"


async def test_include_payload() -> None:
    stack = InMemoryStack.create(projection_config=ProjectionConfig(include_payload=True))
    [added] = await stack.handler.add_tasks([Task(type="t", queue_id="q", payload={"p": 1}, entity=USER)], allow_unknown=True)
    assert stack.projections.get(added.key).payload == {"p": 1}  # type: ignore[union-attr]


async def test_statuses_never_move_backwards() -> None:
    provider = InMemoryProjectionProvider()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def entry(status: str, at: int) -> EntityTaskProjection:
        return EntityTaskProjection(task_id="x", entity_id="u", entity_type="user", task_type="t",
                                    queue_id="q", status=ProjectionStatus(status), created_at=t0,
                                    updated_at=t0 + timedelta(seconds=at))

    await provider.upsert_projections([entry("executed", 3)])
    await provider.upsert_projections([entry("processing", 2), entry("scheduled", 1)])
    await provider.upsert_projections([entry("failed", 4)])
    assert provider.get("x").status == "executed"  # type: ignore[union-attr]
    assert [p.task_id for p in provider.for_entity("user", "u")] == ["x"]


def test_entity_task_without_an_id_fails_fast_with_the_fix() -> None:
    task = Task(type="t", queue_id="q", payload={}, entity=USER)
    with pytest.raises(MissingTaskIdError, match=r"add tasks through TaskHandler\.add_tasks"):
        build_projection(task, ProjectionStatus.SCHEDULED, datetime.now(UTC))
    assert build_projection(Task(type="t", queue_id="q", payload={}), ProjectionStatus.SCHEDULED,
                            datetime.now(UTC)) is None


async def test_an_id_less_entity_task_does_not_lose_its_neighbours_projections(stack: InMemoryStack) -> None:
    from tq_cloud.projections.sink import ProjectionSink

    sink = ProjectionSink(stack.projections, stack.clock)
    good = Task(id="g", type="t", queue_id="q", payload={}, entity=USER)
    bad = Task(type="t", queue_id="q", payload={}, entity=USER)
    await sink.scheduled([bad, good])
    assert stack.projections.get("g") is not None
