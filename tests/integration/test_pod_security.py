"""The pods the operator renders, judged by the local kube-apiserver's Pod Security admission.

The download Job's pod and the serving pods of a model are created with a server-side dry run in
namespaces labelled `pod-security.kubernetes.io/enforce: baseline` and `restricted` (PodSecurity
admission is on by default in kube-apiserver; the first test proves it is here). What the API
server answers is what the README's security section states:

- baseline refuses a node-local model (hf://, local://) for one reason only, its hostPath volume:
  nothing else in either pod breaks baseline (the init container's root + CAP_CHOWN is allowed);
- a pvc:// model's pods are admitted under baseline, and under restricted its download pod is too;
  its serving pods need the runtime's containers to carry a restricted securityContext, and are
  admitted once they do.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from devtools.cluster_testing import ClusterHandle
from ome_operator.api.load import load_text
from ome_operator.render.bundle import render_bundle
from ome_operator.render.context import Settings

pytestmark = pytest.mark.integration

Obj = dict[str, Any]
RESTRICTED_CONTEXT = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
VIOLATIONS = re.compile(r'violates PodSecurity "(?P<level>[a-z]+):latest": (?P<what>.*)$', re.MULTILINE)


def inputs(namespace: str, uri: str, runner_context: Obj | None) -> str:
    runner: Obj = {
        "name": "ome-container",
        "image": "sglang:test",
        "command": ["python3", "-m", "sglang.launch_server", "--model-path", "$(MODEL_PATH)"],
        "ports": [{"containerPort": 8080, "name": "http"}],
        "resources": {"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 1}},
        **({"securityContext": runner_context} if runner_context else {}),
    }
    fmt = {"modelFormat": {"name": "safetensors", "version": "1.0.0"}, "modelArchitecture": "Qwen3ForCausalLM"}
    docs: list[Obj] = [
        {
            "apiVersion": "ome.io/v1beta1",
            "kind": "BaseModel",
            "metadata": {"name": "qwen", "namespace": namespace},
            "spec": {**fmt, "modelParameterSize": "0.6B", "storage": {"storageUri": uri}},
        },
        {
            "apiVersion": "ome.io/v1beta1",
            "kind": "ServingRuntime",
            "metadata": {"name": "srt-qwen", "namespace": namespace},
            "spec": {
                "supportedModelFormats": [{**fmt, "autoSelect": True}],
                "engineConfig": {"runner": runner},
            },
        },
        {
            "apiVersion": "ome.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": "qwen", "namespace": namespace},
            "spec": {"model": {"name": "qwen", "kind": "BaseModel"}, "engine": {"minReplicas": 1}},
        },
    ]
    return yaml.safe_dump_all(docs)


def without_owners(obj: Obj) -> Obj:
    meta = {k: v for k, v in obj["metadata"].items() if k != "ownerReferences"}
    return {**obj, "metadata": meta}


def rendered_pods(namespace: str, uri: str, runner_context: Obj | None = None) -> tuple[list[Obj], dict[str, Obj]]:
    """The ServiceAccounts and the pod of each workload (by kind) the operator renders for a model
    and an InferenceService in `namespace`."""
    loaded = load_text(inputs(namespace, uri.format(namespace=namespace), runner_context), "pod-security")
    assert not loaded.problems, loaded.problems
    bundle = render_bundle(loaded.objects, Settings(), ["node-0"])
    assert not bundle.problems, bundle.problems
    # Without their owner references: the owners here are never created, and the garbage collector
    # deletes a dependent whose owner does not exist (seen in the full suite, where it is quick).
    accounts = [without_owners(o) for o in bundle.objects if o["kind"] == "ServiceAccount"]
    pods = {}
    for obj in bundle.objects:
        if obj["kind"] in ("Job", "Deployment", "StatefulSet"):
            template = obj["spec"]["template"]
            pods[obj["kind"]] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"{obj['metadata']['name'][:50]}-probe", "namespace": namespace},
                "spec": template["spec"],
            }
    assert set(pods) == {"Job", "Deployment"}, set(pods)
    return accounts, pods


@contextlib.contextmanager
def pss_namespace(cluster: ClusterHandle, level: str) -> Iterator[str]:
    with cluster.temp_namespace(f"pss-{level}") as namespace:
        cluster.kubectl("label", "namespace", namespace, f"pod-security.kubernetes.io/enforce={level}")
        yield namespace


def admit(cluster: ClusterHandle, pod: Obj) -> tuple[bool, str]:
    """A server-side dry run of the pod's creation: admitted, or the API server's refusal."""
    proc = cluster.kubectl("create", "--dry-run=server", "-f", "-", "-o", "name", stdin=json.dumps(pod), check=False)
    return proc.returncode == 0, proc.stderr


def violations(message: str, level: str) -> str:
    match = VIOLATIONS.search(message)
    assert match is not None and match["level"] == level, message
    return match["what"]


def test_pod_security_admission_is_on(cluster: ClusterHandle) -> None:
    with pss_namespace(cluster, "baseline") as namespace:
        privileged = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "privileged", "namespace": namespace},
            "spec": {"containers": [{"name": "c", "image": "x", "securityContext": {"privileged": True}}]},
        }
        admitted, message = admit(cluster, privileged)
        assert not admitted and "privileged" in violations(message, "baseline")


# A BaseModel's local:// directory is under its namespace's directory, like any host path it uses.
@pytest.mark.parametrize("uri", ["hf://Qwen/Qwen3-0.6B", "local:///mnt/models/{namespace}/Qwen3-0.6B"])
def test_baseline_refuses_node_local_weights_for_their_hostpath_only(cluster: ClusterHandle, uri: str) -> None:
    with pss_namespace(cluster, "baseline") as namespace:
        accounts, pods = rendered_pods(namespace, uri)
        cluster.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": accounts}))
        for kind, pod in pods.items():
            admitted, message = admit(cluster, pod)
            assert not admitted, f"{kind} pod admitted under baseline with a hostPath volume"
            # One violation, the hostPath; e.g. 'hostPath volumes (volume "models")'.
            what = violations(message, "baseline")
            assert re.fullmatch(r'hostPath volumes? \(volumes? "[^"]+"\)', what), (kind, what)


def test_claim_weights_pass_baseline(cluster: ClusterHandle) -> None:
    with pss_namespace(cluster, "baseline") as namespace:
        accounts, pods = rendered_pods(namespace, "pvc://model-store/qwen/Qwen3-0.6B")
        cluster.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": accounts}))
        for kind, pod in pods.items():
            admitted, message = admit(cluster, pod)
            assert admitted, f"{kind}: {message}"


def test_restricted_admits_the_claim_download_and_serving_pods_with_a_restricted_runner(
    cluster: ClusterHandle,
) -> None:
    with pss_namespace(cluster, "restricted") as namespace:
        accounts, pods = rendered_pods(namespace, "pvc://model-store/qwen/Qwen3-0.6B")
        cluster.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": accounts}))
        admitted, message = admit(cluster, pods["Job"])
        assert admitted, message
        # A runtime whose container says nothing about its security context is refused, for
        # exactly the fields restricted requires of every container.
        admitted, message = admit(cluster, pods["Deployment"])
        what = violations(message, "restricted")
        for field in ("allowPrivilegeEscalation != false", "unrestricted capabilities", "runAsNonRoot != true"):
            assert field in what, what
        assert "seccompProfile" in what, what
        # The same runtime with the restricted context on its runner: admitted.
        _, fixed = rendered_pods(namespace, "pvc://model-store/qwen/Qwen3-0.6B", RESTRICTED_CONTEXT)
        admitted, message = admit(cluster, fixed["Deployment"])
        assert admitted, message
