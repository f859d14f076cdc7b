"""The worker and sweeper Lambda handlers, called as Lambda calls them, against moto's server."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.aws_support import CallFaults, aws_resources, fresh_settings
from tq_cloud import ExecutorActions, ManualClock, Task, TaskStatus
from tq_cloud.aws_lambda import kinesis_handler, sweeper_handler
from tq_cloud.backends.aws import AwsSettings
from tq_cloud.core.codec import encode_task
from tq_cloud.core.registry import TaskQueuesManager

SAMPLE = json.loads((Path(__file__).resolve().parents[2] / "events" / "kinesis-get-records.json").read_text())


class FakeContext:
    """Lambda's context: the remaining time drops by `per_call_ms` each time it is asked."""

    def __init__(self, remaining_ms: float = 900_000, per_call_ms: float = 0) -> None:
        self.remaining_ms = remaining_ms
        self.per_call_ms = per_call_ms

    def get_remaining_time_in_millis(self) -> int:
        value = self.remaining_ms
        self.remaining_ms -= self.per_call_ms
        return int(value)


def event_of(*tasks: Task) -> dict[str, Any]:
    records = []
    for n, task in enumerate(tasks):
        record = copy.deepcopy(SAMPLE["Records"][0])
        record["kinesis"]["data"] = base64.b64encode(encode_task(task)).decode()
        record["kinesis"]["sequenceNumber"] = f"{n:056d}"
        record["kinesis"]["partitionKey"] = task.partition_key or task.key
        records.append(record)
    return {"Records": records}


@pytest.fixture
def settings(moto_endpoint: str) -> Iterator[AwsSettings]:
    settings = fresh_settings(moto_endpoint)

    async def create() -> None:
        async with aws_resources(settings):
            pass

    asyncio.run(create())
    yield settings


def app_with(runs: list[str]) -> TaskQueuesManager:
    app = TaskQueuesManager()

    @app.task("q", "t", retries=2, store_on_failure=True)
    async def ex(task: Task, actions: ExecutorActions) -> None:
        runs.append(task.key)
        if task.payload.get("fail"):
            actions.fail(task, "executor says no")
        else:
            actions.success(task, "ok")

    return app


def rows(handler: Any, *ids: str) -> dict[str, Task]:
    stack = handler.runtime._stack
    return {t.key: t for t in handler.runtime.run(stack.storage.get(list(ids)))}


def test_the_sample_event_parses_with_powertools_and_is_recorded_as_poison(settings: AwsSettings) -> None:
    from aws_lambda_powertools.utilities.data_classes import KinesisStreamEvent

    [record] = KinesisStreamEvent(SAMPLE).records
    assert record.kinesis.data_as_bytes() == b"Hello, this is a test 123."
    handler = kinesis_handler(app_with([]), settings)
    assert handler(SAMPLE, FakeContext()) == {"batchItemFailures": []}
    stack = handler.runtime._stack  # type: ignore[attr-defined]
    items = handler.runtime.run(stack.clients.dynamodb.scan(TableName=settings.tasks_table))["Items"]  # type: ignore[attr-defined]
    [poison] = handler.runtime.run(stack.storage.get([items[0]["id"]["S"]]))  # type: ignore[attr-defined]
    assert poison.status is TaskStatus.FAILED and poison.payload["data"] == "Hello, this is a test 123."


def test_executor_failures_are_retried_by_the_framework_not_reported(settings: AwsSettings) -> None:
    runs: list[str] = []
    handler = kinesis_handler(app_with(runs), settings)
    event = event_of(Task(id="ok", type="t", queue_id="q", payload={}),
                     Task(id="bad", type="t", queue_id="q", payload={"fail": True}))
    assert handler(event, FakeContext()) == {"batchItemFailures": []}
    assert runs == ["ok", "bad"]
    stored = rows(handler, "bad")
    assert stored["bad"].retry_count == 1 and stored["bad"].status is TaskStatus.SCHEDULED


def test_records_whose_commit_failed_are_reported(settings: AwsSettings) -> None:
    runs: list[str] = []
    handler = kinesis_handler(app_with(runs), settings, chunk_size=1)
    event = event_of(*(Task(id=f"t{i}", type="t", queue_id="q", payload={}, force_store=True) for i in range(3)))
    handler.runtime.run(handler.runtime.stack())  # type: ignore[attr-defined]
    for task in (Task.model_validate_json(base64.b64decode(r["kinesis"]["data"])) for r in event["Records"]):
        handler.runtime.run(handler.runtime._stack.storage.insert([task]))  # type: ignore[attr-defined]
    CallFaults(handler.runtime._stack.clients.dynamodb, "dynamodb.UpdateItem", "InternalServerError",  # type: ignore[attr-defined]
               times=100, match=lambda p: p.get("Key", {}).get("id", {}).get("S") == "t1")  # past every retry
    response = handler(event, FakeContext())
    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][1]["kinesis"]["sequenceNumber"]}]}
    assert rows(handler, "t0", "t2")["t0"].status is TaskStatus.EXECUTED


def test_a_transient_commit_failure_is_retried_within_the_invocation(settings: AwsSettings) -> None:
    runs: list[str] = []
    handler = kinesis_handler(app_with(runs), settings)
    event = event_of(*(Task(id=f"t{i}", type="t", queue_id="q", payload={}, force_store=True) for i in range(3)))
    handler.runtime.run(handler.runtime.stack())  # type: ignore[attr-defined]
    for task in (Task.model_validate_json(base64.b64decode(r["kinesis"]["data"])) for r in event["Records"]):
        handler.runtime.run(handler.runtime._stack.storage.insert([task]))  # type: ignore[attr-defined]
    faults = CallFaults(handler.runtime._stack.clients.dynamodb, "dynamodb.UpdateItem",  # type: ignore[attr-defined]
                        "InternalServerError", times=1)
    assert handler(event, FakeContext()) == {"batchItemFailures": []}
    assert faults.raised == 1 and set(runs) == {"t0", "t1", "t2"}
    assert len(runs) == 3, "the failed call is retried where it failed: no executor runs again"
    assert {t.status for t in rows(handler, "t0", "t1", "t2").values()} == {TaskStatus.EXECUTED}


def test_near_the_deadline_unstarted_records_are_reported(settings: AwsSettings) -> None:
    runs: list[str] = []
    handler = kinesis_handler(app_with(runs), settings, chunk_size=2, safety_margin_ms=10_000)
    event = event_of(*(Task(id=f"t{i}", type="t", queue_id="q", payload={}) for i in range(6)))
    response = handler(event, FakeContext(remaining_ms=35_000, per_call_ms=10_000))  # 35, then 25, 15, 5 s
    assert runs == ["t0", "t1", "t2", "t3"]
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [
        r["kinesis"]["sequenceNumber"] for r in event["Records"][4:]]


def test_sweeper_sends_due_tasks(settings: AwsSettings) -> None:
    from datetime import timedelta

    clock = ManualClock()
    runs: list[str] = []
    app = app_with(runs)
    worker = kinesis_handler(app, settings, clock=clock)
    sweeper = sweeper_handler(app, settings, clock=clock)
    later = Task(id="later", type="t", queue_id="q", payload={}, execute_at=clock.now() + timedelta(minutes=5))
    worker.runtime.run(worker.runtime.stack())  # type: ignore[attr-defined]
    worker.runtime.run(worker.runtime._stack.handler.add_tasks([later]))  # type: ignore[attr-defined]
    assert sweeper({}, FakeContext()) == {"sent": 0}
    sweeper.runtime.run(clock.advance(300))  # type: ignore[attr-defined]
    assert sweeper({}, FakeContext()) == {"sent": 1}
    assert rows(worker, "later")["later"].status is TaskStatus.PROCESSING


def test_disabled_metrics_neither_pile_up_nor_print(settings: AwsSettings, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Disabled, powertools keeps every value it is given and prints a metric once it holds 100
    of them (one batch with many commit retries gets there): a disabled worker adds none."""
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    handler = kinesis_handler(app_with([]), settings)
    for n in range(101):
        assert handler(event_of(Task(id=f"m{n}", type="t", queue_id="q", payload={})), FakeContext()) == {
            "batchItemFailures": []}
    assert '"_aws"' not in capsys.readouterr().out
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED")
    enabled = kinesis_handler(app_with([]), settings)
    enabled(event_of(Task(id="e", type="t", queue_id="q", payload={})), FakeContext())
    assert '"TasksSucceeded":[1.0]' in capsys.readouterr().out, "enabled metrics are printed as EMF"


def test_tasks_that_fail_for_good_are_counted_for_the_alarm(settings: AwsSettings, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """template.yaml's ExhaustedTasksAlarm watches TasksExhausted under the stack's service name:
    a failure with retries left is not counted, the last one is."""
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "my-stack")
    handler = kinesis_handler(app_with([]), settings)
    first = Task(id="x", type="t", queue_id="q", payload={"fail": True})
    handler(event_of(first), FakeContext())
    assert '"TasksExhausted":[0.0]' in capsys.readouterr().out
    handler(event_of(Task(id="y", type="t", queue_id="q", payload={"fail": True},
                             execution_stats={"retry_count": 2})), FakeContext())
    [emf] = [line for line in emf_lines(capsys.readouterr().out) if "TasksExhausted" in line]
    assert emf["TasksExhausted"] == [1.0] and emf["service"] == "my-stack"
    assert emf["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "tq-cloud"


def emf_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if '"_aws"' in line]


def test_each_queue_and_type_gets_its_metrics_and_the_batch_its_iterator_age(
        settings: AwsSettings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """One EMF line per (queue, type) a chunk committed, with dimensions CloudWatch can alarm and
    chart by: counts of each outcome, and every run's lateness and run time as values (CloudWatch
    computes their percentiles); the invocation's oldest record's age beside the service's figures."""
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "my-stack")
    clock = ManualClock()
    handler = kinesis_handler(app_with([]), settings, clock=clock)
    due = clock.now() - timedelta(seconds=3)
    event = event_of(*(Task(id=f"ok{i}", type="t", queue_id="q", payload={}, execute_at=due) for i in range(3)),
                     Task(id="bad", type="t", queue_id="q", payload={"fail": True}, execute_at=due),
                     Task(id="stray", type="nobody", queue_id="q", payload={}))
    for record in event["Records"]:
        record["kinesis"]["approximateArrivalTimestamp"] = clock.now().timestamp() - 42.5
    assert handler(event, FakeContext()) == {"batchItemFailures": []}
    lines = emf_lines(capsys.readouterr().out)
    per_pair = {(e["queue"], e["type"]): e for e in lines if "queue" in e}
    ran = per_pair[("q", "t")]
    assert ran["TasksExecuted"] == [3.0] and ran["TasksFailed"] == [1.0] and ran["TasksRetried"] == [1.0]
    assert ran["TasksDeadLettered"] == [0.0] and ran["LatenessMs"] == [3000.0] * 4 and len(ran["RunTimeMs"]) == 4
    assert ran["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["queue", "type", "service"]]
    assert per_pair[("q", "nobody")]["TasksCancelled"] == [1.0], "ignored: no executor for its type"
    assert "LatenessMs" not in per_pair[("q", "nobody")], "it did not run"
    [service] = [e for e in lines if "IteratorAgeMs" in e]
    assert service["IteratorAgeMs"] == [42500.0] and "queue" not in service


class SlowListener:
    """A lifecycle listener that takes a few turns of the loop, as a network call would."""

    def __init__(self) -> None:
        self.completed: list[str] = []

    async def on_task_completed(self, event: Any) -> None:
        for _ in range(5):
            await asyncio.sleep(0)
        self.completed.append(event.task_id)


def test_lifecycle_events_are_delivered_before_the_handler_returns(settings: AwsSettings) -> None:
    runs: list[str] = []
    listener = SlowListener()
    handler = kinesis_handler(app_with(runs), settings, task_lifecycle=listener)  # async mode, the default
    handler(event_of(*(Task(id=f"t{i}", type="t", queue_id="q", payload={}) for i in range(3))), FakeContext())
    assert sorted(listener.completed) == ["t0", "t1", "t2"], "Lambda freezes the environment after the return"


def test_claims_are_owned_by_the_invocation_and_end_with_its_time(settings: AwsSettings) -> None:
    seen: list[dict[str, Any]] = []
    settings = settings.model_copy(update={"distributed_claims": True})
    app = TaskQueuesManager()
    holder: dict[str, Any] = {}

    @app.task("q", "t")
    async def look(task: Task, actions: ExecutorActions) -> None:
        item = await holder["client"].get_item(TableName=settings.locks_table, Key={"lock_key": {"S": task.key}})
        seen.append(item["Item"])
        actions.success(task)

    handler = kinesis_handler(app, settings)
    holder["client"] = handler.runtime.run(handler.runtime.stack()).clients.dynamodb  # type: ignore[attr-defined]
    context = FakeContext(remaining_ms=60_000)
    context.aws_request_id = "req-1"  # type: ignore[attr-defined]
    before = time.time() * 1000
    handler(event_of(Task(id="a", type="t", queue_id="q", payload={})), context)
    [item] = seen
    assert item["owner"]["S"] == "lambda:req-1"
    assert int(item["expires_ms"]["N"]) <= before + 61_000, "a claim never outlives its invocation"


def aggregated_event(*groups: list[Task]) -> dict[str, Any]:
    """A Lambda event of KPL aggregated records, one per group of tasks."""
    from tq_cloud.backends.aws.kpl import aggregate

    records = []
    for n, group in enumerate(groups):
        record = copy.deepcopy(SAMPLE["Records"][0])
        data = aggregate([(t.partition_key or t.key, encode_task(t)) for t in group])
        record["kinesis"]["data"] = base64.b64encode(data).decode()
        record["kinesis"]["sequenceNumber"] = f"{n + 100:056d}"
        records.append(record)
    return {"Records": records}


def lambda_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records read from the stream, as Lambda's Kinesis event carries them."""
    out = []
    for r in records:
        record = copy.deepcopy(SAMPLE["Records"][0])
        record["kinesis"].update(data=base64.b64encode(r["Data"]).decode(), sequenceNumber=r["SequenceNumber"],
                                 partitionKey=r["PartitionKey"])
        out.append(record)
    return out


def deliver_as_lambda(handler: Any, rounds: int = 6, after_first: Any = None) -> list[dict[str, Any]]:
    """Feed the stream's records to `handler` as the event source mapping does, a shard at a
    time: a batch, then again from the first record named, else on to the records written
    since (`after_first` called after the first batch). The responses."""
    stack = handler.runtime._stack
    kinesis, stream = stack.clients.kinesis, stack.settings.stream_name

    async def unread(shard: str, after: str | None) -> list[dict[str, Any]]:
        kind = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": after} if after else \
            {"ShardIteratorType": "TRIM_HORIZON"}
        it = (await kinesis.get_shard_iterator(StreamName=stream, ShardId=shard, **kind))["ShardIterator"]
        records: list[dict[str, Any]] = []
        while it and (page := await kinesis.get_records(ShardIterator=it, Limit=10_000))["Records"]:
            records += page["Records"]
            it = page.get("NextShardIterator")
        return records

    shards = [s["ShardId"] for s in handler.runtime.run(kinesis.list_shards(StreamName=stream))["Shards"]]
    checkpoints: dict[str, str | None] = dict.fromkeys(shards)
    responses = []
    for _ in range(rounds):
        batches = [(shard, fresh) for shard in shards if (fresh := handler.runtime.run(unread(shard, checkpoints[shard])))]
        if not batches:
            break
        for shard, fresh in batches:
            response = handler({"Records": lambda_records(fresh)}, FakeContext())
            responses.append(response)
            if after_first is not None and len(responses) == 1:
                after_first()
            named = {f["itemIdentifier"] for f in response["batchItemFailures"]}
            first = next((i for i, r in enumerate(fresh) if r["SequenceNumber"] in named), len(fresh))
            if first:
                checkpoints[shard] = fresh[first - 1]["SequenceNumber"]
    return responses


def partial_failure_in_an_aggregate(settings: AwsSettings) -> tuple[list[str], list[dict[str, Any]], Any]:
    """Five tasks of one key in one aggregated record, the commit of the third (stored: its row's
    final write fails, past its retries) failing in the first delivery; the others have no row.
    What ran, the responses, the handler."""
    runs: list[str] = []
    handler = kinesis_handler(app_with(runs), settings, chunk_size=1)
    handler.runtime.run(handler.runtime.stack())  # type: ignore[attr-defined]
    stack = handler.runtime._stack  # type: ignore[attr-defined]
    tasks = [Task(id=f"a{i}", type="t", queue_id="q", payload={}, force_store=i == 2, partition_key="k")
             for i in range(5)]
    handler.runtime.run(stack.storage.insert([tasks[2].model_copy(update={"status": TaskStatus.PROCESSING})]))
    handler.runtime.run(stack.handler.router.queue.publish(tasks))
    faults = CallFaults(stack.clients.dynamodb, "dynamodb.UpdateItem", "InternalServerError", times=1000,
                        match=lambda p: p.get("Key", {}).get("id", {}).get("S") == "a2"
                        and "executed" in json.dumps(p.get("ExpressionAttributeValues", {})))

    def heal() -> None:
        faults.remaining = 0

    responses = deliver_as_lambda(handler, after_first=heal)
    assert faults.raised >= 3, "the third task's commit failed in the first delivery, all retries included"
    return runs, responses, handler


def test_a_partial_failure_in_an_aggregated_record_puts_back_only_what_did_not_commit(settings: AwsSettings) -> None:
    """Lambda's partial batch response can only name the whole aggregated record, which would run
    its committed tasks again (these have no row to stop them): the worker puts back the one
    task that did not commit instead, and names nothing."""
    from tests.aws.test_kinesis import read_all, stream_tasks

    runs, responses, handler = partial_failure_in_an_aggregate(settings)
    assert responses == [{"batchItemFailures": []}] * 2
    assert {k: runs.count(k) for k in ("a0", "a1", "a3", "a4")} == dict.fromkeys(("a0", "a1", "a3", "a4"), 1)
    assert runs.count("a2") == 3 + 1, "three tries in the first delivery (its commit failing), one from the put-back"
    stack = handler.runtime._stack
    records = handler.runtime.run(read_all(stack.clients.kinesis, stack.settings.stream_name))
    assert [[(t.key, t.execution_stats.requeues) for t in stream_tasks([r])] for r in records] == [
        [("a0", 0), ("a1", 0), ("a2", 0), ("a3", 0), ("a4", 0)], [("a2", 1)]]
    assert rows(handler, "a2")["a2"].status is TaskStatus.EXECUTED


def test_the_aggregate_check_fails_when_the_record_is_named_instead(settings: AwsSettings,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import tq_cloud.aws_lambda.kinesis as worker
    from tq_cloud.aws_lambda.remainders import Remainders, record_key

    async def name_them(handler: Any, decoded: Any, uncommitted: set[str], **_: Any) -> Remainders:
        return Remainders(named=list(dict.fromkeys(s for s, r in decoded if record_key(s, r) in uncommitted)))

    monkeypatch.setattr(worker, "uncommitted_records", name_them)
    with pytest.raises(AssertionError):
        test_a_partial_failure_in_an_aggregated_record_puts_back_only_what_did_not_commit(settings)


def test_a_task_put_back_too_often_is_named_for_redelivery(settings: AwsSettings) -> None:
    """A write that keeps failing does not loop through put-backs: after MAX_REQUEUES its record
    is named, and Lambda's retry limit and on-failure destination take it from there."""
    from tq_cloud.aws_lambda.remainders import MAX_REQUEUES

    runs: list[str] = []
    handler = kinesis_handler(app_with(runs), settings)
    worn = Task(id="w", type="t", queue_id="q", payload={}, force_store=True)
    worn.execution_stats.requeues = MAX_REQUEUES
    fresh = Task(id="f", type="t", queue_id="q", payload={}, force_store=True)
    event = aggregated_event([fresh, worn])
    handler.runtime.run(handler.runtime.stack())  # type: ignore[attr-defined]
    stack = handler.runtime._stack  # type: ignore[attr-defined]
    handler.runtime.run(stack.storage.insert([t.model_copy(update={"status": TaskStatus.PROCESSING})
                                              for t in (worn, fresh)]))
    CallFaults(stack.clients.dynamodb, "dynamodb.UpdateItem", "InternalServerError", times=100,
               match=lambda p: p.get("Key", {}).get("id", {}).get("S") == "w"
               and "executed" in json.dumps(p.get("ExpressionAttributeValues", {})))
    response = handler(event, FakeContext())
    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["kinesis"]["sequenceNumber"]}]}
    assert handler.last.fell_back == [f"task w was put back {MAX_REQUEUES} times already"]  # type: ignore[attr-defined]


def ordered_chunk_with_a_stuck_commit(settings: AwsSettings) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """Three tasks of one ordered key in one chunk, every write of the middle one's row failing:
    the chunk's try fails (its leases cannot be taken), then each record is tried alone. What
    ran, the event and the response."""
    runs: list[str] = []
    app = TaskQueuesManager()

    @app.task("q", "post", ordered=True)
    async def post(task: Task, actions: ExecutorActions) -> None:
        runs.append(task.key)

    handler = kinesis_handler(app, settings, chunk_size=3)
    event = event_of(*(Task(id=f"p{i}", type="post", queue_id="q", payload={}, force_store=True, partition_key="k")
                       for i in range(3)))
    handler.runtime.run(handler.runtime.stack())  # type: ignore[attr-defined]
    stack = handler.runtime._stack  # type: ignore[attr-defined]
    for task in (Task.model_validate_json(base64.b64decode(r["kinesis"]["data"])) for r in event["Records"]):
        handler.runtime.run(stack.storage.insert([task]))
    CallFaults(stack.clients.dynamodb, "dynamodb.UpdateItem", "InternalServerError", times=100,
               match=lambda p: p.get("Key", {}).get("id", {}).get("S") == "p1")
    return runs, event, handler(event, FakeContext())


def test_a_record_alone_waits_behind_an_uncommitted_task_of_its_ordered_key(settings: AwsSettings) -> None:
    runs, event, response = ordered_chunk_with_a_stuck_commit(settings)
    assert runs == ["p0"], "p2 ran while p1, before it, was not committed"
    assert response == {"batchItemFailures": [{"itemIdentifier": r["kinesis"]["sequenceNumber"]}
                                              for r in event["Records"][1:]]}


def test_mutation_trying_every_record_alone_runs_an_ordered_key_out_of_turn(settings: AwsSettings,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tq_cloud.aws_lambda.kinesis._ordered_key", lambda handler, record: None)
    runs, _, _ = ordered_chunk_with_a_stuck_commit(settings)
    assert runs == ["p0", "p2"]
