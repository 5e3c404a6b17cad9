"""Host paths on the local cluster: refused at admission when no setting is needed, otherwise a
condition naming spec.storage.path, and in both cases nothing created (no Job, no node label, no
workload); an allowed path gets Jobs that mount the root with the model's directory as subPath.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.operator import apply_crds, write_operator_kubeconfig

from .operator_env import condition, kjson, running_operator

pytestmark = pytest.mark.integration
NS = "paths-team"


def model(name: str, storage: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {
        "apiVersion": "ome.io/v1beta1",
        "kind": "BaseModel" if namespace else "ClusterBaseModel",
        "metadata": meta,
        "spec": {"storage": {"nodeSelector": {"kubernetes.io/hostname": "h200-002"}, **storage}},
    }


@pytest.fixture(scope="module")
def crds(cluster: ClusterHandle) -> ClusterHandle:
    apply_crds(cluster)  # once: the CRDs are large, and the cases only need them present
    return cluster


def apply(cluster: ClusterHandle, *objects: dict[str, Any], check: bool = True) -> Any:
    return cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(list(objects)), check=check)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/", "must be a normalized absolute path below '/'"),
        ("/raid/models/../../etc", "must not contain '.' or '..' segments"),
        ("/raid/models/..", "must not contain '.' or '..' segments"),
        ("/raid//models/m", "must be a normalized absolute path below '/'"),
        ("/raid/models/m/", "must be a normalized absolute path below '/'"),
    ],
)
def test_admission_refuses_unnormalized_paths(crds: ClusterHandle, path: str, message: str) -> None:
    cluster = crds
    name = f"refused-{hashlib.sha256(path.encode()).hexdigest()[:8]}"
    proc = apply(cluster, model(name, {"storageUri": "hf://org/model", "path": path}), check=False)
    assert proc.returncode != 0 and "spec.storage.path" in proc.stderr and message in proc.stderr, proc.stderr
    assert cluster.kubectl("get", "clusterbasemodel", name, check=False).returncode != 0


def model_children(cluster: ClusterHandle, namespace: str, label: str) -> list[str]:
    found = kjson(cluster, "get", "jobs,configmaps,serviceaccounts,roles", "-n", namespace, "-l", label)
    return [f"{o['kind']}/{o['metadata']['name']}" for o in found["items"]]


def test_paths_outside_the_roots_are_a_condition_and_create_nothing(crds: ClusterHandle, tmp_path: Path) -> None:
    cluster = crds
    cluster.kubectl("create", "namespace", NS, check=False)
    kubeconfig = write_operator_kubeconfig(cluster, tmp_path / "kubeconfig")
    outside = "outside the allowed model roots"
    refused = [
        (model("path-etc", {"storageUri": "hf://org/model", "path": "/etc"}), "spec.storage.path", "ome", outside),
        (
            model("path-root-itself", {"storageUri": "hf://org/model", "path": "/raid/models"}),
            "spec.storage.path",
            "ome",
            outside,
        ),
        (model("path-local-etc", {"storageUri": "local:///etc"}), "spec.storage.storageUri", "ome", outside),
        (
            model("path-other-ns", {"storageUri": "hf://org/model", "path": "/raid/models/someone-else/m"}, NS),
            "spec.storage.path",
            NS,
            outside,
        ),
        # Inside its namespace's directory, but where a ClusterBaseModel's weights are.
        (
            model("path-squatter", {"storageUri": "hf://org/model", "path": f"/raid/models/{NS}/vendor/m"}, NS),
            "spec.storage.path",
            NS,
            "the directory of ClusterBaseModel path-vendor",
        ),
    ]
    vendor = model("path-vendor", {"storageUri": "hf://org/model", "path": f"/raid/models/{NS}/vendor/m"})
    allowed = model("path-fine", {"storageUri": "hf://org/model"}, NS)
    isvc = {
        "apiVersion": "ome.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "uses-etc", "namespace": NS},
        "spec": {"model": {"name": "path-other-ns", "kind": "BaseModel"}, "engine": {"minReplicas": 1}},
    }
    with running_operator(kubeconfig, tmp_path / "operator.log"):
        apply(cluster, vendor, *(doc for doc, _, _, _ in refused), allowed, isvc)
        try:
            for doc, field, _, why in refused:
                kind, name = doc["kind"].lower(), doc["metadata"]["name"]
                where = ["-n", NS] if doc["kind"] == "BaseModel" else []

                def reported(kind: str = kind, name: str = name, where: list[str] = where) -> dict[str, Any] | None:
                    cond = condition(kjson(cluster, "get", kind, name, *where), "Downloaded")
                    return cond if cond.get("reason") == "InvalidStorage" else None

                cond = wait_for(reported, timeout=60, what=f"{name}: Downloaded=False InvalidStorage")
                assert cond["status"] == "False"
                assert cond["message"].startswith(f"{field}: ") or field in cond["message"], cond
                assert why in cond["message"], cond

            # The allowed neighbour got its Job: the refusals are not the operator doing nothing.
            def fine_job() -> dict[str, Any] | None:
                jobs = kjson(cluster, "get", "jobs", "-n", NS, "-l", "ome.io/model=paths-team.path-fine")["items"]
                return jobs[0] if jobs else None

            job = wait_for(fine_job, timeout=60, what="the allowed model's Job")
            pod = job["spec"]["template"]["spec"]
            assert pod["volumes"][0]["hostPath"] == {"path": "/raid/models", "type": "Directory"}
            download = pod["containers"][0]
            assert download["volumeMounts"][0]["subPath"] == f"{NS}/path-fine"
            assert download["args"][download["args"].index("--confine-root") + 1] == "/raid/models"

            def isvc_refused() -> dict[str, Any] | None:
                cond = condition(kjson(cluster, "get", "isvc", "uses-etc", "-n", NS), "ModelReady")
                return cond if cond.get("reason") == "InvalidStorage" else None

            cond = wait_for(isvc_refused, timeout=60, what="uses-etc: ModelReady=False InvalidStorage")
            assert "spec.storage.path" in cond["message"]
            time.sleep(3)  # a few more passes: still nothing
            for doc, _, namespace, _ in refused:
                scope = "cluster" if doc["kind"] == "ClusterBaseModel" else NS
                label = f"ome.io/model={scope}.{doc['metadata']['name']}"
                assert model_children(cluster, namespace, label) == [], doc["metadata"]["name"]
            nodes = kjson(cluster, "get", "nodes")["items"]
            labels = {key for n in nodes for key in (n["metadata"].get("labels") or {}) if "path-" in key}
            assert not [key for key in labels if "path-fine" not in key and "path-vendor" not in key], labels
            workloads = kjson(cluster, "get", "statefulsets,deployments", "-n", NS, "-l", "ome.io/inferenceservice")
            assert not [o for o in workloads["items"] if "uses-etc" in o["metadata"]["name"]]
        finally:
            cluster.kubectl("delete", "isvc", "uses-etc", "-n", NS, "--ignore-not-found", "--wait=false")
            for doc in [*(d for d, _, _, _ in refused), allowed, vendor]:
                where = ["-n", NS] if doc["kind"] == "BaseModel" else []
                kind = doc["kind"].lower()
                cluster.kubectl("delete", kind, doc["metadata"]["name"], *where, "--ignore-not-found", "--timeout=60s")
