"""Task and flow ids.

Ids derived from a parent (children, flow steps, joins) are deterministic, so when Kinesis
redelivers a batch and an executor runs again, the tasks it adds get the same ids and the
store's set-if-absent writes turn the second dispatch into a no-op.
"""

from __future__ import annotations

import json
import os
import uuid

_NAMESPACE = uuid.UUID("8f6a2c1e-5b7d-4e3a-9c2f-1d0e4b6a7c83")


def new_id() -> str:
    """128 random bits as hex, like uuid4().hex without the UUID object (6x faster)."""
    return os.urandom(16).hex()


def derived_id(parent: str, *parts: str | int) -> str:
    """A deterministic id from its parent and parts. The name is the JSON array of them, so no
    two different lists of user-controlled strings share a name ("a/b" + "c" is not "a" + "b/c")."""
    return uuid.uuid5(_NAMESPACE, json.dumps([parent, *parts], separators=(",", ":"))).hex
