"""What the runner asks of flow control (debounce, concurrency and rate limits, ordered keys),
as a protocol the assembly fills with `tq_cloud.flow_control.gate.FlowGate`; `OPEN_GATE`
admits everything, for a pipeline without flow control."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from tq_cloud.core.actions import RunRecorder
from tq_cloud.core.executors import Executor
from tq_cloud.domain.task import Task

Pair = tuple[Task, Task]
"""(the task as delivered, the executor's copy with its payload validated into the model)"""
RunUnit = Callable[[list[Pair]], Awaitable[None]]


class Admission(Protocol):
    """Decides which of an executor's tasks start now (flow control: debounce, concurrency and
    rate limits, ordered keys); the rest it records as deferred on the recorder."""

    async def screen(self, executor: Executor, pairs: list[Pair], recorder: RunRecorder) -> list[Pair]: ...

    def admit(self, executor: Executor, pairs: list[Pair], recorder: RunRecorder,
              owner: str) -> AbstractAsyncContextManager[list[Pair]]: ...

    async def run_ordered(self, pairs: list[Pair], recorder: RunRecorder, run_unit: RunUnit, width: int,
                          in_batch: Sequence[Task] = ()) -> None: ...

    async def flush_waiting(self) -> None: ...


class OpenGate:
    """Admits everything, in the order given: a pipeline without flow control."""

    async def screen(self, executor: Executor, pairs: list[Pair], recorder: RunRecorder) -> list[Pair]:
        return pairs

    @asynccontextmanager
    async def admit(self, executor: Executor, pairs: list[Pair], recorder: RunRecorder,
                    owner: str) -> AsyncIterator[list[Pair]]:
        yield pairs

    async def run_ordered(self, pairs: list[Pair], recorder: RunRecorder, run_unit: RunUnit, width: int,
                          in_batch: Sequence[Task] = ()) -> None:
        for pair in pairs:
            await run_unit([pair])

    async def flush_waiting(self) -> None:
        return None


OPEN_GATE = OpenGate()
