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

import json
import time

from tq_cloud.domain.tally import METRIC_NAMES, BatchTally

MAX_VALUES = 100
"""EMF's limit of values per metric in one line (Powertools flushes at it too)."""


def publish_tally(tally: BatchTally, namespace: str, service: str) -> None:
    """Print one EMF line per (queue, type) of `tally` (more if a pair ran over 100 tasks).

    Written here rather than through Powertools' `EphemeralMetrics`, whose `add_metric` per
    value cost about 20 us a task (a sixth of the worker's CPU per no-op task); the line is
    the same EMF document Powertools prints.

    Example:
        publish_tally(report.tally, "tq-cloud", "my-stack")
    """
    stamp = int(time.time() * 1000)
    for (queue, task_type), pair in tally.pairs.items():
        lateness = [round(ms, 3) for ms in pair.lateness_ms]
        run_time = [round(ms, 3) for ms in pair.run_ms]
        for start in range(0, max(len(lateness), len(run_time), 1), MAX_VALUES):
            values: dict[str, list[float]] = {}
            if start == 0:
                values |= {metric: [float(pair.counts[name])] for name, metric in METRIC_NAMES.items()}
            for metric, series in (("LatenessMs", lateness), ("RunTimeMs", run_time)):
                if series[start:start + MAX_VALUES]:
                    values[metric] = series[start:start + MAX_VALUES]
            units = [{"Name": m, "Unit": "Milliseconds" if m.endswith("Ms") else "Count"} for m in values]
            print(json.dumps({"_aws": {"Timestamp": stamp, "CloudWatchMetrics": [{
                "Namespace": namespace, "Dimensions": [["queue", "type", "service"]], "Metrics": units}]},
                "queue": queue, "type": task_type, "service": service, **values}, separators=(",", ":")))
