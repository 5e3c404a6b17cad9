"""Proof that the local control plane is a real Kubernetes: validation, server-side apply,
scheduling of GPU pods, Job completion, garbage collection and RBAC all come from the real
kube-apiserver, kube-controller-manager and kube-scheduler (kwok only fakes the kubelets)."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from devtools.cluster import kubectl_path
from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.nodes import CLUSTER_LABEL

pytestmark = pytest.mark.integration

GPU = "nvidia.com/gpu"


@pytest.fixture
def api(cluster: ClusterHandle) -> Iterator[Any]:
    with cluster.api_client() as api_client:
        yield api_client


@pytest.fixture
def ns(cluster: ClusterHandle) -> Iterator[str]:
    with cluster.temp_namespace("smoke") as name:
        yield name


def _container(name: str = "main", gpus: int = 0) -> dict[str, Any]:
    resources: dict[str, Any] = {"requests": {"cpu": "100m", "memory": "64Mi"}}
    if gpus:
        resources["limits"] = {GPU: str(gpus)}
    # kwok never pulls or runs the image; the name only has to be valid.
    return {"name": name, "image": "registry.invalid/smoke:1", "resources": resources}


def test_nodes_are_h200_shaped(api: Any) -> None:
    nodes = client.CoreV1Api(api).list_node(label_selector=CLUSTER_LABEL).items
    assert len(nodes) >= 16
    for node in nodes:
        assert node.status.allocatable[GPU] == "8"
        assert node.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-H200"
        assert node.metadata.labels["nvidia.com/gpu.present"] == "true"
        assert "topology.kubernetes.io/zone" in node.metadata.labels
        assert "node.kubernetes.io/instance-type" in node.metadata.labels
        assert not node.spec.taints
        ips = [a.address for a in node.status.addresses if a.type == "InternalIP"]
        assert ips and all(ip.startswith("127.") for ip in ips), ips


def test_crd_structural_schema_rejects_bad_object(api: Any) -> None:
    ext = client.ApiextensionsV1Api(api)
    custom = client.CustomObjectsApi(api)
    group = "smoke.ome-operator.dev"
    plural = f"gadgets{uuid.uuid4().hex[:6]}"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Cluster",
            "names": {"plural": plural, "singular": plural[:-1], "kind": f"Gadget{plural[-6:].upper()}"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["replicas"],
                                    "properties": {
                                        "replicas": {"type": "integer", "minimum": 1},
                                        "mode": {"type": "string", "enum": ["fast", "slow"]},
                                    },
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    ext.create_custom_resource_definition(crd)
    try:
        wait_for(
            lambda: any(
                c.type == "Established" and c.status == "True"
                for c in (ext.read_custom_resource_definition(crd["metadata"]["name"]).status.conditions or [])
            ),
            timeout=30,
            what="CRD Established",
        )
        kind = crd["spec"]["names"]["kind"]

        def obj(name: str, spec: dict[str, Any]) -> dict[str, Any]:
            return {"apiVersion": f"{group}/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}

        # A freshly Established CRD can take a moment to be served; poll the good create.
        def create_good() -> bool:
            try:
                custom.create_cluster_custom_object(group, "v1", plural, obj("good", {"replicas": 2, "extra": 1}))
            except client.ApiException as exc:
                if exc.status == 404:
                    return False
                raise
            return True

        wait_for(create_good, timeout=30, what="custom resource endpoint served")
        good = custom.get_cluster_custom_object(group, "v1", plural, "good")
        assert "extra" not in good["spec"], "a structural schema prunes unknown fields"

        with pytest.raises(client.ApiException) as bad:
            custom.create_cluster_custom_object(group, "v1", plural, obj("bad", {"replicas": "three", "mode": "x"}))
        assert bad.value.status == 422
        assert "spec.replicas" in bad.value.body and "spec.mode" in bad.value.body

        with pytest.raises(client.ApiException) as missing:
            custom.create_cluster_custom_object(group, "v1", plural, obj("bad2", {"mode": "fast"}))
        assert missing.value.status == 422
    finally:
        ext.delete_custom_resource_definition(crd["metadata"]["name"])


def test_server_side_apply_conflict_between_field_managers(api: Any, ns: str) -> None:
    core = client.CoreV1Api(api)

    def apply(manager: str, value: str, force: bool = False) -> Any:
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"key": value}}
        return core.patch_namespaced_config_map(
            "ssa",
            ns,
            body,
            field_manager=manager,
            force=force,
            _content_type="application/apply-patch+yaml",
        )

    apply("alice", "a")
    with pytest.raises(client.ApiException) as conflict:
        apply("bob", "b")
    assert conflict.value.status == 409
    assert "alice" in conflict.value.body and ".data.key" in conflict.value.body

    forced = apply("bob", "b", force=True)
    assert forced.data == {"key": "b"}
    owners = {m.manager for m in forced.metadata.managed_fields if m.operation == "Apply"}
    assert owners == {"bob"}, "a forced apply takes the field away from the other manager"


def test_gpu_statefulset_packs_one_pod_per_node_and_17th_is_pending(api: Any, ns: str) -> None:
    core = client.CoreV1Api(api)
    apps = client.AppsV1Api(api)
    # Only the cluster's own nodes: another test may add nodes of its own.
    gpu_nodes = [
        n.metadata.name for n in core.list_node(label_selector=f"{CLUSTER_LABEL},nvidia.com/gpu.present=true").items
    ]
    n = len(gpu_nodes)
    assert n >= 16

    def gpu_pods_elsewhere() -> bool:
        busy = [
            p
            for p in core.list_pod_for_all_namespaces(field_selector="status.phase=Running").items
            if p.metadata.namespace != ns and any(GPU in (c.resources.limits or {}) for c in p.spec.containers)
        ]
        return not busy

    # Other tests in the session may still be letting go of GPUs; the packing below needs all of them.
    wait_for(gpu_pods_elsewhere, timeout=60, what="no GPU pods from other tests")

    labels = {"app": "gpu-smoke"}
    sts: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "gpu"},
        "spec": {
            "replicas": n,
            # OrderedReady would start one pod at a time; the test is about placement, not order.
            "podManagementPolicy": "Parallel",
            "serviceName": "gpu",
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [_container(gpus=8)],
                    "terminationGracePeriodSeconds": 0,
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [
                                    {"matchExpressions": [{"key": CLUSTER_LABEL, "operator": "Exists"}]}
                                ]
                            }
                        }
                    },
                },
            },
        },
    }
    apps.create_namespaced_stateful_set(ns, sts)

    def running_pods() -> list[Any]:
        pods = core.list_namespaced_pod(ns, label_selector="app=gpu-smoke").items
        running = [p for p in pods if p.status.phase == "Running"]
        return running if len(running) == n else []

    running = wait_for(running_pods, timeout=120, what=f"{n} GPU pods Running")
    placed = [p.spec.node_name for p in running]
    assert sorted(placed) == sorted(gpu_nodes), "one 8-GPU pod per node"
    pod_ips = [p.status.pod_ip for p in running]
    assert len(set(pod_ips)) == n and all(ip.startswith("127.") for ip in pod_ips), pod_ips

    apps.patch_namespaced_stateful_set_scale("gpu", ns, {"spec": {"replicas": n + 1}})
    extra = f"gpu-{n}"

    def failed_scheduling() -> str:
        events = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={extra}").items
        return next((e.message for e in events if e.reason == "FailedScheduling"), "")

    message = wait_for(failed_scheduling, timeout=60, what=f"FailedScheduling event for {extra}")
    assert f"Insufficient {GPU}" in message, message
    pod = core.read_namespaced_pod(extra, ns)
    assert pod.status.phase == "Pending" and not pod.spec.node_name

    apps.delete_namespaced_stateful_set("gpu", ns)
    wait_for(
        lambda: not core.list_namespaced_pod(ns, label_selector="app=gpu-smoke").items,
        timeout=60,
        what="GPU pods gone",
    )


def test_job_completes(api: Any, ns: str) -> None:
    batch = client.BatchV1Api(api)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "once"},
        "spec": {
            "completions": 2,
            "parallelism": 2,
            "backoffLimit": 0,
            "template": {"spec": {"restartPolicy": "Never", "containers": [_container()]}},
        },
    }
    batch.create_namespaced_job(ns, job)

    def complete() -> bool:
        status = batch.read_namespaced_job_status("once", ns).status
        return any(c.type == "Complete" and c.status == "True" for c in (status.conditions or []))

    wait_for(complete, timeout=60, what="Job Complete")
    assert batch.read_namespaced_job_status("once", ns).status.succeeded == 2
    batch.delete_namespaced_job("once", ns, propagation_policy="Background")


def test_deleting_owner_garbage_collects_children(api: Any, ns: str) -> None:
    core = client.CoreV1Api(api)
    apps = client.AppsV1Api(api)

    parent = core.create_namespaced_config_map(ns, {"metadata": {"name": "parent"}})
    owner_ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "parent", "uid": parent.metadata.uid}
    core.create_namespaced_config_map(ns, {"metadata": {"name": "child", "ownerReferences": [owner_ref]}})

    labels = {"app": "gc-smoke"}
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [_container()]}},
        },
    }
    apps.create_namespaced_deployment(ns, deploy)
    wait_for(
        lambda: len([p for p in core.list_namespaced_pod(ns, label_selector="app=gc-smoke").items
                     if p.status.phase == "Running"]) == 2,
        timeout=60,
        what="Deployment pods Running",
    )  # fmt: skip
    assert apps.list_namespaced_replica_set(ns, label_selector="app=gc-smoke").items

    core.delete_namespaced_config_map("parent", ns, propagation_policy="Background")
    apps.delete_namespaced_deployment("web", ns, propagation_policy="Background")

    def child_gone() -> bool:
        with contextlib.suppress(client.ApiException):
            core.read_namespaced_config_map("child", ns)
            return False
        return True

    wait_for(child_gone, timeout=60, what="owned ConfigMap garbage-collected")
    wait_for(
        lambda: (
            not apps.list_namespaced_replica_set(ns, label_selector="app=gc-smoke").items
            and not core.list_namespaced_pod(ns, label_selector="app=gc-smoke").items
        ),
        timeout=60,
        what="ReplicaSet and pods garbage-collected",
    )


def test_kubectl_auth_can_i_reflects_namespaced_role(cluster: ClusterHandle, api: Any, ns: str, tmp_path: Path) -> None:
    core = client.CoreV1Api(api)
    rbac = client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(ns, {"metadata": {"name": "reader"}})
    rbac.create_namespaced_role(
        ns,
        {
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
        },
    )
    user = f"system:serviceaccount:{ns}:reader"

    def can_i(*args: str) -> str:
        return cluster.kubectl("auth", "can-i", *args, f"--as={user}", check=False).stdout.strip()

    assert can_i("list", "pods", "-n", ns) == "no"
    rbac.create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": "pod-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}],
        },
    )
    wait_for(lambda: can_i("list", "pods", "-n", ns) == "yes", timeout=30, what="RoleBinding in effect")
    assert can_i("delete", "pods", "-n", ns) == "no"
    assert can_i("list", "pods", "-n", "default") == "no"
    assert can_i("list", "secrets", "-n", ns) == "no"

    # The same answers with the ServiceAccount's own token from the TokenRequest API: the token is
    # signed with the cluster's key and accepted by the apiserver. A kubeconfig holding only the
    # token, so the admin client certificate cannot answer instead.
    token = core.create_namespaced_service_account_token(
        "reader", ns, {"spec": {"expirationSeconds": 600}}
    ).status.token
    server, ca = cluster.server()
    kubeconfig = tmp_path / "reader.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority": str(ca)}}],
                "users": [{"name": "reader", "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "reader"}}],
                "current-context": "c",
            }
        )
    )

    def can_i_with_token(*args: str) -> str:
        proc = subprocess.run(
            [str(kubectl_path()), f"--kubeconfig={kubeconfig}", "auth", "can-i", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return proc.stdout.strip() or proc.stderr.strip()

    assert can_i_with_token("list", "pods", "-n", ns) == "yes"
    assert can_i_with_token("delete", "pods", "-n", ns) == "no"
    whoami = subprocess.run(
        [
            str(kubectl_path()),
            f"--kubeconfig={kubeconfig}",
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert whoami.stdout == user


def test_audit_log_records_writes_per_user(cluster: ClusterHandle, api: Any, ns: str) -> None:
    if cluster.audit_log is None:
        pytest.skip("the reused cluster (OME_TEST_KUBECONFIG) has no audit log beside its kubeconfig")
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(ns, {"metadata": {"name": "audited"}})
    core.read_namespaced_config_map("audited", ns)  # reads are not audited

    def writes() -> list[dict[str, Any]]:
        return [
            e
            for e in cluster.audit_events()
            if e.get("objectRef", {}).get("namespace") == ns and e["objectRef"].get("name") == "audited"
        ]

    events = wait_for(writes, timeout=10, what="audit event for the ConfigMap create")
    assert [(e["verb"], e["user"]["username"], e["responseStatus"]["code"]) for e in events] == [
        ("create", "admin", 201)
    ]
