"""The Grafana dashboard's queries, read from its JSON: which metrics and labels they use.

A small PromQL reader, enough for what a dashboard writes (selectors, label
matchers, ranges, functions, aggregations with by/without): string literals,
ranges and grouping clauses are taken out, and what is left that is neither a
keyword nor followed by "(" (a function or an aggregation) is a metric name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "assessment-refresh.json"

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless"}
_GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"
# Labels Prometheus adds to every series it scrapes: not in a service's /metrics.
TARGET_LABELS = {"instance", "job"}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panels(panel)  # a collapsed row holds its panels


def queries(path: Path = DASHBOARD) -> list[tuple[str, str, str]]:
    """(panel title, PromQL expression, legend format) of every query."""
    dashboard = json.loads(path.read_text())
    return [(panel["title"], target["expr"], target.get("legendFormat", ""))
            for panel in panels(dashboard) for target in panel.get("targets", [])]


def references(expr: str) -> tuple[set[str], set[str]]:
    """The metric names and the label names an expression uses."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    labels: set[str] = set()

    def matchers(found: re.Match[str]) -> str:
        labels.update(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", found.group(1)))
        return " "

    text = re.sub(r"\{([^}]*)\}", matchers, text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges, $__rate_interval included
    for found in re.finditer(_GROUPING, text):
        labels.update(name.strip() for name in found.group(1).split(",") if name.strip())
    text = re.sub(_GROUPING, " ", text)
    metrics = set()
    for found in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", text):
        if found.group(0) in _KEYWORDS or text[found.end():].lstrip().startswith("("):
            continue
        metrics.add(found.group(0))
    return metrics, labels


def legend_labels(legend: str) -> set[str]:
    return set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
