"""Peering (two operators, one acts) and model lifecycle, with the small Qwen3-0.6B catalog entry."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.operator import OperatorProcess, apply_crds, write_operator_kubeconfig

from .operator_env import REPO, condition, kjson

pytestmark = pytest.mark.integration
MODEL = REPO / "config/models/Qwen/Qwen3-0.6B.yaml"
RUNTIME = REPO / "config/runtimes/srt/Qwen/qwen3-0-6b-rt.yaml"
SAMPLE = REPO / "config/samples/isvc/Qwen/qwen3-0-6b.yaml"
NS = NAME = "qwen3-0-6b"
LABEL = f"models.ome.io/clusterbasemodel.{NAME}"
PEERING = "ome-operator-test"


def reconciles(op: OperatorProcess) -> float:
    _, text = op.get("/metrics")
    return sum(float(m) for m in re.findall(r"^ome_reconcile_total\{[^}]*\} (\S+)$", text, re.M))


@pytest.fixture(scope="module")
def peers(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[OperatorProcess]]:
    apply_crds(cluster)
    cluster.kubectl("apply", "-f", str(REPO / "charts/ome-resources/crds/kopf-peering.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev", "--timeout=60s")
    cluster.kubectl(
        "apply", "-f", "-", stdin=f"apiVersion: kopf.dev/v1\nkind: ClusterKopfPeering\nmetadata: {{name: {PEERING}}}\n"
    )
    work = tmp_path_factory.mktemp("peers")
    kubeconfig = write_operator_kubeconfig(cluster, work / "kubeconfig")
    ops = [
        OperatorProcess(kubeconfig, work / f"operator-{i}.log", "--peering", PEERING, "--resync-seconds", "10").start()
        for i in range(2)
    ]
    try:
        for op in ops:
            op.wait_ready()
        yield ops
        for path in (SAMPLE, RUNTIME, MODEL):
            cluster.kubectl("delete", "-f", str(path), "--ignore-not-found", "--timeout=60s")
    finally:
        for op in ops:
            op.stop()
        cluster.kubectl("delete", "clusterkopfpeering", PEERING, "--ignore-not-found")


def test_two_peers_exactly_one_acts(cluster: ClusterHandle, peers: list[OperatorProcess]) -> None:
    for path in (MODEL, RUNTIME, SAMPLE):
        cluster.kubectl("apply", "-f", str(path))

    def ready() -> bool:
        return condition(kjson(cluster, "get", "isvc", NAME, "-n", NS), "Ready").get("status") == "True"

    # 16 real downloads first (the runner runs the download Jobs), on two shared cores.
    wait_for(ready, timeout=240, what="the Qwen InferenceService Ready")
    counts = [reconciles(op) for op in peers]
    assert sorted(c > 0 for c in counts) == [False, True], f"reconcile passes per peer: {counts}"


def test_model_in_use_is_reported_and_deletion_removes_node_labels(
    cluster: ClusterHandle, peers: list[OperatorProcess]
) -> None:
    def in_use() -> dict[str, Any]:
        return condition(kjson(cluster, "get", "clusterbasemodel", NAME), "InUse")

    cond = wait_for(lambda: in_use() or None, timeout=30, what="the model's InUse condition")
    assert cond["status"] == "True" and f"{NS}/{NAME}" in cond["message"]
    # The model is Ready (OME's rule) as soon as one node holds a copy; wait for all 16.
    wait_for(
        lambda: len(kjson(cluster, "get", "nodes", "-l", f"{LABEL}=Ready")["items"]) == 16,
        timeout=180,
        what="all 16 nodes labelled Ready",
    )
    jobs = kjson(cluster, "get", "jobs", "-n", "ome", "-l", f"ome.io/model=cluster.{NAME}")["items"]
    assert len(jobs) == 16

    cluster.kubectl("delete", "-f", str(MODEL), "--timeout=60s")
    wait_for(lambda: not kjson(cluster, "get", "nodes", "-l", LABEL)["items"], timeout=30, what="node labels removed")
    wait_for(
        lambda: not kjson(cluster, "get", "jobs", "-n", "ome", "-l", f"ome.io/model=cluster.{NAME}")["items"],
        timeout=60,
        what="download Jobs garbage-collected",
    )

    def model_not_found() -> bool:
        cond = condition(kjson(cluster, "get", "isvc", NAME, "-n", NS), "ModelReady")
        return cond.get("reason") == "ModelNotFound"

    wait_for(model_not_found, timeout=30, what="ModelReady=False ModelNotFound on the InferenceService")
    assert condition(kjson(cluster, "get", "isvc", NAME, "-n", NS), "Ready")["status"] == "False"
