"""The Grafana dashboard's queries and the series the operator exports, for the tests that match them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .helm import CHART

DASHBOARD = CHART / "dashboards" / "ome-operator.json"
SERIES = re.compile(r"\b(ome_[a-z0-9_]+)\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def load(path: Path = DASHBOARD) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that queries (rows only group)."""
    found = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels") or [])
        else:
            found.append(panel)
    return found


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL expression) for every target."""
    return [(panel["title"], target["expr"]) for panel in panels(dashboard) for target in panel["targets"]]


def series_in(expr: str) -> set[str]:
    return set(SERIES.findall(expr))


def exported_series(exposition: str) -> dict[str, str]:
    """Series names a Prometheus scrape of this text can hold -> the family's type, read from the
    `# TYPE` lines, which the client writes even for a labelled metric with no samples yet."""
    series = {}
    for line in exposition.splitlines():
        if not line.startswith("# TYPE "):
            continue
        _, _, family, kind = line.split(maxsplit=3)
        if kind == "histogram":
            series.update({family + suffix: kind for suffix in HISTOGRAM_SUFFIXES})
        else:
            series[family] = kind
    return series
