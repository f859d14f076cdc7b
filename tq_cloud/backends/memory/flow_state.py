"""Flow-control items in memory: the same versioned compare-and-set as the DynamoDB backend."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from datetime import datetime

from tq_cloud.ports.storage import FlowState


class MemoryFlowState:
    """Mixed into the in-memory task store (which creates `_flow` and `_flow_expires`)."""

    _flow: dict[str, FlowState]
    _flow_expires: dict[str, datetime]

    async def read_flow(self, scopes: Sequence[str]) -> dict[str, FlowState]:
        return {s: copy.deepcopy(self._flow[s]) for s in scopes if s in self._flow}

    async def write_flow(self, scope: str, state: FlowState, expires_at: datetime) -> bool:
        held = self._flow.get(scope)
        if (held.version if held else 0) != state.version:
            return False
        json.dumps(state.doc)  # the DynamoDB backend stores it as JSON: the same documents only
        self._flow[scope] = FlowState(state.version + 1, copy.deepcopy(state.doc), dict(state.slots))
        self._flow_expires[scope] = expires_at
        return True

    async def free_slots(self, scope: str, holders: Sequence[str]) -> None:
        held = self._flow.get(scope)
        if held is not None:
            for holder in holders:
                held.slots.pop(holder, None)
            held.version += 1
