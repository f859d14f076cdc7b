"""mkdocs hook: `<!-- chart: NAME -->` in a page becomes a bar chart of docs/figures.json's
NAME, drawn as inline SVG at build time (no JavaScript, no image files to keep in step with
the figures: change the JSON, and the chart follows)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

FIGURES = Path(__file__).with_name("figures.json")
MARKER = re.compile(r"<!-- chart: ([a-z_]+) -->")
ROW, LABEL, WIDTH = 26, 300, 320


def bar_chart(figure: dict[str, Any]) -> str:
    bars: list[list[Any]] = figure["bars"]
    top = max(value for _, value in bars) or 1
    height = ROW * len(bars) + 10
    rows = []
    for index, (label, value) in enumerate(bars):
        y = index * ROW + 5
        length = max(1.0, WIDTH * value / top)
        rows.append(
            f'<text x="{LABEL - 8}" y="{y + 16}" text-anchor="end" font-size="12">{html.escape(label)}</text>'
            f'<rect x="{LABEL}" y="{y + 3}" width="{length:.1f}" height="{ROW - 8}" fill="#3f51b5"/>'
            f'<text x="{LABEL + length + 6:.1f}" y="{y + 16}" font-size="12">{value:,}</text>')
    return (f'<figure><svg role="img" aria-label="{html.escape(figure["title"])}" viewBox="0 0 {LABEL + WIDTH + 90} '
            f'{height}" width="100%" xmlns="http://www.w3.org/2000/svg">{"".join(rows)}</svg>'
            f'<figcaption>{html.escape(figure["title"])}. Source: {html.escape(figure["source"])}</figcaption></figure>')


def on_page_markdown(markdown: str, **_: Any) -> str:
    figures = json.loads(FIGURES.read_text())

    def chart(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in figures:
            raise ValueError(f"docs: no figure {name!r} in {FIGURES.name}")
        return bar_chart(figures[name])

    return MARKER.sub(chart, markdown)
