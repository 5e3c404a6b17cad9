"""Object-store credentials on the local cluster: a Secret or data key that is missing is reported
in the model's Downloaded condition, naming the Secret, and the Job carries credentials only as
secretKeyRefs (the runner runs the download Job's real process, as a kubelet would)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.operator import OperatorProcess, apply_crds, write_operator_kubeconfig

from .operator_env import condition, kjson, running_operator
from .test_status_conditions import apply

pytestmark = pytest.mark.integration
NODE = "h200-006"
ACCESS_KEY = "AKIDCLUSTERTEST00001"
# (model, storage URI, Secret, data present in the Secret, data key the downloader will name)
CASES = [
    ("creds-s3", "s3://models/kimi", "s3-half", {"AWS_ACCESS_KEY_ID": ACCESS_KEY}, "AWS_SECRET_ACCESS_KEY"),
    ("creds-oci", "oci://n/axns/b/models/o/kimi", "oci-absent", None, "AWS_ACCESS_KEY_ID"),
    ("creds-gcs", "gs://models/kimi", "gcs-empty", {}, "token"),
    ("creds-azure", "az://contoso/models/kimi", "azure-absent", None, "AZURE_STORAGE_KEY"),
]


@pytest.fixture(scope="module")
def operator(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    apply_crds(cluster)
    cluster.kubectl("create", "namespace", "ome", check=False)
    work = tmp_path_factory.mktemp("store-credentials")
    kubeconfig = write_operator_kubeconfig(cluster, work / "kubeconfig")
    with running_operator(kubeconfig, work / "operator.log") as op:
        yield op


def model(name: str, uri: str, secret: str) -> dict[str, Any]:
    return {
        "apiVersion": "ome.io/v1beta1",
        "kind": "ClusterBaseModel",
        "metadata": {"name": name},
        "spec": {
            "storage": {
                "storageUri": uri,
                "path": f"/raid/models/test-creds/{name}",
                "key": secret,
                # Never reached: the downloader stops at the missing credential.
                "parameters": {"endpoint": "http://127.0.0.1:9", "region": "us-ashburn-1"},
                "nodeSelector": {"kubernetes.io/hostname": NODE},
            }
        },
    }


def test_a_missing_credential_is_a_condition_naming_the_secret(cluster: ClusterHandle, operator: object) -> None:
    for _, _, secret, data, _ in CASES:
        if data is not None:
            apply(cluster, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret, "namespace": "ome"},
                            "stringData": data})  # fmt: skip
    apply(cluster, *(model(name, uri, secret) for name, uri, secret, _, _ in CASES))
    try:
        for name, _, secret, _, data_key in CASES:

            def failed(name: str = name) -> dict[str, Any] | None:
                obj = kjson(cluster, "get", "clusterbasemodel", name)
                return obj if (obj.get("status") or {}).get("state") == "Failed" else None

            obj = wait_for(failed, timeout=180, what=f"{name} Failed on its missing credential")
            cond = condition(obj, "Downloaded")
            assert cond["reason"] == "DownloadFailed", cond
            assert f"Secret ome/{secret}" in cond["message"] and repr(data_key) in cond["message"], cond
            assert ACCESS_KEY not in json.dumps(obj)
            jobs = kjson(cluster, "get", "jobs", "-n", "ome", "-l", f"ome.io/model=cluster.{name}")["items"]
            assert jobs, name
            pods = kjson(cluster, "get", "pods", "-n", "ome", "-l", f"ome.io/model=cluster.{name}")["items"]
            assert len(pods) == 1, "a missing credential is permanent (exit 3): the Job must not retry"
            for job in jobs:
                text = json.dumps(job)
                assert ACCESS_KEY not in text, "the Job names the Secret's keys, never their values"
                env = job["spec"]["template"]["spec"]["containers"][0]["env"]
                refs = [
                    e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
                ]
                assert refs and all(r["name"] == secret and r["optional"] is True for r in refs), env
    finally:
        for name, _, secret, _, _ in CASES:
            cluster.kubectl("delete", "clusterbasemodel", name, "--ignore-not-found", "--timeout=60s")
            cluster.kubectl("delete", "secret", secret, "-n", "ome", "--ignore-not-found")
