"""The worker's EMF metrics per queue and task type (Powertools Metrics, printed as CloudWatch
embedded-metric-format log lines: no API call, no extra latency).

For each (queue, type) a committed chunk touched, one line with the dimensions `queue`, `type`
and `service` (the stack's name): `TasksExecuted`, `TasksFailed`, `TasksRetried`,
`TasksDeadLettered`, `TasksCancelled`, `TasksDeferred` (counts, as `domain/tally.py` defines them), and every
run's `LatenessMs` (from due to start) and `RunTimeMs`, as value lists CloudWatch takes
percentiles of. The service-level figures (`TasksSucceeded`, `TasksExhausted`, `IteratorAgeMs`
...) stay on the handler's own `Metrics`, which the template's alarms watch.

Each (metric, queue, type) is a CloudWatch custom metric ($0.30 a month each, eight per
executor); the log lines cost CloudWatch Logs ingestion, about 0.5 KB per chunk and pair.
"""

from __future__ import annotations

from typing import Any

from tq_cloud.domain.tally import METRIC_NAMES, BatchTally


def publish_tally(tally: BatchTally, namespace: str, service: str) -> None:
    """Print one EMF line per (queue, type) of `tally`.

    Example:
        publish_tally(report.tally, "tq-cloud", "my-stack")
    """
    from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

    for (queue, task_type), pair in tally.pairs.items():
        metrics: Any = EphemeralMetrics(namespace=namespace, service=service)
        metrics.add_dimension(name="queue", value=queue)
        metrics.add_dimension(name="type", value=task_type)
        for name, metric in METRIC_NAMES.items():
            metrics.add_metric(name=metric, unit=MetricUnit.Count, value=pair.counts[name])
        for ms in pair.lateness_ms:
            metrics.add_metric(name="LatenessMs", unit=MetricUnit.Milliseconds, value=round(ms, 3))
        for ms in pair.run_ms:
            metrics.add_metric(name="RunTimeMs", unit=MetricUnit.Milliseconds, value=round(ms, 3))
        metrics.flush_metrics()
