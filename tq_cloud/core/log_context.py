"""Per-task log context, carried through `await` by a context variable.

Users put correlation keys in `task.metadata.log_context`; the runner binds them, plus the
task id, type and worker id, around the executor call so every log record made inside it can
carry them (attach `LogContextFilter` to a handler). Children inherit their parent's keys.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

from tq_cloud.domain.task import MAX_LOG_CONTEXT_CHARS, MAX_LOG_CONTEXT_KEYS

_current: ContextVar[Mapping[str, str]] = ContextVar(
    "tq_log_context", default=MappingProxyType({})
)

log = logging.getLogger("tq_cloud")


def current_log_context() -> Mapping[str, str]:
    return _current.get()


@contextmanager
def log_context_scope(values: Mapping[str, str]) -> Iterator[None]:
    token = _current.set({**_current.get(), **values})
    try:
        yield
    finally:
        _current.reset(token)


def runtime_context(
    user: Mapping[str, str] | None, task_id: str, task_type: str, worker_id: str
) -> dict[str, str]:
    """Runtime keys win over user keys of the same name, so logs cannot be spoofed."""
    return {**(user or {}), "task_id": task_id, "task_type": task_type, "worker_id": worker_id}


def limit_log_context(values: Mapping[str, str] | None, task_ref: str) -> dict[str, str] | None:
    """Keep at most 10 keys (the first in alphabetical order) and at most 1 KB of JSON; a
    context still too large is dropped. Both cases are logged."""
    if not values:
        return None
    kept = dict(values)
    if len(kept) > MAX_LOG_CONTEXT_KEYS:
        kept = {k: kept[k] for k in sorted(kept)[:MAX_LOG_CONTEXT_KEYS]}
        log.warning("log_context of task %s has %d keys; kept the first %d alphabetically",
                    task_ref, len(values), MAX_LOG_CONTEXT_KEYS)
    size = len(json.dumps(kept, separators=(",", ":")))
    if size > MAX_LOG_CONTEXT_CHARS:
        log.warning("log_context of task %s is %d characters, over %d; dropped",
                    task_ref, size, MAX_LOG_CONTEXT_CHARS)
        return None
    return kept


class LogContextFilter(logging.Filter):
    """Adds the bound context to each record as `record.tq_context` (a dict, in a namespace of its
    own: a producer's key can never overwrite a record field) and `record.tq_context_text`
    (`[k:v]...`, keys sorted, `]`, `:` and control characters escaped in keys and values alike,
    so no key or value can break the line or forge an entry)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = dict(_current.get())
        record.tq_context = ctx
        record.tq_context_text = "".join(f"[{_sanitise(k)}:{_sanitise(v)}]" for k, v in sorted(ctx.items()))
        return True


def _sanitise(value: str) -> str:
    return "".join("_" if (c in "[]:" or ord(c) < 32 or ord(c) == 127) else c for c in str(value))
