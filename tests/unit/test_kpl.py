"""The KPL aggregated record format, against aws-kinesis-agg (the format's own Python library)
as the other side, both ways, and what is not the format."""

from __future__ import annotations

import base64

import pytest
from aws_kinesis_agg import aggregator, deaggregator  # type: ignore[import-untyped]

from tq_cloud import Task
from tq_cloud.backends.aws import kinesis as kinesis_backend
from tq_cloud.backends.aws.kinesis import decode_record
from tq_cloud.backends.aws.kpl import MAGIC, aggregate, deaggregate
from tq_cloud.core.codec import UndecodableRecord, encode_task


def test_records_aggregated_by_aws_kinesis_agg_are_read() -> None:
    agg = aggregator.RecordAggregator()
    users = [("pk-a", b"one"), ("pk-b", b"two"), ("pk-a", b"\x00" * 300)]
    for key, data in users:
        agg.add_user_record(key, data, None)
    _, _, data = agg.clear_and_get().get_contents()
    assert [(u.partition_key, u.data) for u in deaggregate(data) or []] == users


def test_records_aggregated_here_are_read_by_aws_kinesis_agg() -> None:
    users = [("k1", b"alpha"), ("k2", b"beta"), ("k1", b"gamma" * 100)]
    event = {"eventSource": "aws:kinesis", "kinesis": {
        "data": base64.b64encode(aggregate(users)).decode(), "partitionKey": "k1", "sequenceNumber": "7",
        "kinesisSchemaVersion": "1.0", "approximateArrivalTimestamp": 1.0}}
    out = deaggregator.deaggregate_records([event])
    assert [(r["kinesis"]["partitionKey"], base64.b64decode(r["kinesis"]["data"])) for r in out] == users


def test_what_is_not_an_aggregate_is_a_plain_record() -> None:
    good = aggregate([("k", b"x")])
    assert deaggregate(b"plain") is None and deaggregate(MAGIC + b"\x00" * 16) is None
    assert deaggregate(good[:-1] + bytes([good[-1] ^ 1])) is None, "a checksum that does not match"
    body = b"\x1a\x05\x08\x00\x1a"  # a user record cut short
    import hashlib
    assert deaggregate(MAGIC + body + hashlib.md5(body).digest()) is None


def test_each_user_record_is_a_task_with_its_own_key_and_a_bad_one_fails_alone() -> None:
    tasks = [Task(id=f"t{i}", type="t", queue_id="q", payload={"i": i}) for i in range(3)]
    no_id = Task(type="t", queue_id="q", payload={})
    data = aggregate([("pk0", encode_task(tasks[0])), ("pk1", encode_task(tasks[1])), ("pk1", b"garbage"),
                      ("pk2", encode_task(tasks[2])), ("pk3", encode_task(no_id))])
    decoded = decode_record(data, "49")
    assert [d.key if isinstance(d, Task) else d.record_id for d in decoded][:4] == ["t0", "t1", "49:2", "t2"]
    assert isinstance(decoded[2], UndecodableRecord)
    assert [d.partition_key for d in decoded if isinstance(d, Task)][:3] == ["pk0", "pk1", "pk2"]
    last = decoded[4]
    assert isinstance(last, Task) and last.key == decode_record(data, "49")[4].key, "derived from seq:index"


def test_the_aggregate_check_fails_without_deaggregation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kinesis_backend, "deaggregate", lambda data: None)
    with pytest.raises(AssertionError):
        test_each_user_record_is_a_task_with_its_own_key_and_a_bad_one_fails_alone()
