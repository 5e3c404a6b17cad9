"""Uninstall (issue 11 C9): after `helm uninstall`, deleting InferenceServices and models completes.

The operator keeps no finalizer: children and download Jobs go by owner references, and a deleted
model's node labels are swept (after the deletion while it runs; at its next start otherwise).
The chart is installed with `replicas: 0` (no image runs here); the operator runs as a local
process, as in the chart RBAC tests, and is SIGKILLed before the uninstall, as a removed pod is.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.operator import OperatorProcess, apply_crds, write_operator_kubeconfig
from tests.charts.helm import CHART, NAMESPACE, RELEASE, run_helm

from .operator_env import REPO, kjson

pytestmark = pytest.mark.integration
MODEL = REPO / "config/models/Qwen/Qwen3-0.6B.yaml"
RUNTIME = REPO / "config/runtimes/srt/Qwen/qwen3-0-6b-rt.yaml"
SAMPLE = REPO / "config/samples/isvc/Qwen/qwen3-0-6b.yaml"
NS = NAME = "qwen3-0-6b"
LABEL = f"models.ome.io/clusterbasemodel.{NAME}"
LEGACY = "kopf.zalando.org/KopfFinalizerMarker"


def helm(cluster: ClusterHandle, *args: str, check: bool = True) -> None:
    run_helm(*args, f"--kubeconfig={cluster.kubeconfig}", check=check)


def labelled_nodes(cluster: ClusterHandle) -> int:
    return len(kjson(cluster, "get", "nodes", "-l", LABEL)["items"])


def finalizers(cluster: ClusterHandle, *what: str) -> list[str]:
    return list(kjson(cluster, "get", *what)["metadata"].get("finalizers") or [])


def test_deletion_completes_after_helm_uninstall(cluster: ClusterHandle, tmp_path: Path) -> None:
    apply_crds(cluster)
    kubeconfig = write_operator_kubeconfig(cluster, tmp_path / "kubeconfig")
    helm(cluster, "install", RELEASE, str(CHART), f"--namespace={NAMESPACE}", "--set=replicas=0", "--wait")
    op = OperatorProcess(kubeconfig, tmp_path / "operator.log", "--resync-seconds", "20").start()
    try:
        op.wait_ready()
        for path in (MODEL, RUNTIME, SAMPLE):
            cluster.kubectl("apply", "-f", str(path))
        wait_for(lambda: labelled_nodes(cluster) == 16, timeout=120, what="the model on all 16 nodes")
        wait_for(
            lambda: cluster.kubectl("get", "deployment", f"{NAME}-router", "-n", NS, check=False).returncode == 0,
            timeout=60,
            what="the InferenceService's children",
        )
        assert finalizers(cluster, "clusterbasemodel", NAME) == []
        assert finalizers(cluster, "isvc", NAME, "-n", NS) == []
        # An object of an earlier version carries kopf's finalizer: the running operator drops it.
        cluster.kubectl(
            "patch", "isvc", NAME, "-n", NS, "--type=merge", "-p", f'{{"metadata":{{"finalizers":["{LEGACY}"]}}}}'
        )
        wait_for(
            lambda: not finalizers(cluster, "isvc", NAME, "-n", NS), timeout=60, what="the legacy finalizer removed"
        )
    finally:
        op.kill()
    helm(cluster, "uninstall", RELEASE, f"--namespace={NAMESPACE}", "--wait")

    start = time.monotonic()
    cluster.kubectl("delete", "-f", str(SAMPLE), "--ignore-not-found", "--timeout=30s")
    cluster.kubectl("delete", "-f", str(RUNTIME), "-f", str(MODEL), "--timeout=30s")
    print(f"\ndeletions after helm uninstall completed in {time.monotonic() - start:.1f} s")
    assert cluster.kubectl("get", "clusterbasemodel", NAME, check=False).returncode != 0
    assert cluster.kubectl("get", "isvc", NAME, "-n", NS, check=False).returncode != 0
    # Nobody removed the labels meanwhile; the operator's next start sweeps them.
    assert labelled_nodes(cluster) == 16
    op = OperatorProcess(kubeconfig, tmp_path / "operator-again.log", "--resync-seconds", "20").start()
    try:
        op.wait_ready()
        wait_for(lambda: labelled_nodes(cluster) == 0, timeout=30, what="the deleted model's labels swept")
    finally:
        op.stop()
