"""Status on the real API server: written whole, stale keys gone, and model problems as conditions.

- Removing spec.router removes status.components.router and the RouterReady condition (status is
  replaced, never merge-patched).
- Editing a model's storageUri replaces its download Jobs (their pod template is immutable) instead
  of retrying a refused patch.
- The same invalid InferenceService gives the same answer from `render` and from the operator.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.operator import OperatorProcess, apply_crds, write_operator_kubeconfig
from ome_operator.cli import main as cli_main

from .operator_env import REPO, condition, kjson, running_operator

pytestmark = pytest.mark.integration
MODEL = REPO / "config/models/Qwen/Qwen3-0.6B.yaml"
RUNTIME = REPO / "config/runtimes/srt/Qwen/qwen3-0-6b-rt.yaml"
NS = "status-whole"


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") != "Namespace"]


def model_doc(name: str, node: str = "h200-001") -> dict[str, Any]:
    model = docs(MODEL)[0]
    model["metadata"]["name"] = name
    model["spec"]["storage"]["nodeSelector"] = {"kubernetes.io/hostname": node}
    return model


def isvc_doc(name: str, model: str, runtime: str, *, router: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": {"name": model}, "runtime": {"name": runtime}, "engine": {"minReplicas": 1}}
    if router:
        spec["router"] = {"minReplicas": 1}
    return {
        "apiVersion": "ome.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


@pytest.fixture(scope="module")
def kubeconfig(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    apply_crds(cluster)
    cluster.kubectl("create", "namespace", NS, check=False)
    cluster.kubectl("apply", "-f", str(RUNTIME))
    return write_operator_kubeconfig(cluster, tmp_path_factory.mktemp("status") / "kubeconfig")


@pytest.fixture(scope="module")
def operator(
    cluster: ClusterHandle, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    log = tmp_path_factory.mktemp("status-log") / "operator.log"
    with running_operator(kubeconfig, log) as op:
        yield op
        cluster.kubectl("delete", "isvc", "--all", "-n", NS, "--wait=false", check=False)
        cluster.kubectl("delete", "clusterbasemodel", "status-qwen", "status-edit", "--ignore-not-found")


def apply(cluster: ClusterHandle, *objects: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(list(objects)))


def test_removing_the_router_removes_its_status(cluster: ClusterHandle, operator: OperatorProcess) -> None:
    runtime = docs(RUNTIME)[0]["metadata"]["name"]
    apply(cluster, model_doc("status-qwen"), isvc_doc("whole", "status-qwen", runtime))

    def with_router() -> bool:
        status = kjson(cluster, "get", "isvc", "whole", "-n", NS).get("status") or {}
        return "router" in (status.get("components") or {}) and bool(condition({"status": status}, "RouterReady"))

    wait_for(with_router, timeout=60, what="status.components.router and RouterReady")
    cluster.kubectl("patch", "isvc", "whole", "-n", NS, "--type=json", "-p", '[{"op":"remove","path":"/spec/router"}]')

    def without_router() -> bool:
        status = kjson(cluster, "get", "isvc", "whole", "-n", NS).get("status") or {}
        types = {c["type"] for c in status.get("conditions") or []}
        return "router" not in (status.get("components") or {}) and "RouterReady" not in types

    wait_for(without_router, timeout=60, what="status.components.router and RouterReady gone")


def test_cli_and_operator_give_the_same_answer(
    cluster: ClusterHandle, operator: OperatorProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A PD InferenceService without a router, on a runtime without decoderConfig: both say the same."""
    runtime = docs(RUNTIME)
    bad = isvc_doc("same-answer", "status-qwen", runtime[0]["metadata"]["name"], router=False)
    bad["spec"]["decoder"] = {"minReplicas": 1}
    apply(cluster, bad)
    files = tmp_path / "inputs.yaml"
    files.write_text(yaml.safe_dump_all([model_doc("status-qwen"), *runtime, bad]))
    assert cli_main(["render", "-f", str(files)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert errors

    def spec_condition() -> dict[str, Any] | None:
        cond = condition(kjson(cluster, "get", "isvc", "same-answer", "-n", NS), "SpecValid")
        return cond if cond.get("status") == "False" else None

    cond = wait_for(spec_condition, timeout=30, what="SpecValid=False on the operator's side")
    for line in errors:
        # error: InferenceService/same-answer: <path>: <message>  ->  "<path>: <message>" is in the condition
        assert line.split(": ", 2)[2] in cond["message"], (line, cond)
    assert (
        kjson(cluster, "get", "statefulsets,deployments", "-n", NS, "-l", "ome.io/inferenceservice=same-answer")[
            "items"
        ]
        == []
    )


def test_storage_edit_replaces_the_download_job(cluster: ClusterHandle, operator: OperatorProcess) -> None:
    apply(cluster, model_doc("status-edit", node="h200-002"))

    def jobs() -> set[str]:
        items = kjson(cluster, "get", "jobs", "-n", "ome", "-l", "ome.io/model=cluster.status-edit")["items"]
        return {j["metadata"]["name"] for j in items if not j["metadata"].get("deletionTimestamp")}

    first = wait_for(lambda: jobs() or None, timeout=30, what="the first download Job")
    edited = model_doc("status-edit", node="h200-002")
    edited["spec"]["storage"]["storageUri"] += "@main"
    apply(cluster, edited)
    second = wait_for(lambda: (j := jobs()) and j != first and j, timeout=30, what="a new download Job")
    assert not (first & second)
    wait_for(
        lambda: condition(kjson(cluster, "get", "clusterbasemodel", "status-edit"), "Ready").get("status") == "True",
        timeout=60,
        what="the edited model Ready again",
    )
    assert "422" not in operator.log_path.read_text()
