"""Task and flow ids.

Ids derived from a parent (children, flow steps, joins) are deterministic, so when Kinesis
redelivers a batch and an executor runs again, the tasks it adds get the same ids and the
store's set-if-absent writes turn the second dispatch into a no-op.
"""

from __future__ import annotations

import os
import uuid

_NAMESPACE = uuid.UUID("8f6a2c1e-5b7d-4e3a-9c2f-1d0e4b6a7c83")


def new_id() -> str:
    """128 random bits as hex, like uuid4().hex without the UUID object (6x faster)."""
    return os.urandom(16).hex()


def derived_id(parent: str, *parts: object) -> str:
    return uuid.uuid5(_NAMESPACE, "/".join([parent, *map(str, parts)])).hex
