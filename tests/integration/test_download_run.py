"""Download Jobs run for real on the local cluster: the runner starts `ome-operator download` for the
Job's pod, the bytes land in the node's directory, and the Job ends with the process's exit code and
termination message, which is what the operator reads."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.fixtures import KIMI_K2_CONFIG, KIMI_K2_PARAMETERS
from devtools.operator import OperatorProcess, apply_crds, write_operator_kubeconfig
from devtools.runner_download import node_host_path

from .operator_env import condition, kjson, running_operator
from .test_status_conditions import apply

pytestmark = pytest.mark.integration
NODE = "h200-005"
DEST = "/raid/models/test-run/kimi"


def model(name: str, uri: str, path: str) -> dict[str, Any]:
    return {
        "apiVersion": "ome.io/v1beta1",
        "kind": "ClusterBaseModel",
        "metadata": {"name": name},
        "spec": {"storage": {"storageUri": uri, "path": path, "nodeSelector": {"kubernetes.io/hostname": NODE}}},
    }


@pytest.fixture(scope="module")
def operator(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    apply_crds(cluster)
    cluster.kubectl("create", "namespace", "ome", check=False)
    work = tmp_path_factory.mktemp("download-run")
    kubeconfig = write_operator_kubeconfig(cluster, work / "kubeconfig")
    with running_operator(kubeconfig, work / "operator.log") as op:
        yield op


def hub_repos(cluster: ClusterHandle) -> dict[str, str]:
    info = json.loads((cluster.kubeconfig.parent / "runner" / "hub.json").read_text())
    repos: dict[str, str] = info["repos"]
    return repos


def test_a_download_job_moves_real_bytes_and_reports_the_metadata(cluster: ClusterHandle, operator: object) -> None:
    apply(cluster, model("run-kimi", "hf://moonshotai/Kimi-K2-Instruct", DEST))
    try:

        def ready() -> dict[str, Any] | None:
            obj = kjson(cluster, "get", "clusterbasemodel", "run-kimi")
            return obj if (obj.get("status") or {}).get("state") == "Ready" else None

        obj = wait_for(ready, timeout=120, what="the model Ready after a real download")
        meta = obj["status"]["metadata"]
        assert meta["architecture"] == "DeepseekV3ForCausalLM"
        assert meta["quantization"] == "fp8"
        assert meta["maxTokens"] == 131072
        assert meta["parameterCount"] == KIMI_K2_PARAMETERS
        assert meta["parameterSize"] == "1.03T"
        assert meta["commit"] == hub_repos(cluster)["moonshotai/Kimi-K2-Instruct"]
        on_node = node_host_path(cluster.kubeconfig.parent, NODE, DEST)
        assert json.loads((on_node / "config.json").read_text()) == KIMI_K2_CONFIG
        shards = sorted(on_node.glob("*.safetensors"))
        assert len(shards) == 3 and meta["files"] >= 3
        pods = kjson(cluster, "get", "pods", "-n", "ome", "-l", "ome.io/model=cluster.run-kimi")["items"]
        assert [p["status"]["phase"] for p in pods] == ["Succeeded"]
        terminated = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
        assert terminated["exitCode"] == 0
        summary = json.loads(terminated["message"])
        assert summary["node"] == NODE and summary["bytes"] == sum(
            f.stat().st_size for f in on_node.iterdir() if f.is_file()
        )
        # The node's copy is what the hub serves, byte for byte.
        digest = hashlib.sha256(shards[0].read_bytes()).hexdigest()
        served = Path(cluster.kubeconfig.parent / "hub" / "mirrors" / "models" / "moonshotai" / "Kimi-K2-Instruct")
        assert (served / ".git" / "lfs" / "objects" / digest[:2] / digest[2:4] / digest).exists()
        labels = kjson(cluster, "get", "node", NODE)["metadata"]["labels"]
        assert labels["models.ome.io/clusterbasemodel.run-kimi"] == "Ready"
    finally:
        cluster.kubectl("delete", "clusterbasemodel", "run-kimi", "--ignore-not-found", "--timeout=60s")


def test_a_permanent_failure_fails_the_job_with_the_downloaders_message(
    cluster: ClusterHandle, operator: object
) -> None:
    apply(cluster, model("run-missing", "hf://no-such-org/no-such-model", "/raid/models/test-run/missing"))
    try:

        def failed() -> dict[str, Any] | None:
            obj = kjson(cluster, "get", "clusterbasemodel", "run-missing")
            return obj if (obj.get("status") or {}).get("state") == "Failed" else None

        obj = wait_for(failed, timeout=120, what="the model Failed after the downloader's exit code 3")
        cond = condition(obj, "Downloaded")
        assert cond["reason"] == "DownloadFailed" and NODE in cond["message"]
        pods = kjson(cluster, "get", "pods", "-n", "ome", "-l", "ome.io/model=cluster.run-missing")["items"]
        assert len(pods) == 1, "exit code 3 is permanent: the podFailurePolicy must not retry it"
        terminated = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
        assert terminated["exitCode"] == 3
        summary = json.loads(terminated["message"])
        assert summary["status"] == "Failed" and summary["permanent"] is True
        assert "no-such-org/no-such-model" in cond["message"]
    finally:
        cluster.kubectl("delete", "clusterbasemodel", "run-missing", "--ignore-not-found", "--timeout=60s")
