"""Per-node download gauges follow the Jobs' progress snapshots and disappear with their model."""

from __future__ import annotations

from typing import Any, cast

from prometheus_client import REGISTRY

from ome_operator.handlers.wiring import Operator
from ome_operator.reconcile.model import ModelOutcome
from ome_operator.render.context import Settings


def sample(name: str, node: str) -> float | None:
    value = REGISTRY.get_sample_value(name, {"model": "cluster.m", "node": node})
    return None if value is None else float(value)


def test_progress_gauges_are_set_and_removed() -> None:
    op = Operator(kube=cast(Any, None), settings=Settings())
    key = ("ClusterBaseModel", None, "m")
    snapshot = {"completedBytes": 10, "totalBytes": 40, "speedBytesPerSec": 5}
    op._publish_progress(key, ModelOutcome("In_Transit", {"Running": 2}, "cluster.m", {"n1": snapshot, "n2": snapshot}))
    assert sample("ome_download_completed_bytes", "n1") == 10
    assert sample("ome_download_total_bytes", "n2") == 40
    assert sample("ome_download_speed_bytes_per_second", "n1") == 5
    op._publish_progress(key, ModelOutcome("In_Transit", {"Running": 1}, "cluster.m", {"n1": snapshot}))
    assert sample("ome_download_total_bytes", "n2") is None  # node n2 is no longer a target
    op._publish_progress(key, None)  # the model is gone
    assert sample("ome_download_completed_bytes", "n1") is None
