"""The overview's charts, drawn on the server as SVG by pygal (a Python charting library: no
JavaScript, nothing fetched from a CDN; the page shows them as images, so even pygal's own
tooltip script never runs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

CHART_STYLE = {"width": 640, "height": 260, "show_dots": True, "dots_size": 2, "js": [],
               "legend_at_bottom": True, "legend_at_bottom_columns": 3, "show_minor_x_labels": False,
               "truncate_legend": -1, "truncate_label": -1, "margin": 8, "include_x_axis": True,
               "print_values": False}


def _chart(title: str, activity: dict[str, Any]) -> Any:
    import pygal  # type: ignore[import-untyped]

    chart = pygal.Line(title=title, **CHART_STYLE)
    labels = [datetime.fromisoformat(m["minute"]).strftime("%H:%M") for m in activity["minutes"]]
    chart.x_labels = labels
    chart.x_labels_major = labels[::max(1, len(labels) // 6)]
    return chart


def throughput_svg(activity: dict[str, Any]) -> bytes:
    """Tasks executed, failed and retried per minute (UTC)."""
    chart = _chart("tasks per minute (UTC)", activity)
    for name in ("executed", "failed", "retried"):
        chart.add(name, [m[name] for m in activity["minutes"]])
    return bytes(chart.render())


def lateness_svg(activity: dict[str, Any]) -> bytes:
    """Lateness (due to start) p50 and p99 per minute, in seconds."""
    chart = _chart("lateness, due to start (s)", activity)
    for name, key in (("p50", "lateness_p50"), ("p99", "lateness_p99")):
        chart.add(name, [None if m[key] is None else m[key] / 1000 for m in activity["minutes"]])
    return bytes(chart.render())
