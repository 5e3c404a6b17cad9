"""The rendered download Job, as the operator would create it, is accepted by a real API server."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.cluster_testing import ClusterHandle
from ome_operator.api import ClusterBaseModel
from ome_operator.kube.client import Kube
from ome_operator.render.context import Settings
from ome_operator.render.download import render_model

pytestmark = pytest.mark.integration

MODEL = {
    "apiVersion": "ome.io/v1beta1",
    "kind": "ClusterBaseModel",
    "metadata": {"name": "gated-llama", "uid": "4f1c0c8e-0000-4000-8000-000000000001"},
    "spec": {
        "storage": {
            "storageUri": "hf://meta-llama/Llama-3.1-8B-Instruct",
            "path": "/raid/models/meta/llama-3-1-8b-instruct",
            "key": "hf-token",
        }
    },
}


def test_rendered_download_job_is_accepted(cluster: ClusterHandle) -> None:
    model = ClusterBaseModel.model_validate(MODEL)
    objects = render_model(model, ["h200-000"], Settings(operator_namespace="ome", hf_endpoint="http://127.0.0.1:1"))
    with cluster.api_client() as api:
        kube = Kube(api)
        cluster.kubectl("create", "namespace", "ome", check=False)
        accepted: dict[str, Any] = {}
        for obj in objects:
            # A dry run: everything is validated and defaulted, nothing is stored (the owner is fictional).
            accepted[obj["kind"]] = kube.apply(obj, dry_run=True)
    job = accepted["Job"]
    pod = job["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchFields"][0] == {"key": "metadata.name", "operator": "In", "values": ["h200-000"]}
    # The model root is the volume, the model's directory its subPath (the kubelet creates nothing).
    assert pod["volumes"][0]["hostPath"] == {"path": "/raid/models", "type": "Directory"}
    assert pod["containers"][0]["volumeMounts"][0]["subPath"] == "meta/llama-3-1-8b-instruct"
    prepare = pod["initContainers"][0]
    assert prepare["command"] == ["python3", "-m", "ome_operator.downloader.confine"]
    assert prepare["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert pod["serviceAccountName"] == accepted["ServiceAccount"]["metadata"]["name"]
    container = pod["containers"][0]
    token = next(e for e in container["env"] if e["name"] == "HF_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["runAsUser"] == 65532
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [3]
    role = accepted["Role"]
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [accepted["ConfigMap"]["metadata"]["name"]],
            "verbs": ["get", "patch", "update"],
        }
    ]
