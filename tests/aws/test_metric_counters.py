"""On AWS the console's exact counts are the worker's own EMF metrics, read back from
CloudWatch: what `publish_tally` prints, as CloudWatch turns EMF lines into metric data, is
what `MetricCounters` reads (on moto's CloudWatch, which takes PutMetricData but reads no logs:
the test hands it each EMF line as CloudWatch's log ingestion would)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.aws_support import fresh_settings
from tq_cloud.aws_lambda.metrics import publish_tally
from tq_cloud.backends.aws.metric_counters import MetricCounters
from tq_cloud.domain.outcomes import Outcome, Verdict
from tq_cloud.domain.tally import BatchTally
from tq_cloud.domain.task import Task


def tally(queue: str, task_type: str, verdicts: list[Verdict]) -> BatchTally:
    now = datetime.now(UTC)
    outcomes = []
    for i, verdict in enumerate(verdicts):
        outcome = Outcome(task=Task(id=f"{task_type}{i}", type=task_type, queue_id=queue, payload={}, execute_at=now),
                          succeeded=verdict is Verdict.EXECUTED, started_at=now, finished_at=now)
        outcome.verdict = verdict
        outcomes.append(outcome)
    return BatchTally.of(outcomes)


async def ingest(client: Any, out: str) -> None:
    """Each EMF line printed, as CloudWatch Logs turns it into metric data."""
    for line in (json.loads(x) for x in out.splitlines() if '"_aws"' in x):
        [directive] = line["_aws"]["CloudWatchMetrics"]
        [dims] = directive["Dimensions"]
        at = datetime.fromtimestamp(line["_aws"]["Timestamp"] / 1000, UTC)
        data = [{"MetricName": m["Name"], "Unit": m["Unit"], "Timestamp": at, "Values": line[m["Name"]],
                 "Dimensions": [{"Name": d, "Value": line[d]} for d in dims]} for m in directive["Metrics"]]
        await client.put_metric_data(Namespace=directive["Namespace"], MetricData=data)


async def test_what_the_worker_prints_is_what_the_console_counts(
        moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import aioboto3

    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    settings = fresh_settings(moto_endpoint)
    service = f"stack-{settings.app_name}"
    for _ in range(3):
        publish_tally(tally("billing", "charge", [Verdict.EXECUTED] * 40 + [Verdict.RETRY, Verdict.FAILED]),
                      "tq-cloud", service)
    publish_tally(tally("mail", "send", [Verdict.EXECUTED] * 7), "tq-cloud", service)
    publish_tally(tally("mail", "send", [Verdict.EXECUTED] * 99), "tq-cloud", "another-stack")
    async with aioboto3.Session().client("cloudwatch", endpoint_url=moto_endpoint, region_name="us-east-1") as cw:
        await ingest(cw, capsys.readouterr().out)

    counters = MetricCounters(settings, service, percentiles=False)  # moto computes no percentiles
    now = datetime.now(UTC)
    seen = await counters.read(None, now - timedelta(minutes=5), now)
    assert sorted(seen.totals) == [("billing", "charge"), ("mail", "send")], "pairs found by the stack's service"
    charge = seen.totals[("billing", "charge")].counts
    assert (charge["executed"], charge["failed"], charge["retried"], charge["dead_lettered"]) == (120, 6, 3, 3)
    assert seen.totals[("mail", "send")].counts["executed"] == 7, "another stack's metrics are not counted"
    assert sum(row.counts["executed"] for row in seen.minutes[("billing", "charge")].values()) == 120


def test_counts_come_from_metrics_on_aws_and_from_the_table_on_a_local_endpoint(monkeypatch: pytest.MonkeyPatch
                                                                                 ) -> None:
    """No CloudWatch reads EMF on a laptop: there, batches add to table rows instead."""
    from tq_cloud.backends.aws import AwsSettings

    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "shop-prod")
    on_aws = AwsSettings()
    assert (on_aws.counters, on_aws.metrics_service) == ("metrics", "shop-prod"), "the template names the service"
    assert AwsSettings(endpoint_url="http://127.0.0.1:5000").counters == "table"
    assert AwsSettings(endpoint_url="http://127.0.0.1:5000", counters="off").counters == "off"
