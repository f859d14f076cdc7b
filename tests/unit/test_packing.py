"""Packing tasks into KPL aggregated records (`kinesis.pack`): which tasks share a record, under
which key, up to which size, and that every consumer (ours, aws-kinesis-agg's) reads them back."""

from __future__ import annotations

import base64

from aws_kinesis_agg import deaggregator  # type: ignore[import-untyped]

from tq_cloud import ExecutorActions, Task
from tq_cloud.backends.aws.kinesis import AGGREGATE_BYTES, MAX_RECORD_BYTES, decode_record, pack
from tq_cloud.backends.aws.kpl import aggregate, aggregated_size, deaggregate
from tq_cloud.core.codec import encode_task
from tq_cloud.core.registry import TaskQueuesManager


def tasks(n: int, pad: int = 0, prefix: str = "t", **kw: object) -> list[Task]:
    return [Task(id=f"{prefix}{i}", type="t", queue_id="q", payload={"i": i, "pad": "x" * pad}, **kw)  # type: ignore[arg-type]
            for i in range(n)]


def read_back(records: list[tuple[bytes, str]]) -> list[Task]:
    out = []
    for n, (data, _) in enumerate(records):
        for task in decode_record(data, f"{n:020d}"):
            assert isinstance(task, Task)
            out.append(task)
    return out


def test_sizes_are_computed_as_the_aggregate_is_built() -> None:
    parts = [("k1", b"a" * 10), ("k2", b"b" * 200), ("k1", b"c" * 20_000), ("k" * 300, b"")]
    assert aggregated_size(parts) == len(aggregate(parts))


def test_tasks_without_a_key_share_records_up_to_the_size_and_keep_having_no_key() -> None:
    sent = tasks(300, pad=200)
    records, rejected = pack(sent)
    assert not rejected and 3 <= len(records) <= 5, "300 tasks of ~260 bytes in 25 KB records"
    assert all(len(r.data) + len(r.partition_key) <= AGGREGATE_BYTES for r in records)
    assert [r.partition_key for r in records] == [r.tasks[0].key for r in records], "under the first one's id"
    back = read_back([(r.data, r.partition_key) for r in records])
    assert [t.key for t in back] == [t.key for t in sent] and all(t.partition_key is None for t in back)
    assert [t.model_dump() for t in back] == [t.model_dump() for t in sent]


def test_tasks_of_one_key_share_records_under_it_in_order() -> None:
    mixed = [t.model_copy(update={"partition_key": "user-7" if i % 2 else "user-8"}) for i, t in enumerate(tasks(40))]
    records, _ = pack(mixed)
    assert sorted(r.partition_key for r in records) == ["user-7", "user-8"]
    for record in records:
        assert {t.partition_key for t in record.tasks} == {record.partition_key}
        assert [t.key for t in read_back([(record.data, record.partition_key)])] == [t.key for t in record.tasks]


def test_what_goes_alone() -> None:
    big = tasks(1, pad=AGGREGATE_BYTES, prefix="big")
    lone = tasks(1, prefix="lone")
    records, _ = pack([*tasks(3), *big, *lone, *tasks(1, prefix="single", partition_key="k")],
                      alone=lambda t: t.key == "lone0")
    shapes = {r.tasks[0].key: (len(r.tasks), deaggregate(r.data) is not None) for r in records}
    assert shapes == {"t0": (3, True), "big0": (1, False), "lone0": (1, False), "single0": (1, False)}
    assert {r.partition_key for r in records if len(r.tasks) == 1} == {"big0", "lone0", "k"}
    off, _ = pack(tasks(5), aggregate_bytes=0)
    assert [len(r.tasks) for r in off] == [1] * 5 and all(r.data.startswith(b"{") for r in off)


def test_a_task_over_the_record_limit_is_rejected_and_the_rest_packed() -> None:
    huge = Task(id="huge", type="t", queue_id="q", payload="x" * MAX_RECORD_BYTES)
    records, rejected = pack([*tasks(3), huge])
    assert list(rejected) == ["huge"] and [len(r.tasks) for r in records] == [3]


def test_which_tasks_the_app_packs_alone() -> None:
    app = TaskQueuesManager()

    @app.task("q", "plain")
    async def plain(task: Task, actions: ExecutorActions) -> None: ...

    @app.task("q", "kept", store_on_failure=True)
    async def kept(task: Task, actions: ExecutorActions) -> None: ...

    @app.task("q", "post", ordered=True)
    async def post(task: Task, actions: ExecutorActions) -> None: ...

    def task(type_: str, **kw: object) -> Task:
        return Task(id="x", type=type_, queue_id="q", payload={}, **kw)  # type: ignore[arg-type]

    assert not app.packs_alone(task("plain"))
    assert app.packs_alone(task("plain"), history=True) and app.packs_alone(task("plain", force_store=True))
    assert app.packs_alone(task("kept")), "may get a row: its copies must keep its own key"
    assert not app.packs_alone(task("kept", partition_key="k")), "its key keeps its copies together"
    assert app.packs_alone(task("post", partition_key="k")), "ordered: never put back by a consumer"


def test_aws_kinesis_agg_reads_the_records_packed_here() -> None:
    sent = tasks(30)
    [record] = pack(sent)[0]
    event = {"eventSource": "aws:kinesis", "kinesis": {
        "data": base64.b64encode(record.data).decode(), "partitionKey": record.partition_key,
        "sequenceNumber": "49", "kinesisSchemaVersion": "1.0", "approximateArrivalTimestamp": 1.0}}
    out = deaggregator.deaggregate_records([event])
    assert [Task.model_validate_json(base64.b64decode(r["kinesis"]["data"])).key for r in out] == [t.key for t in sent]
    assert [r["kinesis"]["partitionKey"] for r in out] == [t.key for t in sent]
    assert [base64.b64decode(r["kinesis"]["data"]) for r in out] == [encode_task(t) for t in sent]
