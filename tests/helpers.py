from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from tq_cloud.ports.lifecycle import FlowLifecycleProvider, TaskLifecycleProvider, WorkerLifecycleProvider


class EventLog(TaskLifecycleProvider, WorkerLifecycleProvider, FlowLifecycleProvider):
    """Records every lifecycle event as (hook name, event); `seen(hook)` waits for one."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self._signals: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("on_"):
            return lambda event: object.__getattribute__(self, "_record")(name, event)
        return object.__getattribute__(self, name)

    def _record(self, hook: str, event: Any) -> None:
        self.events.append((hook, event))
        self._signals[hook].set()

    async def seen(self, hook: str, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self._signals[hook].wait(), timeout)

    def of(self, hook: str) -> list[Any]:
        return [e for h, e in self.events if h == hook]
