"""Runs one batch: claims each task, groups by (queue, type), drives each executor kind, and
records every task's outcome. Every record leaves with an outcome (ignored, and deferred when
another worker holds its claim, included), is handed off, or is superseded by a more advanced
copy of the same task (in the batch, or already committed in the store); none is forgotten.

A task claimed elsewhere is deferred through the store (run again after CLAIM_DEFERRAL seconds,
using no attempt), not handed back to the stream: a claim left by a killed invocation lasts
minutes, and redelivering the record meanwhile would burn the event source's retries until
the batch went to the on-failure destination.

Executors get a copy of each task with its payload validated into their model; outcomes keep
the task as delivered, so whatever the commit writes carries the payload as it was sent."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from tq_cloud.clock import Clock
from tq_cloud.core.actions import ExecutorActions, RunRecorder, TaskCheck
from tq_cloud.core.admission import OPEN_GATE, Admission, Pair
from tq_cloud.core.codec import encode_task, usable_id
from tq_cloud.core.control import RunControl
from tq_cloud.core.emitter import LifecycleEmitter
from tq_cloud.core.executors import BatchTaskExecutor, BuiltinExecutors, Executor, SingleTaskExecutor
from tq_cloud.core.extensions import NO_TRACING, FlowStarting, Handoff, RunSpan, Tracing
from tq_cloud.core.log_context import log_context_scope, runtime_context
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.domain.events import TaskStarted
from tq_cloud.domain.limits import describe_validation_error
from tq_cloud.domain.outcomes import Outcome, RunResult, Verdict
from tq_cloud.domain.task import Task
from tq_cloud.errors import TaskCancelledError, TaskRejectedError, TaskTimeoutError
from tq_cloud.ids import derived_id
from tq_cloud.ports.locks import LockProvider
from tq_cloud.ports.storage import TaskStorage

if TYPE_CHECKING:
    from tq_cloud.ports.barrier import FlowBarrierProvider

log = logging.getLogger("tq_cloud.runner")

FULL_MANAGER_RETRY_DELAY = 30.0
CLAIM_DEFERRAL = 30.0
MAX_HOLD = timedelta(seconds=2)
"""How long a task that arrived before it was due is held before it runs: the delay lane hands
tasks over up to a second early (SQS delays are whole seconds, rounded down so that a task is
not a second late). One due later still is deferred, never run early."""
ARRIVED_EARLY = "arrived before it was due; deferred without using an attempt"
CLAIMED_ELSEWHERE = "claimed by another worker; deferred without using an attempt"
FORGOTTEN = "batch executor returned without calling success() or fail() for this task"
AsyncCommit = Callable[[RunResult, str], Awaitable[None]]
UncommittedHook = Callable[[Task], None]
ProcessingHook = Callable[[Sequence[Task]], Awaitable[None]]


class TaskRunner:
    def __init__(
        self,
        registry: TaskQueuesManager,
        locks: LockProvider,
        clock: Clock,
        lifecycle: LifecycleEmitter,
        *,
        check_task: TaskCheck,
        flow_starter: FlowStarting | None = None,
        async_manager: Handoff | None = None,
        gate: Admission = OPEN_GATE,
        builtins: BuiltinExecutors | None = None,
        tracing: Tracing = NO_TRACING,
        on_processing: ProcessingHook | None = None,
        lock_ttl: timedelta = timedelta(minutes=30),
        storage: TaskStorage | None = None,
        stale_after: timedelta = timedelta(minutes=30),
        barriers: FlowBarrierProvider | None = None,
        history: bool = False,
    ) -> None:
        self.registry = registry
        self.locks = locks
        self.clock = clock
        self.lifecycle = lifecycle
        self.check_task = check_task
        self.flow_starter = flow_starter
        self.async_manager = async_manager
        self.on_processing = on_processing
        self.lock_ttl = lock_ttl
        self.storage = storage
        self.stale_after = stale_after
        self.barriers = barriers
        self.history = history
        self.commit_async: AsyncCommit | None = None
        self.on_async_uncommitted: UncommittedHook | None = None
        self.control = RunControl(storage, clock)
        self.gate = gate
        self.tracing = tracing
        self.builtins = builtins or {}

    async def run(self, runner_id: str, tasks: Sequence[Task], claim_ttl: timedelta | None = None,
                  budget: timedelta | None = None) -> RunResult:
        """Run a batch. `claim_ttl`: the time left to the caller (a Lambda invocation's
        remaining time), which bounds claims and leases and which no task's time limit may
        pass; `budget`: the whole time such a caller has (default `claim_ttl`)."""
        result = RunResult()
        unique = _most_advanced(tasks, result.superseded)
        claimed = await self.locks.acquire(list(unique), runner_id, claim_ttl or self.lock_ttl)
        recorder = RunRecorder(self.clock)
        if claim_ttl is not None:
            recorder.deadline = self.clock.now() + claim_ttl
            recorder.budget = (budget or claim_ttl).total_seconds()
        for key, task in unique.items():
            if key not in claimed:
                recorder.record(task, error=CLAIMED_ELSEWHERE, retry_delay=CLAIM_DEFERRAL, consume_attempt=False)
        keep_locked: set[str] = set()
        mine: list[Task] = []
        try:
            mine, leased = await self._not_yet_committed([t for k, t in unique.items() if k in claimed], result,
                                                         runner_id, recorder, claim_ttl)
            mine = await self._hold_until_due(mine, recorder)
            watched = {t.key for t in mine if t.key in leased and self._cancellable(t)}
            self.control.begin(mine, runner_id, leased, watched)
            if self.on_processing is not None:
                await self.on_processing([t for t in mine if t.entity and not t.retry_count])
            async with self.control.watching(sorted(watched)):
                await self._run_groups(mine, recorder, runner_id, result, list(unique.values()))
            keep_locked = {t.key for t in result.handed_off}
            for task in mine:
                if task.key not in recorder.outcomes and task.key not in keep_locked:
                    recorder.record(task, error=FORGOTTEN)
            result.outcomes = list(recorder.outcomes.values())
            result.new_tasks = recorder.new_tasks
            result.flows = recorder.flows
            await self.gate.flush_waiting()
            return result
        finally:
            await self.control.settle()
            self.control.end(t.key for t in mine if t.key not in keep_locked)
            await self._release([k for k in claimed if k not in keep_locked], runner_id)

    async def _run_groups(self, mine: list[Task], recorder: RunRecorder, runner_id: str, result: RunResult,
                          batch: list[Task]) -> None:
        """Run each (queue, type) group of `mine` with its executor (`batch`: every task of the
        batch in order, those already deferred included, for ordered keys)."""
        for (queue_id, task_type), group in _group(mine).items():
            executor = self.registry.get_executor(queue_id, task_type) or self.builtins.get(task_type)
            if executor is None:
                for task in group:
                    recorder.record(task, error=f"no executor registered for ({queue_id!r}, {task_type!r})",
                                    retryable=False).verdict = Verdict.IGNORED
                continue
            runnable = await self.gate.screen(executor, self._validated(executor, group, recorder), recorder)
            if isinstance(executor, BatchTaskExecutor):
                async with self.gate.admit(executor, runnable, recorder, runner_id) as admitted:
                    await self._run_batch(executor, admitted, recorder, runner_id)
            elif executor.options.ordered:
                await self._run_ordered(executor, runnable, recorder, runner_id,
                                        [t for t in batch if (t.queue_id, t.type) == (queue_id, task_type)])
            elif executor.parallel:
                await self._run_parallel(executor, runnable, recorder, runner_id)
            else:
                await self._run_sequential(executor, runnable, recorder, runner_id, result)

    def _cancellable(self, task: Task) -> bool:
        executor = self.registry.get_executor(task.queue_id, task.type)
        return bool(executor and executor.options.cancellable)

    def _fits(self, executor: Executor, tasks: Sequence[Task], recorder: RunRecorder) -> bool:
        """Whether a run with the executor's time limit may start before the caller's deadline.
        If not, the tasks are handed back (sent again, using no attempt: the next invocation
        starts them with its full time), or, when the limit is longer than a whole invocation,
        fail with TaskTimeoutError (retried like any failure, then final: never a loop)."""
        limit, left = executor.options.timeout, recorder.seconds_left()
        if limit is None or left is None or limit <= left:
            return True
        for task in tasks:
            if recorder.budget is not None and limit > recorder.budget:
                recorder.record(task, error=TaskTimeoutError(
                    f"its timeout of {limit:g} s is longer than the {recorder.budget:.0f} s its worker's invocation "
                    "has: lower the executor's timeout or raise the function's"))
            else:
                recorder.record(task, error=f"handed back: its time limit of {limit:g} s passes the {left:.0f} s "
                                "left to this invocation; sent again without using an attempt",
                                retry_delay=0.0, consume_attempt=False)
        return False

    async def _cancel_asked(self, executor: Executor, tasks: Sequence[Task], recorder: RunRecorder) -> bool:
        """Record as cancelled, and never start, the tasks of a cancellable executor for which a
        cancel was asked after their run took its lease (they waited in the batch); whether any."""
        if not executor.options.cancellable:
            return False
        asked = False
        for task in tasks:
            reason = await self.control.asked_before_start(task)
            if reason is not None:
                recorder.record(task, cancelled=reason)
                asked = True
        return asked

    async def _limited(self, executor: Executor, call: Awaitable[Any]) -> Any:
        """Await an executor's call within its time limit: past it, the call is cancelled and
        TaskTimeoutError raised (a TimeoutError of the executor's own passes through as it is)."""
        limit = executor.options.timeout
        if limit is None:
            return await call
        try:
            async with asyncio.timeout(limit) as scope:
                return await call
        except TimeoutError:
            if scope.expired():
                raise TaskTimeoutError(f"ran longer than its timeout of {limit:g} s; stopped") from None
            raise

    async def _hold_until_due(self, tasks: list[Task], recorder: RunRecorder) -> list[Task]:
        """Tasks meant to wait (due after they were created) never run before they are due: one
        due within MAX_HOLD is waited for, one due later is deferred until then. A task due at
        its creation runs as it comes, whatever the clock of the producer that added it."""
        now = self.clock.now()
        early = {t.key: (t.execute_at - now).total_seconds() for t in tasks
                 if t.execute_at and t.created_at and t.execute_at > max(now, t.created_at)}
        if not early:
            return tasks
        for task in tasks:
            wait = early.get(task.key, 0.0)
            if wait > MAX_HOLD.total_seconds():
                recorder.record(task, error=ARRIVED_EARLY, retry_delay=wait, consume_attempt=False)
        held = [wait for wait in early.values() if wait <= MAX_HOLD.total_seconds()]
        if held:
            await self.clock.sleep(max(held))
        return [t for t in tasks if early.get(t.key, 0.0) <= MAX_HOLD.total_seconds()]

    async def release_leases(self, tasks: Sequence[Task], owner: str) -> None:
        """Handed-back tasks' run leases end now, so their redelivered records run at once (a
        release that fails ends at the lease's deadline)."""
        mine = [t for t in tasks if usable_id(t.id) and self.has_row(t)]
        if self.storage is None or not mine:
            return
        try:
            await self.storage.release_leases(mine, owner)
        except Exception:
            log.exception("could not release %d run leases; they end at their deadline", len(mine))

    async def _release(self, keys: list[str], owner: str) -> None:
        """A claim that could not be released expires with its TTL; the batch's outcomes stand."""
        try:
            await self.locks.release(keys, owner)
        except Exception:
            log.exception("could not release %d claims; they expire with their TTL", len(keys))

    async def _not_yet_committed(self, tasks: list[Task], result: RunResult, owner: str, recorder: RunRecorder,
                                 claim_ttl: timedelta | None) -> tuple[list[Task], set[str]]:
        """Drop tasks whose row shows this attempt already committed (final, or a later attempt
        recorded): a redelivered batch never runs a committed attempt again. Take the run lease
        of the rest, until this run's deadline (`claim_ttl`, a Lambda's remaining time, else
        the stale window); one whose lease another live run holds is deferred until that lease
        ends, one whose row holds a cancel request ends cancelled. Rows are read for tasks that
        have one by design: stored (force_store), of an executor that stores failures or gives
        each task a row (keep_result, cancellable), or every task with `history`."""
        stored = [t for t in tasks if self.has_row(t)]
        if self.storage is None or not stored:
            return tasks, set()
        rows = {r.key: r for r in await self.storage.get([t.key for t in stored])}
        done = {t.key for t in stored if (row := rows.get(t.key)) is not None and (
            row.status.is_terminal or _attempt(row) > _attempt(t))}
        result.superseded += [t for t in tasks if t.key in done]
        result.committed_rows += [rows[k] for k in done if rows[k].status.is_terminal]
        for task in stored:  # a cancel asked while an earlier attempt ran: this one never starts
            if task.key not in done and (reason := rows[task.key].cancel_requested if task.key in rows else None):
                recorder.record(task, cancelled=reason)
                done.add(task.key)
        to_lease = [t for t in stored if t.key in rows and t.key not in done]
        now = self.clock.now()
        until = now + (claim_ttl or self.stale_after)
        leased = (await self.storage.take_leases(to_lease, owner, now, now - self.stale_after, until)
                  if to_lease else set())
        for task in to_lease:  # a live run holds it: look again once that run must have ended
            if task.key not in leased:
                ends = rows[task.key].lease_until  # none: a lease of an earlier version, for the stale window
                wait = (max((ends - now).total_seconds(), 0.0) + 1 if ends is not None
                        else self.stale_after.total_seconds())
                recorder.record(task, error=CLAIMED_ELSEWHERE, consume_attempt=False,
                                retry_delay=min(wait, self.stale_after.total_seconds()))
        refused = {t.key for t in to_lease} - leased
        return [t for t in tasks if t.key not in done and t.key not in refused], leased

    def has_row(self, task: Task) -> bool:
        """Whether the task may have a row (so its runs read it and take its lease)."""
        return self.registry.has_row(task, self.history)

    def _validated(self, executor: Executor, group: list[Task], recorder: RunRecorder) -> list[Pair]:
        """A pair for each task whose payload fits the executor's model; the rest fail for good
        (retrying cannot fix a malformed payload), with an error that says what is wrong
        without quoting the payload's values."""
        model = executor.options.payload_model
        if model is None:
            return [(t, t) for t in group]
        valid = []
        for task in group:
            try:
                valid.append((task, task.model_copy(update={"payload": model.model_validate(task.payload)})))
            except ValidationError as exc:
                recorder.record(task, retryable=False, error=(
                    f"payload does not match {model.__name__}: {describe_validation_error(exc)}"))
        return valid

    def _actions(
        self, recorder: RunRecorder, scope: Mapping[str, Task], parent_key: str | Callable[[], str],
        log_context: Mapping[str, str] | None,
    ) -> ExecutorActions:
        return ExecutorActions(recorder, scope, parent_key, check_task=self.check_task,
                               flow_starter=self.flow_starter, log_context=log_context, barriers=self.barriers,
                               control=self.control)

    async def _started(self, task: Task, recorder: RunRecorder, consumer_id: str) -> None:
        now = self.clock.now()
        recorder.started_at[task.key] = now
        if self.lifecycle.wants("on_task_started"):
            max_retries = self.registry.max_retries(task.retries, task.queue_id, task.type)
            queued = max(((now - (task.created_at or now)).total_seconds() * 1000), 0.0)
            ctx = self.lifecycle.context(task, max_retries, now, consumer_id)
            await self.lifecycle.task("on_task_started",
                                      TaskStarted(**ctx, started_at=now, queued_duration_ms=queued))

    async def _call_single(
        self, executor: SingleTaskExecutor, pair: Pair, recorder: RunRecorder, consumer_id: str
    ) -> None:
        """Returning is reporting: a run that returns without a report succeeds with what it
        returned; raising fails it (TaskCancelledError ends it cancelled)."""
        task, given = pair
        if not self._fits(executor, [task], recorder) or await self._cancel_asked(executor, [task], recorder):
            return
        await self._started(task, recorder, consumer_id)
        user_ctx = task.metadata.log_context
        actions = self._actions(recorder, {task.key: task}, _attempt_key(task), user_ctx)
        raised: BaseException | None = None
        with self.tracing.execution([task], _step_traces(task)) as span, \
                log_context_scope(runtime_context(user_ctx, task.key, task.type, self.lifecycle.worker_id)):
            try:
                returned = await self._limited(executor, executor.fn(given, actions))
            except TaskCancelledError as exc:
                if task.key not in recorder.outcomes:
                    recorder.record(task, cancelled=exc.reason or self.control.cancel_reason(task.key) or "")
            except Exception as exc:  # noqa: BLE001 - an executor's crash is its task's failure
                raised = exc
                if task.key not in recorder.outcomes:
                    recorder.record(task, error=exc)
                log.warning("executor of %s raised for task %s: %r", task.type, task.key, exc)
            else:
                if task.key not in recorder.outcomes:
                    recorder.record(task, succeeded=True, result=returned)
            _traced(span, [recorder.outcomes.get(task.key)], raised)

    async def _run_parallel(
        self, executor: SingleTaskExecutor, pairs: list[Pair], recorder: RunRecorder, consumer_id: str
    ) -> None:
        for start in range(0, len(pairs), executor.chunk_size):
            await self._run_started(executor, pairs[start:start + executor.chunk_size], recorder, consumer_id)

    async def _run_started(self, executor: SingleTaskExecutor, pairs: list[Pair], recorder: RunRecorder,
                           consumer_id: str) -> None:
        """Start the pairs at once, those of them their executor's limits admit now."""
        async with self.gate.admit(executor, pairs, recorder, consumer_id) as admitted:
            if len(admitted) == 1:  # one at a time (sequential executors): no task to schedule
                await self._call_single(executor, admitted[0], recorder, consumer_id)
            else:
                await asyncio.gather(*(self._call_single(executor, p, recorder, consumer_id) for p in admitted))

    async def _run_ordered(self, executor: SingleTaskExecutor, pairs: list[Pair], recorder: RunRecorder,
                           consumer_id: str, in_batch: list[Task]) -> None:
        """Ordered keys: each key's tasks one at a time, `chunk_size` keys at once when parallel
        (`in_batch`: the executor's tasks of the batch in order, those deferred before included)."""
        async def one(unit: list[Pair]) -> None:
            await self._run_started(executor, unit, recorder, consumer_id)

        await self.gate.run_ordered(pairs, recorder, one, executor.chunk_size if executor.parallel else 1, in_batch)

    async def _run_batch(
        self, executor: BatchTaskExecutor, pairs: list[Pair], recorder: RunRecorder, consumer_id: str
    ) -> None:
        if not pairs:
            return
        tasks = [task for task, _ in pairs]
        if not self._fits(executor, tasks, recorder):
            return
        if await self._cancel_asked(executor, tasks, recorder):
            pairs = [(t, g) for t, g in pairs if t.key not in recorder.outcomes]
            tasks = [task for task, _ in pairs]
            if not pairs:
                return
        if not self.lifecycle.wants("on_task_started"):
            recorder.batch_started_at = self.clock.now()
        else:
            for task in tasks:
                await self._started(task, recorder, consumer_id)
        scope = {t.key: t for t in tasks}

        def parent() -> str:
            return derived_id("batch", *sorted(f"{k}:{t.retry_count}" for k, t in scope.items()))

        actions = self._actions(recorder, scope, parent, None)
        ctx = {"worker_id": self.lifecycle.worker_id, "batch_size": str(len(tasks))}
        raised: BaseException | None = None
        with self.tracing.execution(tasks) as span, log_context_scope(ctx):
            try:
                await self._limited(executor, executor.fn([given for _, given in pairs], actions))
            except TaskCancelledError as exc:
                for task in tasks:
                    if task.key not in recorder.outcomes:
                        recorder.record(task, cancelled=exc.reason or self.control.cancel_reason(task.key) or "")
            except Exception as exc:  # noqa: BLE001 - the crash fails every task not yet reported
                raised = exc
                log.warning("batch executor of %s raised: %r", tasks[0].type, exc)
                for task in tasks:
                    if task.key not in recorder.outcomes:
                        recorder.record(task, error=exc)
            _traced(span, [recorder.outcomes.get(t.key) for t in tasks], raised)

    async def _run_sequential(
        self, executor: SingleTaskExecutor, pairs: list[Pair], recorder: RunRecorder,
        consumer_id: str, result: RunResult,
    ) -> None:
        for pair in pairs:
            if executor.options.handoff_timeout is None:
                await self._run_started(executor, [pair], recorder, consumer_id)
            else:
                await self._run_with_handoff(executor, pair, recorder, consumer_id, result)

    async def _run_with_handoff(
        self, executor: SingleTaskExecutor, pair: Pair, recorder: RunRecorder,
        consumer_id: str, result: RunResult,
    ) -> None:
        """Run the task with its own recorder; if it outlives `timeout`, hand it to the async
        manager and move on. Whatever it reports later is committed through the same path."""
        task = pair[0]
        timeout = executor.options.handoff_timeout or 0.0
        own = RunRecorder(self.clock, deadline=recorder.deadline, budget=recorder.budget)
        job = asyncio.ensure_future(self._call_single(executor, pair, own, consumer_id))
        await asyncio.wait({job}, timeout=timeout)
        if not job.done() and self.async_manager is None:
            log.warning("task %s passed its handoff_timeout but no AsyncTaskManager is configured; "
                        "waiting for it in the batch", task.key)
            await job
        if job.done():
            _merge(own, recorder)
            return
        assert self.async_manager is not None
        accepted = self.async_manager.handoff(
            task, job, lambda: self._finish_async(task, own, job, consumer_id), timeout * 2
        )
        if accepted:
            result.handed_off.append(task)
            return
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        recorder.record(task, error="async task manager is full; retried without using an attempt",
                        retry_delay=FULL_MANAGER_RETRY_DELAY, consume_attempt=False)

    async def _finish_async(
        self, task: Task, own: RunRecorder, job: asyncio.Future[Any], consumer_id: str
    ) -> None:
        """Commit a handed-off task's outcome. If the commit fails, the task is reported
        uncommitted (`on_async_uncommitted`), for redelivery: never dropped."""
        self.control.end([task.key])
        if task.key not in own.outcomes:
            own.record(task, error="abandoned: the async task manager stopped it (timeout or shutdown)")
        late = RunResult(outcomes=list(own.outcomes.values()), new_tasks=own.new_tasks, flows=own.flows)
        try:
            if self.commit_async is not None:
                await self.commit_async(late, consumer_id)
        except Exception:
            log.exception("late commit of handed-off task %s failed; reported for redelivery", task.key)
            if self.on_async_uncommitted is not None:
                self.on_async_uncommitted(task)
            await self.release_leases([task], consumer_id)
        finally:
            await self._release([task.key], consumer_id)


def _traced(span: RunSpan, outcomes: Sequence[Outcome | None], raised: BaseException | None) -> None:
    """End a run's span with how it went (a batch call's, with its first failure), and keep the
    span's context on the outcomes of flow steps: their join's span links it."""
    span.ended(next((o for o in outcomes if o is not None and not o.succeeded), outcomes[0]), raised)
    for outcome in outcomes:
        if outcome is not None and outcome.task.flow_meta is not None:
            outcome.trace = span.traceparent


def _step_traces(task: Task) -> list[str]:
    """A join's links: the traces of its flow's steps, when they came inline in its payload."""
    if task.flow_meta is None or not task.flow_meta.is_join or not isinstance(task.payload, dict):
        return []
    steps = (task.payload.get("flow_results") or {}).get("steps") or []
    return [str(step["trace"]) for step in steps if isinstance(step, dict) and step.get("trace")]


def _attempt(task: Task) -> tuple[int, int]:
    return task.execution_stats.retry_count, task.execution_stats.deferrals


def _attempt_key(task: Task) -> str:
    return f"{task.key}:{task.retry_count}"


def _most_advanced(tasks: Sequence[Task], superseded: list[Task]) -> dict[str, Task]:
    """One copy per task id, the most advanced attempt (a batch can hold an attempt and its own
    retry when Lambda redelivers from an old checkpoint). A record without a usable id gets one
    derived from its content, so its redelivery replays into the same task."""
    unique: dict[str, Task] = {}
    for task in tasks:
        if not usable_id(task.id):
            task = task.model_copy(update={"id": _content_id(task)})
        current = unique.get(task.key)
        if current is None:
            unique[task.key] = task
        elif _attempt(task) > _attempt(current):
            unique[task.key] = task
            superseded.append(current)
        else:
            superseded.append(task)
    return unique


def _content_id(task: Task) -> str:
    try:
        body = encode_task(task.model_copy(update={"id": None}))
    except TaskRejectedError:
        body = repr(task).encode()
    return derived_id("record", hashlib.sha256(body).hexdigest())


def _group(tasks: Sequence[Task]) -> dict[tuple[str, str], list[Task]]:
    groups: dict[tuple[str, str], list[Task]] = {}
    for task in tasks:
        groups.setdefault((task.queue_id, task.type), []).append(task)
    return groups


def _merge(source: RunRecorder, target: RunRecorder) -> None:
    target.outcomes.update(source.outcomes)
    target.new_tasks.extend(source.new_tasks)
    target.flows.extend(source.flows)
    target.started_at.update(source.started_at)
