"""What an operator asks of a running tq-cloud: find a task, list tasks by status, see a flow
and an entity's timeline, re-drive failures, count what happened. The CLI (`tq-cloud tasks`,
`flows`, `redrive`) and the web console (`tq-cloud console`) both ask through this one class,
and get plain JSON-ready dicts back.

Example:
    async with aws_stack(TaskQueuesManager(), AwsSettings()) as stack:
        ops = Operations.of(stack)
        failed = await ops.tasks(TaskQuery(status=TaskStatus.FAILED, limit=20))
        await ops.redrive([t["id"] for t in failed["tasks"]])
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from tq_cloud.assembly.handler import TaskHandler
from tq_cloud.core.redrive import RedriveReport
from tq_cloud.domain.tally import LATENESS_BOUNDS_MS, OUTCOMES, percentile
from tq_cloud.domain.task import Task, TaskStatus
from tq_cloud.ids import derived_id
from tq_cloud.ports.barrier import BarrierSnapshot, FlowBarrierProvider
from tq_cloud.ports.counters import CountsRow, TaskCounters, minutes_between
from tq_cloud.ports.projections import EntityProjectionProvider
from tq_cloud.ports.storage import TaskQuery, listed_at


def task_view(task: Task) -> dict[str, Any]:
    """A task as the CLI's --json and the console show it."""
    stats = task.execution_stats
    attempts = stats.retry_count + (0 if task.status is TaskStatus.SCHEDULED else 1)
    meta = task.flow_meta
    return {
        "id": task.id, "queue": task.queue_id, "type": task.type, "status": task.status.value,
        "attempts": attempts, "error": None if task.status is TaskStatus.EXECUTED else (
            f"cancelled: {stats.cancel_reason}" if task.status is TaskStatus.CANCELLED else
            stats.last_error or stats.ignored_reason), "last_error": stats.last_error,
        "error_type": stats.last_error_type,
        "result": task.execution_result, "redrives": stats.redrives, "payload": task.payload,
        "redriven_at": _iso(stats.redriven_at), "failed_at": _iso(stats.failed_at),
        "not_redrivable": stats.not_redrivable,
        "execute_at": _iso(task.execute_at), "created_at": _iso(task.created_at), "updated_at": _iso(task.updated_at),
        "entity": f"{task.entity.type}:{task.entity.id}" if task.entity else None,
        "flow": {"id": meta.flow_id, "step": meta.step_index} if meta else None,
        "progress": task.progress.model_dump(mode="json") if task.progress else None,
        "cancel_requested": task.cancel_requested, "result_dropped": stats.result_dropped,
        "expires_at": _iso(task.expires_at),
        "attempt_history": [a.model_dump(mode="json") for a in stats.attempts],
        "trace_id": trace_id(task),
    }


def trace_id(task: Task) -> str | None:
    """The W3C trace id the task's runs belong to (from the traceparent it carries), if traced."""
    context = task.metadata.log_context if task.metadata else None
    parts = (context or {}).get("traceparent", "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class Operations:
    """What an operator asks of a deployment, as plain dicts: find a task, list by status,
    count, re-drive, cancel, flows, schedules. The CLI and the console are thin layers over it.

    Example:
        ops = Operations.of(stack)                            # an AwsStack or an InMemoryStack
        report = await ops.redrive(["order-7", "order-9"])   # {"sent": [...], "skipped": {id: why}}
    """
    def __init__(self, handler: TaskHandler, barriers: FlowBarrierProvider | None,
                 projections: EntityProjectionProvider | None, deployed: Any = None,
                 counters: TaskCounters | None = None) -> None:
        self.handler = handler
        self.barriers = barriers
        self.projections = projections
        self.deployed = deployed
        """The deployed schedules (an AwsStack's ScheduleSync), if any."""
        self.counters = counters
        """The kept counters (exact counts and activity over time), if the stack keeps them."""
        self._activity: dict[int, tuple[float, dict[str, Any]]] = {}

    @classmethod
    def of(cls, stack: Any) -> Operations:
        """From a stack (AwsStack or InMemoryStack): its handler, barriers, projections and counters."""
        return cls(stack.handler, stack.barriers, stack.projections, getattr(stack, "schedules", None),
                   getattr(stack, "counters", None))

    async def activity(self, minutes: int = 60) -> dict[str, Any]:
        """From the kept counters: the exact totals by outcome of every (queue, type) that ran
        (the framework's own left out), and per minute of the last `minutes` the outcomes of
        all tasks and the lateness p50 and p99 (ms, the upper bound of the histogram bucket
        they fall in; an hour for anything later).

        Example:
            seen = await ops.activity(60)
            seen["totals"][0]      # {"queue": "billing", "type": "charge", "executed": 981, ...}
        """
        if not 1 <= minutes <= 1440:
            raise ValueError(f"minutes must be from 1 to 1440, not {minutes}")
        now = self.handler.clock.now()
        if self.counters is None:
            return {"kept": False, "at": now.isoformat(), "totals": [], "minutes": []}
        fresh_for = getattr(self.counters, "refresh_seconds", 0.0)  # reads that are billed are kept a while
        cached = self._activity.get(minutes)
        if fresh_for and cached and asyncio.get_running_loop().time() - cached[0] < fresh_for:
            return cached[1]
        view = await self._read_activity(minutes, now)
        if fresh_for:
            self._activity[minutes] = (asyncio.get_running_loop().time(), view)
        return view

    async def _read_activity(self, minutes: int, now: datetime) -> dict[str, Any]:
        assert self.counters is not None
        seen = await self.counters.read(None, now - timedelta(minutes=minutes - 1), now)
        totals = [{"queue": q, "type": t, **{n: row.counts[n] for n in OUTCOMES},
                   "run_ms_avg": round(row.run_ms / runs, 3) if (runs := sum(row.lateness)) else None}
                  for (q, t), row in sorted(seen.totals.items()) if not t.startswith("_")]  # the framework's own
        series = []
        for minute in minutes_between(now - timedelta(minutes=minutes - 1), now):
            merged = CountsRow()
            for by_minute in seen.minutes.values():
                if minute in by_minute:
                    merged.add(by_minute[minute])
            read = seen.lateness.get(minute, {})
            series.append({"minute": minute.isoformat(), **{n: merged.counts[n] for n in OUTCOMES},
                           "lateness_p50": read.get("p50", _bounded(percentile(merged.lateness, 0.5))),
                           "lateness_p99": read.get("p99", _bounded(percentile(merged.lateness, 0.99)))})
        return {"kept": True, "at": now.isoformat(), "totals": totals, "minutes": series}

    async def count_matching(self, query: TaskQuery, cap: int = 10_000) -> dict[str, Any]:
        """How many stored tasks a query matches, reading pages up to `cap` (`{"count", "capped"}`):
        what a bulk re-drive of the query asks to confirm."""
        count, cursor = 0, None
        while True:
            page = await self.handler.list_tasks(replace(query, limit=min(cap - count, 500) or 1, cursor=cursor))
            count += len(page.tasks)
            cursor = page.cursor
            if cursor is None or count >= cap:
                return {"count": count, "capped": cursor is not None}

    async def schedules(self, upcoming: int = 3, recent: int = 3) -> list[dict[str, Any]]:
        """Each schedule the app declares or the stack has deployed: its expression, whether the
        deployed one matches (drift), paused, its next occurrences and its last runs."""
        from tq_cloud.schedules.firing import ScheduleState, describe, occurrence_id, pause_key

        declared = self.handler.registry.schedules
        deployed = await self.deployed.deployed() if self.deployed is not None else {}
        marks = await self.handler.storage.get_marks([pause_key(n) for n in declared])
        now = self.handler.clock.now()
        rows = []
        for name in sorted(set(declared) | set(deployed)):
            schedule, have = declared.get(name), deployed.get(name)
            view: dict[str, Any] = {"name": name, **(describe(schedule) if schedule else {
                "task": None, "expression": (have or {}).get("ScheduleExpression"),
                "timezone": (have or {}).get("ScheduleExpressionTimezone")})}
            mark = marks.get(pause_key(name))
            view["paused"] = bool(mark and ScheduleState.load(mark).paused) or (have or {}).get("State") == "DISABLED"
            view["deployed"] = ("not deployed" if have is None and self.deployed is not None else
                                "yes" if schedule is None and not declared else  # no app to compare with
                                "not declared: removed at the next sync" if schedule is None else
                                "differs: updated at the next sync" if have is not None and (
                                    have.get("ScheduleExpression") != schedule.expression or
                                    have.get("ScheduleExpressionTimezone") != schedule.timezone) else
                                "yes" if have is not None else "-")
            if schedule is not None:
                nexts = schedule.occurrences(now, now + timedelta(days=3660))
                view["next"] = [at.isoformat() for _, at in zip(range(upcoming), nexts, strict=False)]
                last: list[datetime] = []
                at = schedule.previous(now + timedelta(microseconds=1))
                while at is not None and len(last) < recent:
                    last.append(at)
                    at = schedule.previous(at)
                found = {r.key: r for r in await self.handler.storage.get([occurrence_id(name, a) for a in last])}
                view["last_runs"] = [{"at": a.isoformat(), "status": (row.status.value if (
                    row := found.get(occurrence_id(name, a))) else "no run")} for a in last]
            rows.append(view)
        return rows

    async def pause_schedule(self, name: str, paused: bool = True) -> dict[str, Any]:
        """Pause (or resume) a schedule: its mark, and the deployed schedule's state."""
        await self.handler.pause_schedule(name, paused)
        changed = await self.deployed.set_enabled(name, not paused) if self.deployed is not None else False
        return {"name": name, "paused": paused, "deployed": changed}

    async def task(self, task_id: str) -> dict[str, Any] | None:
        found = await self.handler.find(task_id)
        return task_view(found) if found else None

    async def tasks(self, query: TaskQuery) -> dict[str, Any]:
        page = await self.handler.list_tasks(query)
        return {"tasks": [task_view(t) for t in page.tasks], "cursor": page.cursor}

    async def result(self, task_id: str, wait: float = 0.0) -> dict[str, Any]:
        """`{"id", "status": "executed", "result"}`, or `{"id", "status", "error"}` for a task
        that failed, was cancelled, is not finished within `wait` seconds, or keeps no result."""
        from tq_cloud.errors import TaskCancelledError, TaskFailedError

        try:
            return {"id": task_id, "status": "executed", "result": await self.handler.result(task_id, wait)}
        except TaskFailedError as exc:
            return {"id": task_id, "status": exc.status, "error": exc.error, "error_type": exc.error_type}
        except TaskCancelledError as exc:
            return {"id": task_id, "status": "cancelled", "error": f"cancelled: {exc.reason}"}
        except TimeoutError as exc:
            return {"id": task_id, "status": "pending", "error": str(exc)}
        except KeyError as exc:
            return {"id": task_id, "status": "unknown", "error": str(exc)}

    async def cancel(self, task_id: str, reason: str = "") -> dict[str, Any]:
        """`{"id", "cancelled": bool}`: False for a finished or unknown task."""
        return {"id": task_id, "cancelled": await self.handler.cancel(task_id, reason)}

    async def cancel_flow(self, flow_id: str, reason: str = "flow cancelled") -> dict[str, Any]:
        return {"id": flow_id, "cancelled": await self.handler.cancel_flow(flow_id, reason)}

    async def redrive(self, ids: list[str]) -> dict[str, Any]:
        """`{"sent": [task views], "skipped": {id: why}}`."""
        return _report(await self.handler.redrive_report(ids))

    async def redrive_matching(self, query: TaskQuery, limit: int) -> dict[str, Any]:
        return _report(await self.handler.redrive_report(query=query, limit=limit))

    async def flows(self, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        if self.barriers is None:
            return {"flows": [], "cursor": None}
        page = await self.barriers.list_flows(limit, cursor)
        return {"flows": [await self._flow_view(f) for f in page.flows], "cursor": page.cursor}

    async def flow(self, flow_id: str, steps: int = 100) -> dict[str, Any] | None:
        snapshot = await self.barriers.get(flow_id) if self.barriers else None
        if snapshot is None or self.barriers is None:
            return None
        view = await self._flow_view(snapshot)
        view["steps"] = [{**step.model_dump(mode="json"), "task_id": derived_id(flow_id, "step", step.step_index)}
                         for step in await self.barriers.step_results_page(flow_id, limit=steps)]
        failed = [step["task_id"] for step in view["steps"] if step["status"] == "fail"]
        rows = {row.key: row.status.value for row in await self.handler.storage.get(failed)} if failed else {}
        for step in view["steps"]:  # a failed step's row now: re-driven, it may have run again since
            step["task_status"] = rows.get(step["task_id"])
        join_id = derived_id(flow_id, "join")
        join = await self.handler.find(join_id) if snapshot.join_dispatched else None
        view["join_task"] = {"id": join_id, "status": join.status.value if join else None,
                             "result": join.execution_result if join else None,
                             "error": join.execution_stats.last_error if join else None}
        return view

    async def _flow_view(self, snapshot: BarrierSnapshot) -> dict[str, Any]:
        assert self.barriers is not None
        counts = await self.barriers.step_counts(snapshot.flow_id)
        done = counts.succeeded + counts.failed + counts.ignored
        return {"id": snapshot.flow_id, "state": snapshot.state.value, "total": snapshot.total_steps,
                "done": done, "succeeded": counts.succeeded, "failed": counts.failed, "ignored": counts.ignored,
                "join": "dispatched" if snapshot.join_dispatched else ("pending" if done < snapshot.total_steps
                                                                       else "due"),
                "started_at": _iso(snapshot.started_at), "deadline": _iso(snapshot.deadline)}

    async def entity(self, entity_type: str, entity_id: str, limit: int = 100) -> list[dict[str, Any]]:
        if self.projections is None:
            return []
        return [p.model_dump(mode="json", exclude={"payload"})
                for p in await self.projections.timeline(entity_type, entity_id, limit)]

    async def waiting_on_limits(self) -> list[dict[str, Any]]:
        """Tasks turned away by a concurrency or rate limit, an ordered key's turn or a busy debounce
        key in the last five minutes, per executor and key, most first (a gauge: see
        `flow_control.waiting`)."""
        from tq_cloud.flow_control.waiting import waiting_on_limits

        registry = self.handler.registry
        limited = [(q, t) for q in registry.get_queues() for t in registry.get_task_types_for_queue(q)
                   if _has_flow_control(registry.get_executor(q, t))]
        if not limited:
            return []
        rows = await waiting_on_limits(self.handler.storage, limited, self.handler.clock.now().timestamp())
        return [{"queue": r.queue, "type": r.type, "key": r.key, "waiting": r.count,
                 "at": datetime.fromtimestamp(r.at, UTC).isoformat()} for r in rows]

    async def counts(self, within: timedelta = timedelta(minutes=15), per_status: int = 1000) -> dict[str, Any]:
        """Stored tasks by queue, type and status that took their status within `within` (with
        TQ_HISTORY every task; without, the ones with rows), each with how many took it in the
        last minute (for executed rows: the throughput). Bounded: at most `per_status` rows read
        per status."""
        now = self.handler.clock.now()
        counts: Counter[tuple[str, str, str]] = Counter()
        recent: Counter[tuple[str, str, str]] = Counter()
        for status in TaskStatus:
            page = await self.handler.list_tasks(TaskQuery(status=status, since=now - within, limit=per_status))
            for task in page.tasks:
                key = (task.queue_id, task.type, status.value)
                counts[key] += 1
                if listed_at(task) >= now - timedelta(minutes=1):
                    recent[key] += 1
        rows = [{"queue": q, "type": t, "status": s, "count": c, "last_minute": recent[(q, t, s)]}
                for (q, t, s), c in sorted(counts.items())]
        executed = sum(n for (_, _, s), n in recent.items() if s == TaskStatus.EXECUTED.value)
        return {"at": now.isoformat(), "rows": rows, "executed_last_minute": executed, "total": sum(counts.values())}


def _bounded(ms: float | None) -> float | None:
    return None if ms is None else min(ms, float(LATENESS_BOUNDS_MS[-1]))


def _has_flow_control(executor: Any) -> bool:
    options = getattr(executor, "options", None)
    return options is not None and bool(options.concurrency or options.rate_limit or options.debounce
                                        or options.ordered)


def _report(report: RedriveReport) -> dict[str, Any]:
    return {"sent": [task_view(t) for t in report.sent], "skipped": report.skipped}
