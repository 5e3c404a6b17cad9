"""The Grafana dashboard queries only what the operator exports, with labels it sets.

A query naming a series or a label the operator does not have draws an empty panel without any
error, so this is checked here against the operator's own metric definitions (and against a running
operator's /metrics in tests/integration/test_chart_rbac.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from ome_operator.handlers import metrics

from .dashboard import HISTOGRAM_SUFFIXES, exported_series, load, panels, queries, series_in

WIRING = Path(metrics.__file__).with_name("wiring.py")
SELECTOR = re.compile(r"\b(ome_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*\"([^\"]*)\"\s*")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
QUERIES = queries(load())


def label_names() -> dict[str, set[str]]:
    """Series name -> label names, from the operator's metric objects."""
    result: dict[str, set[str]] = {}
    for obj in vars(metrics).values():
        if not isinstance(obj, MetricWrapperBase):
            continue
        # prometheus_client keeps the label names only in this attribute; describe() omits them.
        labels = set(obj._labelnames)
        for family in obj.describe():
            if family.type == "counter":
                names = [family.name + "_total"]  # describe() names a counter without its suffix
            elif family.type == "histogram":
                names = [family.name + suffix for suffix in HISTOGRAM_SUFFIXES]
            else:
                names = [family.name]
            for name in names:
                result[name] = labels | ({"le"} if name.endswith("_bucket") else set())
    return result


def test_dashboard_is_a_grafana_dashboard() -> None:
    dashboard = load()
    assert dashboard["uid"] == "ome-operator" and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and panel.get("description"), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


@pytest.mark.parametrize(("title", "expr"), QUERIES, ids=[f"{t}#{i}" for i, (t, _) in enumerate(QUERIES)])
def test_every_queried_series_is_exported(title: str, expr: str) -> None:
    exported = exported_series(generate_latest(REGISTRY).decode())
    used = series_in(expr)
    assert used, f"{title}: no ome_ series in {expr!r}"
    assert used <= exported.keys(), f"{title}: {sorted(used - exported.keys())} not among {sorted(exported)}"


@pytest.mark.parametrize(("title", "expr"), QUERIES, ids=[f"{t}#{i}" for i, (t, _) in enumerate(QUERIES)])
def test_every_label_is_one_the_operator_sets(title: str, expr: str) -> None:
    labels = label_names()
    wiring = WIRING.read_text()
    for name, matchers in SELECTOR.findall(expr):
        for matcher in filter(None, matchers.split(",")):
            found = MATCHER.fullmatch(matcher)
            assert found, f"{title}: cannot read matcher {matcher!r}"
            label, _, value = found.groups()
            assert label in labels[name], f"{title}: {name} has no label {label!r} (it has {sorted(labels[name])})"
            # A value the operator never writes is an always-empty panel: each one must appear as a
            # literal where the metrics are set.
            for alternative in value.split("|"):
                assert f'"{alternative}"' in wiring, f"{title}: {label}={alternative!r} is never set in {WIRING.name}"
    available = set().union(*(labels[name] for name in series_in(expr)))
    for grouping in GROUPING.findall(expr):
        for label in (part.strip() for part in grouping.split(",")):
            assert label in available, f"{title}: grouping by {label!r}, which {sorted(series_in(expr))} lack"


@pytest.mark.parametrize(("title", "expr"), QUERIES, ids=[f"{t}#{i}" for i, (t, _) in enumerate(QUERIES)])
def test_queries_are_balanced(title: str, expr: str) -> None:
    depth: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for char in re.sub(r'"[^"]*"', '""', expr):
        if char in "([{":
            depth.append(char)
        elif char in pairs:
            assert depth and depth.pop() == pairs[char], f"{title}: unbalanced {char!r} in {expr!r}"
    assert not depth, f"{title}: unclosed {depth} in {expr!r}"


def test_dashboard_covers_the_operator() -> None:
    exprs = "\n".join(expr for _, expr in QUERIES)
    # Reconcile rate, errors and latency; InferenceServices by Ready; download Jobs by phase; queue.
    assert "rate(ome_reconcile_total" in exprs
    assert "rate(ome_reconcile_errors_total" in exprs
    assert "histogram_quantile(" in exprs and "ome_reconcile_duration_seconds_bucket" in exprs
    assert 'ome_objects{kind="InferenceService"}' in exprs
    assert "ome_download_jobs" in exprs
    assert "ome_work_queue_depth" in exprs
