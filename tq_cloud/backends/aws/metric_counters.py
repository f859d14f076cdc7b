"""Kept counters read from CloudWatch: the EMF metrics the worker prints for every committed
chunk (aws_lambda/metrics.py) are already a count of every outcome per queue and type, kept
by CloudWatch, exact (every value is aggregated, none sampled). On AWS the console reads them
here, and the worker writes nothing more: plain tasks stay free of DynamoDB calls.

Per minute for 15 days, then per hour (CloudWatch's retention); "in all" is the last 455 days.
Lateness per minute is CloudWatch's p50 and p99 of `LatenessMs` (of the worst queue and type,
as percentiles of several do not add up). A read is one ListMetrics (paged) and one
GetMetricData per 500 series: $0.01 per 1,000 series, so the console reads at most once every
`refresh_seconds`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from tq_cloud.domain.tally import METRIC_NAMES
from tq_cloud.ports.counters import CountsRow, CountsSeen, check_range, minute_of

KEPT_FOR = timedelta(days=455)
"""How far back CloudWatch keeps (hourly) data: the span of the totals."""


class MetricCounters:
    """The kept-counters port on CloudWatch metrics (read only: `add` is the worker's EMF).

    Example:
        counters = MetricCounters(AwsSettings(), service="my-stack")
        seen = await counters.read(None, now - timedelta(hours=1), now)
    """
    refresh_seconds = 30.0
    """How long a read stays fresh (CloudWatch has a point a minute, and reads are billed)."""

    def __init__(self, settings: Any, service: str, namespace: str = "tq-cloud", percentiles: bool = True) -> None:
        self.settings = settings
        self.service = service
        self.namespace = namespace
        self.percentiles = percentiles
        """Ask for lateness p50 and p99 (moto computes no percentiles: its tests turn this off)."""

    async def add(self, tally: Any, at: datetime) -> None:
        """Nothing to do: the worker's EMF lines are the writes."""

    async def read(self, pairs: Sequence[tuple[str, str]] | None, since: datetime, until: datetime) -> CountsSeen:
        import aioboto3

        check_range(since, until)
        session = aioboto3.Session(region_name=self.settings.region)
        async with session.client("cloudwatch", endpoint_url=self.settings.endpoint_url,
                                  region_name=self.settings.region) as client:
            if pairs is None:
                pairs = await self._pairs(client)
            queries, what = self._queries(pairs, since)
            end = minute_of(until) + timedelta(minutes=1)
            totals = [q for q in queries if what[q["Id"]][0] == "total"]  # over CloudWatch's whole retention
            ranged = [q for q in queries if what[q["Id"]][0] != "total"]
            results = {**await self._data(client, ranged, minute_of(since), end),
                       **await self._data(client, totals, end - KEPT_FOR, end)}
        return _seen(results, what, since)

    async def _pairs(self, client: Any) -> list[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        for name in METRIC_NAMES.values():
            request: dict[str, Any] = {"Namespace": self.namespace, "MetricName": name,
                                       "Dimensions": [{"Name": "service", "Value": self.service}]}
            while True:
                page = await client.list_metrics(**request)
                for metric in page.get("Metrics", []):
                    dims = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
                    if "queue" in dims and "type" in dims:
                        found.add((dims["queue"], dims["type"]))
                if not page.get("NextToken"):
                    break
                request["NextToken"] = page["NextToken"]
        return sorted(found)

    def _queries(self, pairs: Sequence[tuple[str, str]], since: datetime
                 ) -> tuple[list[dict[str, Any]], dict[str, tuple[str, tuple[str, str], str]]]:
        queries: list[dict[str, Any]] = []
        what: dict[str, tuple[str, tuple[str, str], str]] = {}

        def ask(kind: str, pair: tuple[str, str], name: str, metric: str, stat: str, period: int) -> None:
            query_id = f"q{len(queries)}"
            what[query_id] = (kind, pair, name)
            queries.append({"Id": query_id, "ReturnData": True, "MetricStat": {
                "Metric": {"Namespace": self.namespace, "MetricName": metric, "Dimensions": [
                    {"Name": "queue", "Value": pair[0]}, {"Name": "type", "Value": pair[1]},
                    {"Name": "service", "Value": self.service}]}, "Period": period, "Stat": stat}})

        for pair in pairs:
            for name, metric in METRIC_NAMES.items():
                ask("minute", pair, name, metric, "Sum", 60)
                ask("total", pair, name, metric, "Sum", 86400)
            if self.percentiles:
                ask("lateness", pair, "p50", "LatenessMs", "p50", 60)
                ask("lateness", pair, "p99", "LatenessMs", "p99", 60)
        return queries, what

    async def _data(self, client: Any, queries: list[dict[str, Any]], start: datetime, end: datetime
                    ) -> dict[str, list[tuple[datetime, float]]]:
        """The points of `queries` from `start` to `end`, 500 queries a call, page after page."""
        results: dict[str, list[tuple[datetime, float]]] = {}
        for first in range(0, len(queries), 500):
            request: dict[str, Any] = {"MetricDataQueries": queries[first:first + 500], "StartTime": start,
                                       "EndTime": end}
            while True:
                page = await client.get_metric_data(**request)
                for result in page["MetricDataResults"]:
                    results.setdefault(result["Id"], []).extend(zip(result["Timestamps"], result["Values"],
                                                                    strict=True))
                if not page.get("NextToken"):
                    break
                request["NextToken"] = page["NextToken"]
        return results


def _seen(results: dict[str, list[tuple[datetime, float]]], what: dict[str, tuple[str, tuple[str, str], str]],
          since: datetime) -> CountsSeen:
    seen = CountsSeen()
    for query_id, points in results.items():
        kind, pair, name = what[query_id]
        for at, value in points:
            if kind == "total":
                seen.totals.setdefault(pair, CountsRow()).counts[name] += int(value)
            elif kind == "minute" and at >= minute_of(since):
                minute = minute_of(at)
                seen.minutes.setdefault(pair, {}).setdefault(minute, CountsRow()).counts[name] += int(value)
            elif kind == "lateness":
                worst = seen.lateness.setdefault(minute_of(at), {})
                worst[name] = max(worst.get(name, 0.0), value)
    return seen
