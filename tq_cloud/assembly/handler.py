"""`TaskHandler`: the engine's entry point. It wires the router, runner and commit pipeline from
injected ports, and offers the operations everything else is built on: add tasks, process a
batch, send mature tasks. Consumption loops live in `worker.py`; Lambda handlers call
`process_records` directly."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from tq_cloud.assembly.worker import Worker
from tq_cloud.clock import Clock, SystemClock
from tq_cloud.core.codec import UndecodableRecord
from tq_cloud.core.commit import CommitBatch, CommitPipeline, CommitStep, Decider
from tq_cloud.core.commit_steps import NewTasksStep, RetriesStep, StatsStep, TallyStep, TerminalStep
from tq_cloud.core.emitter import LifecycleConfig, LifecycleEmitter
from tq_cloud.core.extensions import Tracing
from tq_cloud.core.redrive import Redriver, RedriveReport
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.core.resilience import RetryPolicy, retrying
from tq_cloud.core.routing import TaskRouter
from tq_cloud.core.runner import TaskRunner
from tq_cloud.core.sending import ExecutorRef, build_task
from tq_cloud.core.settings import HandlerSettings
from tq_cloud.core.stats import StatsBook
from tq_cloud.core.task_control import TaskControl
from tq_cloud.domain.events import BatchCompleted, BatchStarted, WorkerInfo, worker_info_fields
from tq_cloud.domain.outcomes import RunResult, Verdict
from tq_cloud.domain.tally import BatchTally
from tq_cloud.domain.task import EntityRef, Task
from tq_cloud.flow_control.debounce import DebounceArrivals
from tq_cloud.flow_control.gate import FlowGate
from tq_cloud.flows.builtins import flow_executors
from tq_cloud.flows.commit_steps import FlowBarrierStep, FlowInitStep
from tq_cloud.flows.starter import FlowStarter
from tq_cloud.ids import new_id
from tq_cloud.lifecycle.commit_step import LifecycleStep
from tq_cloud.ports.counters import TaskCounters
from tq_cloud.ports.lifecycle import (
    FlowLifecycleProvider,
    TaskLifecycleProvider,
    WorkerLifecycleProvider,
)
from tq_cloud.ports.locks import LockProvider
from tq_cloud.ports.notifications import NotificationProvider
from tq_cloud.ports.queue import MessageQueue
from tq_cloud.ports.storage import TaskPage, TaskQuery, TaskStorage
from tq_cloud.projections.sink import ProjectionConfig, ProjectionSink, ProjectionStep
from tq_cloud.schedules.firing import catch_up, pause_key, paused_mark, schedule_executors
from tq_cloud.tracing import default_tracing

if TYPE_CHECKING:
    from tq_cloud.asynctasks.manager import AsyncTaskManager
    from tq_cloud.ports.barrier import FlowBarrierProvider
    from tq_cloud.ports.delay import DelayLane
    from tq_cloud.ports.projections import EntityProjectionProvider
    from tq_cloud.ports.timer import Timer

log = logging.getLogger("tq_cloud.handler")


@dataclass(slots=True)
class BatchReport:
    """`not_committed` must be redelivered: committing their effects failed (transiently: a
    write that can never succeed fails its one task instead). Executor failures are committed
    (as retries or final failures), and so are tasks claimed elsewhere (deferred).

    Example:
        report = await handler.process_batch(tasks, "worker-1")
        redeliver = report.not_committed       # the Lambda handler reports these as batch item failures
    """

    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    exhausted: int = 0
    """Failed for good (stored failed, or discarded): the template's exhausted-tasks alarm counts these."""
    not_committed: list[Task] = field(default_factory=list)
    unrecorded: list[UndecodableRecord] = field(default_factory=list)
    error: BaseException | None = None
    tally: BatchTally = field(default_factory=BatchTally)
    """What the committed tasks did, per queue and type (the worker's EMF metrics)."""


class TaskHandler:
    """The engine for one app, put together from its ports: it sends tasks (`send`,
    `add_tasks`), processes batches (`process_batch`), and answers results, cancels, finds and
    re-drives. The Lambda handlers, the local runtime and `InMemoryStack` each build one.

    Example:
        handler = TaskHandler(queue=InMemoryQueue(), registry=app, storage=InMemoryAdapter(),
                              locks=InMemoryLockProvider())
        task = await handler.send(send, {"to": "a@b.c"})
    """
    def __init__(
        self,
        *,
        queue: MessageQueue,
        registry: TaskQueuesManager,
        storage: TaskStorage,
        locks: LockProvider,
        clock: Clock | None = None,
        settings: HandlerSettings | None = None,
        notifications: NotificationProvider | None = None,
        task_lifecycle: TaskLifecycleProvider | None = None,
        worker_lifecycle: WorkerLifecycleProvider | None = None,
        flow_lifecycle: FlowLifecycleProvider | None = None,
        lifecycle_config: LifecycleConfig | None = None,
        projections: EntityProjectionProvider | None = None,
        projection_config: ProjectionConfig | None = None,
        flow_barriers: FlowBarrierProvider | None = None,
        timer: Timer | None = None,
        async_manager: AsyncTaskManager | None = None,
        worker_id: str | None = None,
        extra_commit_steps: Sequence[CommitStep] = (),
        retry_policy: RetryPolicy | None = None,
        delay_lane: DelayLane | None = None,
        tracing: Tracing | None = None,
        counters: TaskCounters | None = None,
    ) -> None:
        """Example:
            handler = TaskHandler(queue=InMemoryQueue(), registry=app, storage=InMemoryAdapter(),
                                  locks=InMemoryLockProvider())
            await handler.add_tasks([Task(type="send", queue_id="email", payload={"to": "a@b.c"})])
        """
        policy = retry_policy or RetryPolicy()
        queue, storage, locks = retrying(queue, policy), retrying(storage, policy), retrying(locks, policy)
        flow_barriers = retrying(flow_barriers, policy) if flow_barriers is not None else None
        projections = retrying(projections, policy) if projections is not None else None
        timer = retrying(timer, policy) if timer is not None else None
        delay_lane = retrying(delay_lane, policy) if delay_lane is not None else None
        counters = retrying(counters, policy) if counters is not None else None
        self.queue = queue
        self.registry = registry
        self.storage = storage
        self.locks = locks
        self.clock = clock or SystemClock()
        self.settings = settings or HandlerSettings()
        self.notifications = notifications
        self.async_manager = async_manager
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{new_id()[:8]}"
        self.started_at = self.clock.now()
        self.lifecycle = LifecycleEmitter(
            worker_id=self.worker_id, task_provider=task_lifecycle, worker_provider=worker_lifecycle,
            flow_provider=flow_lifecycle, config=lifecycle_config,
        )
        self.stats = StatsBook(self.worker_id, self.settings, notifications)
        sink = ProjectionSink(projections, self.clock, projection_config) if projections else None
        tracing = tracing if tracing is not None else default_tracing()
        self.router = TaskRouter(
            queue, storage, registry, self.clock, self.lifecycle,
            immediate_window=self.settings.immediate_window,
            on_scheduled=sink.scheduled if sink else None, timer=timer, delay_lane=delay_lane,
            screen=DebounceArrivals(registry, storage), tracing=tracing,
        )
        self.timer = timer
        self.flows = None if flow_barriers is None else FlowBarrierStep(
            flow_barriers, self.router, self.clock, self.lifecycle, timer=timer, projections=sink)
        self.runner = TaskRunner(
            registry, locks, self.clock, self.lifecycle, check_task=self.router.check,
            flow_starter=FlowStarter(self.clock) if self.flows else None, async_manager=async_manager,
            on_processing=sink.processing if sink else None, lock_ttl=self.settings.lock_ttl,
            storage=storage, stale_after=self.settings.stale_after, barriers=flow_barriers,
            history=self.settings.history,
            gate=FlowGate(storage, self.clock, lambda t: registry.max_retries(t.retries, t.queue_id, t.type),
                          self.settings.stale_after),
            builtins={**flow_executors(self.clock, flow_barriers),
                      **schedule_executors(registry.schedules, storage, self.clock)},
            tracing=tracing,
        )
        self.pipeline = CommitPipeline(Decider(registry, self.clock, history=self.settings.history), self.clock, [
            RetriesStep(self.router),
            *([FlowInitStep(flow_barriers, self.lifecycle)] if flow_barriers is not None else []),
            NewTasksStep(self.router, storage),
            *([self.flows] if self.flows is not None else []),
            TerminalStep(storage, history=self.settings.history),
            *([ProjectionStep(sink)] if sink is not None else []),
            StatsStep(self.stats),
            LifecycleStep(self.lifecycle, registry),
            *extra_commit_steps,
            TallyStep(counters),
        ])
        self.redriver = Redriver(storage, queue, self.clock)
        self.control = TaskControl(storage, self.clock, self.pipeline, self.runner.control, self.flows)
        self.runner.commit_async = self._commit_async
        self._async_uncommitted: list[Task] = []
        self.runner.on_async_uncommitted = self._async_uncommitted.append

    def worker_info(self, queues: Sequence[str] = ()) -> WorkerInfo:
        return WorkerInfo(worker_id=self.worker_id, hostname=socket.gethostname(), pid=os.getpid(),
                          started_at=self.started_at, enabled_queues=tuple(queues))

    async def add_tasks(self, tasks: Sequence[Task], *, allow_unknown: bool = False) -> list[Task]:
        """Route tasks to the queue or the store (see routing.py); returns them with their ids.
        Raises TaskRejectedError naming the first task that breaks a limit, or whose (queue,
        type) no executor of this handler's registry takes (UnknownTaskTypeError), before
        anything of the call is written; raises on a queue or store failure (nothing of the
        failing part is sent). A producer that sends to executors it does not register says so:
        `allow_unknown=True` (the consumer stores a task nobody executes as `ignored`).

        Example:
            [task] = await handler.add_tasks([Task(type="send", queue_id="email", payload={"to": "a@b.c"})])
        """
        return (await self.router.dispatch(tasks, allow_unknown=allow_unknown))[0]

    async def send(self, executor: ExecutorRef, payload: Any, *, delay: timedelta | None = None,
                   at: datetime | None = None, partition_key: str | None = None, entity: EntityRef | None = None,
                   id: str | None = None, dedup_key: str | None = None) -> Task:
        """Send one task to `executor` (the handle `@app.task` returned, or a (queue_id,
        task_type) pair this handler's registry knows); the task sent, with its id. The payload
        (a pydantic model or a dict) is validated against the executor's model, and every limit
        checked, before anything is sent: InvalidPayloadError names each wrong field,
        UnknownTaskTypeError an executor the registry lacks, InvalidDelayError a bad `delay`/`at`
        (give one of them; a time past is now). With `id`, sending again is idempotent for a
        task with a row (set-if-absent), and a redelivery is the same task everywhere. With
        `dedup_key`, a second send of the same key within the executor's `dedup_window` sends
        nothing and returns the first task (its id).

        Example:
            task = await handler.send(send_email, Email(to="a@example.com"), delay=timedelta(minutes=5))
            await handler.send(("email", "send"), {"to": "b@example.com"}, id="welcome-b")
        """
        task = build_task(self.registry, executor, payload, self.clock.now(), delay=delay, at=at,
                          partition_key=partition_key, entity=entity, id=id, dedup_key=dedup_key)
        return (await self.add_tasks([task]))[0]

    async def result(self, task_id: str, timeout: float = 0.0) -> Any:  # noqa: ASYNC109 - the API's name
        """What an executed task returned (or passed to `actions.success`): its executor keeps
        it for `keep_result`. Waits up to `timeout` seconds for a task not finished yet (looking
        with back-off, 50 ms doubling to 2 s), then raises TimeoutError. Raises TaskFailedError
        (with `.error`) for a task that failed for good, TaskCancelledError for a cancelled one,
        and KeyError (ResultNotKeptError) for an unknown id or a result not kept (no
        `keep_result`, expired, or dropped: not JSON or over 256 KB).

        Example:
            task = await handler.send(build_report, {"month": "2026-11"})
            url = await handler.result(task.key, timeout=60)
        """
        return await self.control.result(task_id, timeout)

    async def cancel(self, task_id: str, reason: str = "") -> bool:
        """Stop a task. One that has not started (delayed, in the delay lane, on the stream,
        waiting for a retry) never runs: its status becomes `cancelled` with `reason`, and this
        returns True. A running one sees `actions.is_cancelled(task)` turn True (True is
        returned); whatever it then reports wins, and no later attempt starts. A finished or
        unknown task: False, nothing changed. Only tasks with a row can be found: those of
        `cancellable` (or `keep_result`) executors always, others while they wait in the store.

        Example:
            if await handler.cancel(task.key, reason="sent by mistake"):
                print("it will not run")
        """
        return await self.control.cancel(task_id, reason)

    async def cancel_flow(self, flow_id: str, reason: str = "flow cancelled") -> bool:
        """Close an active flow as `cancelled` (once: True for the call that closed it) and
        cancel its steps that have not started; it gets no join. Steps without a row (of
        executors neither `cancellable` nor `keep_result`) may still run; their results are
        not counted.

        Example:
            await handler.cancel_flow(flow_id)
        """
        return await self.control.cancel_flow(flow_id, reason)

    async def pause_schedule(self, name: str, paused: bool = True) -> None:
        """Pause a declared schedule (its firings run nothing, and the sweeper catches none up),
        or resume it (`paused=False`: occurrences from now on run; those of the pause do not).
        On AWS, `tq-cloud schedules pause|resume` also disables or enables the deployed schedule.

        Example:
            await handler.pause_schedule("nightly-report")
        """
        if name not in self.registry.schedules:
            raise KeyError(f"no schedule {name!r} is declared ({', '.join(sorted(self.registry.schedules)) or 'none'})")
        key = pause_key(name)
        mark = (await self.storage.get_marks([key])).get(key)
        await self.storage.set_mark(key, paused_mark(mark, paused, self.clock.now()))

    async def find(self, task_id: str) -> Task | None:
        """A stored task (status, attempts, times, last error, result, redrives), or None.

        Example:
            task = await handler.find("order-17")
        """
        found = await self.storage.get([task_id])
        return found[0] if found else None

    async def list_tasks(self, query: TaskQuery) -> TaskPage:
        """A page of stored tasks in one status, newest first (see TaskQuery).

        Example:
            page = await handler.list_tasks(TaskQuery(status=TaskStatus.FAILED, queue="email"))
        """
        return await self.storage.list_tasks(query)

    async def redrive(self, ids: Sequence[str]) -> list[Task]:
        """Send failed or ignored tasks back to run as a new attempt; the ones sent. Re-driving
        the same ids again sends nothing (see core/redrive.py).

        Example:
            sent = await handler.redrive(["order-17", "order-18"])
        """
        return (await self.redriver.redrive(ids)).sent

    async def redrive_matching(self, query: TaskQuery, limit: int = 1000) -> list[Task]:
        """Re-drive up to `limit` failed (or ignored) tasks that `query` lists, a page at a time.

        Example:
            sent = await handler.redrive_matching(TaskQuery(status=TaskStatus.FAILED, type="send"))
        """
        return (await self.redriver.redrive_matching(query, limit)).sent

    async def redrive_report(self, ids: Sequence[str] | None = None, query: TaskQuery | None = None,
                             limit: int = 1000) -> RedriveReport:
        """Like `redrive` (by `ids`) or `redrive_matching` (by `query`), with the reason for
        each id it left as it was.

        Example:
            report = await handler.redrive_report(["order-17"])
            for task_id, why in report.skipped.items(): print(task_id, why)
        """
        if query is not None:
            return await self.redriver.redrive_matching(query, limit)
        return await self.redriver.redrive(ids or [])

    async def post_process(self, result: RunResult, consumer_id: str | None = None) -> CommitBatch:
        return await self.pipeline.commit(result, consumer_id)

    async def process_batch(self, tasks: Sequence[Task], consumer_id: str = "direct",
                            claim_ttl: timedelta | None = None, budget: timedelta | None = None) -> BatchReport:
        """Run a batch and commit its effects. Never raises for task-level problems; if the
        commit fails transiently, every task of the batch is reported not committed, for
        redelivery. `claim_ttl` bounds the claims it takes (a Lambda's remaining time), and
        no task starts whose time limit passes it; `budget` is the whole invocation's time."""
        report = BatchReport(processed=len(tasks))
        if not tasks:
            return report
        started = self.clock.now()
        info = self.worker_info()
        if self.lifecycle.worker_provider is not None:
            types = tuple(sorted({t.type for t in tasks}))
            await self.lifecycle.worker("on_batch_started", BatchStarted(
                **worker_info_fields(info), batch_size=len(tasks), task_types=types))
        result: RunResult | None = None
        try:
            result = await self.runner.run(consumer_id, tasks, claim_ttl, budget)
            batch = await self.pipeline.commit(result, consumer_id, started)
        except Exception as exc:
            log.exception("batch of %d tasks not committed; it will be redelivered", len(tasks))
            report.error = exc
            report.not_committed = list(tasks)
            running = {t.key for t in result.handed_off} if result is not None else set()
            # a handed-off task still runs: its lease stays until its late commit or deadline
            await self.runner.release_leases([t for t in tasks if t.id not in running], consumer_id)
            await self.stats.error(exc, "process_batch")
        else:
            ran = [o for o in batch.outcomes if o.verdict not in (Verdict.IGNORED, Verdict.CANCELLED)]
            report.succeeded = sum(1 for o in ran if o.succeeded)
            report.failed = len(ran) - report.succeeded
            report.exhausted = sum(1 for o in ran if o.verdict in (Verdict.FAILED, Verdict.DISCARDED))
            report.tally = batch.tally or BatchTally()
        if self.lifecycle.worker_provider is not None:
            duration = (self.clock.now() - started).total_seconds() * 1000
            await self.lifecycle.worker("on_batch_completed", BatchCompleted(
                **worker_info_fields(info), batch_size=len(tasks), succeeded=report.succeeded,
                failed=report.failed, duration_ms=duration))
        return report

    async def process_records(
        self, records: Sequence[Task | UndecodableRecord], consumer_id: str = "direct",
        claim_ttl: timedelta | None = None, budget: timedelta | None = None,
    ) -> BatchReport:
        """Like process_batch, for transports that deliver raw records: undecodable ones are
        stored as failed tasks (reported back if even that fails), the rest are processed."""
        poison = [r for r in records if isinstance(r, UndecodableRecord)]
        report = await self.process_batch([r for r in records if isinstance(r, Task)], consumer_id, claim_ttl,
                                          budget)
        error = await self.record_undecodable(poison)
        if error is not None:
            report.unrecorded = poison
            report.error = report.error or error
        return report

    async def record_undecodable(self, poison: Sequence[UndecodableRecord]) -> Exception | None:
        """Store records that are not tasks as failed tasks (once each: their ids derive from
        the records'); the error if even that failed, so that the caller has them delivered again."""
        if not poison:
            return None
        now = self.clock.now()
        log.error("%d undecodable records stored as failed tasks", len(poison))
        try:
            await self.storage.mark_failed([p.as_failed_task(now) for p in poison], now)
        except Exception as exc:
            log.exception("could not record %d undecodable records", len(poison))
            return exc
        return None

    def take_async_uncommitted(self) -> list[Task]:
        """Handed-off tasks whose late commit failed: the caller redelivers them (the Lambda
        handler reports their records as batch item failures; a pulling worker requeues them)."""
        taken, self._async_uncommitted[:] = list(self._async_uncommitted), []
        return taken

    async def _commit_async(self, result: RunResult, consumer_id: str) -> None:
        """A handed-off task's late commit, tried up to three times (every write is idempotent);
        if all fail, the runner reports the task for redelivery."""
        for attempt in range(3):
            try:
                await self.pipeline.commit(result, consumer_id)
                return
            except Exception as exc:
                if attempt == 2:
                    await self.stats.error(exc, "async_commit")
                    raise
                log.warning("late commit failed (%r); trying again", exc)

    async def start_consuming(self, queue_id: str, stop: asyncio.Event) -> None:
        """Consume one queue until `stop` is set (see worker.py)."""
        await Worker(self).consume(queue_id, stop)

    async def task_process_server(self, stop: asyncio.Event, queues: Sequence[str] | None = None) -> None:
        """Consume all queues, sweep mature tasks and send heartbeats until `stop` is set."""
        await Worker(self).serve(stop, queues)

    async def process_mature_tasks(self, deadline: datetime | None = None) -> int:
        """Recover stale `processing` rows, then send every due `scheduled` task to the queue,
        a wave at a time. With a `deadline` (a Lambda invocation's end, less a margin) no step
        starts after it: a wave claimed is always sent, never left claimed until stale recovery.

        Example:
            sent = await handler.process_mature_tasks(deadline=clock.now() + timedelta(seconds=50))
        """
        def time_left() -> bool:
            return deadline is None or self.clock.now() < deadline

        now = self.clock.now()
        recovered = await self.storage.recover_stale(now - self.settings.stale_after, now)
        if recovered:
            log.warning("recovered %d stale processing tasks", recovered)
        sent = await self.timer.fire_due(self.clock.now()) if self.timer is not None and time_left() else 0
        if self.registry.schedules and time_left():
            missed = await catch_up(list(self.registry.schedules.values()), self.storage, self.clock.now())
            sent += len((await self.router.dispatch(missed, strict=False))[0])
        while time_left():
            n = await self.router.dispatch_mature(self.settings.mature_batch_limit)
            sent += n
            if n < self.settings.mature_batch_limit:
                return sent
        log.warning("sweep stopped at its deadline; the next sweep sends the rest")
        return sent
