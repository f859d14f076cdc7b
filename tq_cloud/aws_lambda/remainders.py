"""What a Kinesis consumer does with the tasks of a batch that did not commit.

Lambda's partial batch response names records, and Lambda then redelivers from the first one
named, with every record after it. A record aggregated in the KPL format carries many tasks
(25 or more), so naming it would run again those of its tasks that committed, and those of every
record after it: with aggregation, one failed write would re-run thousands of tasks. So when a
batch holds an aggregated record and some task from the first uncommitted record on did commit,
the consumer puts the uncommitted tasks back on the stream (as fresh records, packed again) and
names no record: the tasks that committed are never delivered again. (When nothing from there
on committed, as after a failed commit of a whole chunk, the records are named: redelivery
reruns nothing that committed, and put-backs would only multiply copies.) A record is still
named (redelivery, as for plain records) when that cannot
be done: a task of an `ordered=True` executor (a put-back would let later tasks of its key pass
it), a record that is not a task (its failure could not be recorded), a task put back
`MAX_REQUEUES` times already (so a write that keeps failing ends where the event source
mapping's retry limit and on-failure destination take it, never in a loop), or a put-back that
failed or could not finish in the time left. A batch of plain records only is named as before.

Example:
    named = await uncommitted_records(handler, decoded, uncommitted, time_left_s=20.0)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tq_cloud.core.codec import UndecodableRecord
from tq_cloud.domain.task import Task
from tq_cloud.errors import QueueWriteError

log = logging.getLogger("tq_cloud.lambda")

MAX_REQUEUES = 3
"""Put-backs of one task before its record is named for redelivery instead."""

Decoded = tuple[str, Task | UndecodableRecord]
"""A record's sequence number and one task of it (or what could not be decoded)."""


def record_key(sequence: str, record: Task | UndecodableRecord) -> str:
    """The key a batch report names a decoded task by."""
    return record.record_id if isinstance(record, UndecodableRecord) else (record.id or sequence)


@dataclass
class Remainders:
    """What became of a batch's uncommitted tasks: the records to name for redelivery, and why
    some record that has committed tasks was named all the same (empty when none was)."""

    named: list[str] = field(default_factory=list)
    uncommitted: set[str] = field(default_factory=set)
    """The keys of the batch's tasks the worker found not committed (as it saw them)."""
    requeued: int = 0
    fell_back: list[str] = field(default_factory=list)


async def uncommitted_records(handler: Any, decoded: Sequence[Decoded], uncommitted: set[str],
                              *, time_left_s: float | None = None) -> Remainders:
    """The records of `decoded` to name for redelivery, once the uncommitted tasks of a batch
    holding an aggregated record are put back on the stream (see the module's docstring)."""
    by_record: dict[str, list[Task | UndecodableRecord]] = {}
    for sequence, record in decoded:
        by_record.setdefault(sequence, []).append(record)
    pending = [seq for seq, records in by_record.items() if any(record_key(seq, r) in uncommitted for r in records)]
    if not pending:
        return Remainders()
    if all(len(records) == 1 for records in by_record.values()):
        return Remainders(named=pending, uncommitted=uncommitted)
    order = list(by_record)
    redelivered = order[order.index(pending[0]):]
    if all(record_key(seq, r) in uncommitted for seq in redelivered for r in by_record[seq]):
        # nothing from the first one on committed: a redelivery reruns nothing
        return Remainders(named=pending, uncommitted=uncommitted)
    out = Remainders(uncommitted=uncommitted)
    again: list[Task] = []
    owners: dict[str, str] = {}
    for at, seq in enumerate(pending):
        left = [r for r in by_record[seq] if record_key(seq, r) in uncommitted]
        why = _cannot_requeue(handler, left)
        if why is not None:
            out.named = pending[at:]
            out.fell_back.append(why)
            break
        for task in left:
            assert isinstance(task, Task)
            stats = task.execution_stats
            again.append(task.model_copy(update={"execution_stats": stats.model_copy(
                update={"requeues": stats.requeues + 1})}))
            owners[task.key] = seq
    if again:
        unwritten = await _requeue(handler, again, time_left_s)
        if unwritten is None:
            out.named = [*owners.values(), *out.named]
            out.fell_back.append("the put-back did not finish in the time left")
        elif unwritten:
            out.named = [*{owners[key] for key in unwritten}, *out.named]
            out.fell_back.append(f"the put-back of {len(unwritten)} tasks failed")
        out.requeued = 0 if unwritten is None else len(again) - len(unwritten)
    out.named = sorted(set(out.named), key=order.index)
    if out.fell_back:
        log.error("records named for redelivery although some of their tasks committed (%s): %s",
                  "; ".join(out.fell_back), ", ".join(out.named))
    return out


def _cannot_requeue(handler: Any, left: list[Task | UndecodableRecord]) -> str | None:
    for record in left:
        if isinstance(record, UndecodableRecord):
            return f"record {record.record_id} is not a task and its failure was not recorded"
        if handler.registry.is_ordered(record):  # packed alone by our producers; another's may not
            return f"task {record.key} keeps its key's order"
        if record.execution_stats.requeues >= MAX_REQUEUES:
            return f"task {record.key} was put back {MAX_REQUEUES} times already"
    return None


async def _requeue(handler: Any, tasks: list[Task], time_left_s: float | None) -> set[str] | None:
    """The ids of `tasks` not written back to the stream, or None if the time left ran out."""
    try:
        await asyncio.wait_for(handler.router.queue.publish(tasks), time_left_s)
    except TimeoutError:
        return None
    except QueueWriteError as exc:
        return set(exc.task_ids) | set(exc.rejected)
    except Exception:
        log.exception("putting back %d uncommitted tasks failed", len(tasks))
        return {t.key for t in tasks}
    return set()
