"""The operator on a real control plane: OME's Kimi K2 files to a Ready 1P1D deployment on 16 nodes.

The tests run in file order and share one operator and one InferenceService (kimi-k2-instruct, which
fills all 128 GPUs); each leaves it Ready for the next.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.operator import (
    OperatorProcess,
    apply_crds,
    operator_writes,
    reference_files,
    write_operator_kubeconfig,
)

from .operator_env import condition, kjson, running_operator

pytestmark = pytest.mark.integration
NS = "kimi-k2-instruct"
ISVC = "kimi-k2-instruct"
SELECTOR = f"ome.io/inferenceservice={ISVC}"
CHILD_KINDS = ("statefulsets", "deployments", "services", "serviceaccounts", "roles", "rolebindings")
EXPECTED_CHILDREN = {
    "statefulset": {f"{ISVC}-engine-0", f"{ISVC}-engine-0-worker", f"{ISVC}-decoder-0", f"{ISVC}-decoder-0-worker"},
    "deployment": {f"{ISVC}-router"},
    "service": {
        ISVC,
        f"{ISVC}-engine",
        f"{ISVC}-engine-0",
        f"{ISVC}-decoder",
        f"{ISVC}-decoder-0",
        f"{ISVC}-router",
    },
    "serviceaccount": {f"{ISVC}-router"},
    "role": {f"{ISVC}-router"},
    "rolebinding": {f"{ISVC}-router"},
}


@pytest.fixture(scope="module")
def operator_kubeconfig(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    apply_crds(cluster)
    return write_operator_kubeconfig(cluster, tmp_path_factory.mktemp("operator") / "kubeconfig")


@pytest.fixture(scope="module")
def operator(
    cluster: ClusterHandle, operator_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    log = tmp_path_factory.mktemp("operator-log") / "operator.log"
    with running_operator(operator_kubeconfig, log) as op:
        try:
            yield op
        finally:
            # Delete while the operator still runs: its sweep removes the model's node labels at once.
            files = reference_files()
            cluster.kubectl("delete", "-f", str(files.isvc), "--ignore-not-found", "--wait=false")
            cluster.kubectl("delete", "-f", str(files.runtime), "-f", str(files.model), "--ignore-not-found")


def isvc(cluster: ClusterHandle) -> dict[str, Any]:
    return dict(kjson(cluster, "get", "inferenceservice", ISVC, "-n", NS))


def wait_ready(cluster: ClusterHandle, timeout: float = 90) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = isvc(cluster)
        ready = condition(obj, "Ready")
        gen_ok = (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
        return obj if ready.get("status") == "True" and gen_ok else None

    return wait_for(probe, timeout=timeout, what="InferenceService Ready")


def children(cluster: ClusterHandle) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for kind in CHILD_KINDS:
        for item in kjson(cluster, "get", kind, "-n", NS, "-l", SELECTOR)["items"]:
            found.setdefault(item["kind"].lower(), set()).add(item["metadata"]["name"])
    return found


def gpu_pods(cluster: ClusterHandle) -> list[dict[str, Any]]:
    pods = kjson(cluster, "get", "pods", "-n", NS, "-l", SELECTOR)["items"]
    return [p for p in pods if p["metadata"]["labels"].get("component") in ("engine", "decoder")]


def test_reference_files_go_ready_on_16_nodes(cluster: ClusterHandle, operator: OperatorProcess) -> None:
    files = reference_files()
    for path in files:
        cluster.kubectl("apply", "-f", str(path))
    obj = wait_ready(cluster, timeout=240)  # 16 real downloads first
    assert obj["status"]["url"] == f"http://{ISVC}.{NS}.svc.cluster.local"
    assert obj["status"]["gpus"] == 128
    pods = gpu_pods(cluster)
    assert len(pods) == 16
    nodes = [p["spec"]["nodeName"] for p in pods]
    assert len(set(nodes)) == 16, f"engine/decoder pods must land on 16 distinct nodes: {sorted(nodes)}"
    gpus = sum(int(c["resources"]["limits"]["nvidia.com/gpu"]) for p in pods for c in p["spec"]["containers"])
    assert gpus == 128
    allocated = {n: 0 for n in nodes}
    for p in pods:
        allocated[p["spec"]["nodeName"]] += 8
    assert set(allocated.values()) == {8}
    assert children(cluster) == EXPECTED_CHILDREN
    model = kjson(cluster, "get", "clusterbasemodel", ISVC)
    assert model["status"]["state"] == "Ready"
    assert model["status"]["nodesSummary"] == "16/16"
    labelled = kjson(cluster, "get", "nodes", "-l", f"models.ome.io/clusterbasemodel.{ISVC}=Ready")["items"]
    assert len(labelled) == 16
    events = kjson(cluster, "get", "events", "-n", NS, "--field-selector", "reason=InferenceServiceReady")["items"]
    assert events, "a Ready transition records an Event"


def test_steady_state_makes_no_writes(cluster: ClusterHandle, operator: OperatorProcess) -> None:
    wait_ready(cluster)
    # Let in-flight status updates of the workloads settle first.
    wait_for(lambda: not operator_writes(cluster, _ago(5)), timeout=60, interval=1, what="the operator to go quiet")
    start = _ago(0)
    deadline = time.monotonic() + 60  # covers three resync timer passes (20 s each)
    while time.monotonic() < deadline:
        writes = operator_writes(cluster, start)
        assert not writes, f"the operator wrote at steady state: {writes}"
        time.sleep(2)
    status, metrics = operator.get("/metrics")
    assert status == 200
    assert 'ome_reconcile_total{kind="InferenceService"}' in metrics


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("statefulset", f"{ISVC}-decoder-0-worker"),
        ("deployment", f"{ISVC}-router"),
        ("service", ISVC),
        ("service", f"{ISVC}-engine-0"),
        ("serviceaccount", f"{ISVC}-router"),
        ("role", f"{ISVC}-router"),
        ("rolebinding", f"{ISVC}-router"),
    ],
)
def test_deleted_child_is_restored(cluster: ClusterHandle, operator: OperatorProcess, kind: str, name: str) -> None:
    before = kjson(cluster, "get", kind, name, "-n", NS)["metadata"]["uid"]
    started = time.monotonic()
    cluster.kubectl("delete", kind, name, "-n", NS, "--wait=false")

    def restored() -> bool:
        proc = cluster.kubectl("get", kind, name, "-n", NS, "-o", "json", check=False)
        return proc.returncode == 0 and json.loads(proc.stdout)["metadata"]["uid"] != before

    wait_for(restored, timeout=15, what=f"{kind}/{name} to be recreated")
    assert time.monotonic() - started < 15
    wait_ready(cluster)


def test_deleted_model_children_are_restored(cluster: ClusterHandle, operator: OperatorProcess) -> None:
    selector = f"ome.io/model=cluster.{ISVC}"
    job = kjson(cluster, "get", "jobs", "-n", "ome", "-l", selector)["items"][0]["metadata"]
    configmap = f"{ISVC}-cluster-download"
    before = {
        ("job", job["name"]): job["uid"],
        ("configmap", configmap): kjson(cluster, "get", "configmap", configmap, "-n", "ome")["metadata"]["uid"],
    }
    for kind, name in before:
        cluster.kubectl("delete", kind, name, "-n", "ome", "--wait=false")

    def restored() -> bool:
        for (kind, name), uid in before.items():
            proc = cluster.kubectl("get", kind, name, "-n", "ome", "-o", "json", check=False)
            if proc.returncode != 0 or json.loads(proc.stdout)["metadata"]["uid"] == uid:
                return False
        return True

    wait_for(restored, timeout=20, what="the download Job and progress ConfigMap recreated")
    wait_for(
        lambda: kjson(cluster, "get", "clusterbasemodel", ISVC)["status"]["nodesSummary"] == "16/16",
        timeout=60,
        what="the model Ready on 16 nodes again",
    )
    wait_ready(cluster)


def test_edited_child_is_restored(cluster: ClusterHandle, operator: OperatorProcess) -> None:
    name = f"{ISVC}-decoder-0-worker"
    cluster.kubectl("scale", "statefulset", name, "-n", NS, "--replicas=5")
    wait_for(
        lambda: kjson(cluster, "get", "statefulset", name, "-n", NS)["spec"]["replicas"] == 11,
        timeout=15,
        what="worker replicas restored to 11",
    )
    wait_ready(cluster)


def test_scaling_engine_adds_a_group_without_touching_the_decoder(
    cluster: ClusterHandle, operator: OperatorProcess
) -> None:
    decoder = {
        n: kjson(cluster, "get", "statefulset", n, "-n", NS)["metadata"]["resourceVersion"]
        for n in (f"{ISVC}-decoder-0", f"{ISVC}-decoder-0-worker")
    }
    # OME's file caps the engine at maxReplicas 1; growing needs both bounds (minReplicas <= maxReplicas).
    two = '{"spec":{"engine":{"minReplicas":2,"maxReplicas":2}}}'
    cluster.kubectl("patch", "isvc", ISVC, "-n", NS, "--type=merge", "-p", two)

    def unschedulable() -> dict[str, Any] | None:
        cond = condition(isvc(cluster), "EngineReady")
        return cond if cond.get("reason") == "Unschedulable" else None

    cond = wait_for(unschedulable, timeout=60, what="EngineReady=False Unschedulable")
    assert cond["status"] == "False"
    assert "Insufficient nvidia.com/gpu" in cond["message"]
    assert condition(isvc(cluster), "Ready")["status"] == "False"
    new = [p for p in gpu_pods(cluster) if p["metadata"]["labels"].get("ome.io/group") == "1"]
    assert len(new) == 4
    assert all(p["status"]["phase"] == "Pending" for p in new)
    assert sum(int(c["resources"]["limits"]["nvidia.com/gpu"]) for p in new for c in p["spec"]["containers"]) == 32
    assert isvc(cluster)["status"]["gpus"] == 160
    for n, rv in decoder.items():
        assert kjson(cluster, "get", "statefulset", n, "-n", NS)["metadata"]["resourceVersion"] == rv, n

    one = '{"spec":{"engine":{"minReplicas":1,"maxReplicas":1}}}'
    cluster.kubectl("patch", "isvc", ISVC, "-n", NS, "--type=merge", "-p", one)
    wait_for(lambda: children(cluster) == EXPECTED_CHILDREN, timeout=30, what="the second engine group pruned")
    wait_ready(cluster)


def test_runtime_edit_rolls_the_children_that_use_it(cluster: ClusterHandle, operator: OperatorProcess) -> None:
    patch = (
        '[{"op":"add","path":"/spec/decoderConfig/leader/runner/env/-","value":{"name":"OME_TEST_MARK","value":"1"}}]'
    )
    cluster.kubectl("patch", "clusterservingruntime", "srt-kimi-k2-pd", "--type=json", "-p", patch)

    def leader_env() -> list[str]:
        sts = kjson(cluster, "get", "statefulset", f"{ISVC}-decoder-0", "-n", NS)
        return [e["name"] for e in sts["spec"]["template"]["spec"]["containers"][0].get("env", [])]

    wait_for(lambda: "OME_TEST_MARK" in leader_env(), timeout=20, what="the decoder leader to carry the new env")
    cluster.kubectl("apply", "-f", str(reference_files().runtime))
    wait_for(lambda: "OME_TEST_MARK" not in leader_env(), timeout=20, what="the runtime edit reverted")
    wait_ready(cluster)


def test_restarted_container_recreates_its_whole_group_once(cluster: ClusterHandle, operator: OperatorProcess) -> None:
    group = [p for p in gpu_pods(cluster) if p["metadata"]["labels"]["component"] == "engine"]
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in group}
    victim = f"{ISVC}-engine-0-worker-2"
    status = {
        "status": {
            "containerStatuses": [
                {
                    "name": "ome-container",
                    "image": "docker.io/lmsysorg/sglang:dev",
                    "imageID": "",
                    "ready": True,
                    "started": True,
                    "restartCount": 1,
                    "state": {"running": {"startedAt": _ago(0)}},
                    "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
                }
            ],
        }
    }
    cluster.kubectl("patch", "pod", victim, "-n", NS, "--subresource=status", "--type=merge", "-p", json.dumps(status))

    def recreated() -> bool:
        pods = {
            p["metadata"]["name"]: p["metadata"]["uid"]
            for p in gpu_pods(cluster)
            if p["metadata"]["labels"]["component"] == "engine"
        }
        return set(pods) == set(before) and all(pods[n] != uid for n, uid in before.items())

    wait_for(recreated, timeout=60, what="all 4 engine pods recreated")
    wait_ready(cluster)
    events = kjson(cluster, "get", "events", "-n", NS, "--field-selector", "reason=GroupRestart")["items"]
    mine = [e for e in events if victim in e["message"]]
    assert len(mine) == 1, [e["message"] for e in mine]
    assert "OOMKilled" in mine[0]["message"] and "exit code 137" in mine[0]["message"]


def test_bad_references_become_conditions(cluster: ClusterHandle, operator: OperatorProcess) -> None:
    with cluster.temp_namespace("bad") as ns:
        manifests = f"""
apiVersion: ome.io/v1beta1
kind: InferenceService
metadata: {{name: no-runtime, namespace: {ns}}}
spec:
  model: {{name: {ISVC}}}
  runtime: {{name: no-such-runtime}}
  engine: {{minReplicas: 1}}
---
apiVersion: ome.io/v1beta1
kind: InferenceService
metadata: {{name: no-model, namespace: {ns}}}
spec:
  model: {{name: no-such-model}}
  engine: {{minReplicas: 1}}
---
apiVersion: ome.io/v1beta1
kind: InferenceService
metadata: {{name: bad-child, namespace: {ns}}}
spec:
  model: {{name: {ISVC}}}
  runtime: {{name: srt-kimi-k2-pd}}
  engine:
    minReplicas: 1
    leader:
      runner:
        env: [{{name: "BAD=NAME", value: "x"}}]
"""
        cluster.kubectl("apply", "-f", "-", stdin=manifests)

        def reason(name: str, type_: str) -> dict[str, Any] | None:
            obj = kjson(cluster, "get", "isvc", name, "-n", ns)
            cond = condition(obj, type_)
            return cond if cond.get("status") == "False" else None

        runtime = wait_for(lambda: reason("no-runtime", "RuntimeResolved"), timeout=30, what="RuntimeResolved=False")
        assert runtime["reason"] == "RuntimeNotFound" and "spec.runtime.name" in runtime["message"]
        model = wait_for(lambda: reason("no-model", "ModelReady"), timeout=30, what="ModelReady=False")
        assert model["reason"] == "ModelNotFound" and "spec.model.name" in model["message"]
        child = wait_for(lambda: reason("bad-child", "ChildrenApplied"), timeout=30, what="ChildrenApplied=False")
        assert child["reason"] == "ApplyFailed" and ".env[" in child["message"], child["message"]
        for name in ("no-runtime", "no-model", "bad-child"):
            assert condition(kjson(cluster, "get", "isvc", name, "-n", ns), "Ready")["status"] == "False"
    wait_ready(cluster)  # nothing else was disturbed


def test_deleting_while_creating_leaves_nothing(cluster: ClusterHandle, operator: OperatorProcess) -> None:
    with cluster.temp_namespace("del") as ns:
        text = reference_files().isvc.read_text().split("---", 2)[-1].replace(f"namespace: {NS}", f"namespace: {ns}")
        cluster.kubectl("apply", "-f", "-", stdin=text)
        wait_for(
            lambda: kjson(cluster, "get", "statefulsets", "-n", ns)["items"], timeout=30, what="children being created"
        )
        cluster.kubectl("delete", "isvc", ISVC, "-n", ns)

        def gone() -> bool:
            return all(not kjson(cluster, "get", k, "-n", ns, "-l", SELECTOR)["items"] for k in (*CHILD_KINDS, "pods"))

        wait_for(gone, timeout=60, what="every child garbage-collected")
    wait_ready(cluster)


def test_sigkill_at_random_points_converges(
    cluster: ClusterHandle, operator: OperatorProcess, operator_kubeconfig: Path, tmp_path: Path
) -> None:
    operator.stop()
    rng = random.Random(20261128)
    actions = [
        '{"spec":{"engine":{"minReplicas":2,"maxReplicas":2}}}',
        '{"spec":{"engine":{"minReplicas":1,"maxReplicas":1}}}',
        '{"spec":{"router":{"minReplicas":2,"maxReplicas":2}}}',
        '{"spec":{"router":{"minReplicas":1,"maxReplicas":1}}}',
    ]
    try:
        for round_ in range(20):
            op = OperatorProcess(operator_kubeconfig, tmp_path / "kill.log", "--resync-seconds", "20").start()
            cluster.kubectl("patch", "isvc", ISVC, "-n", NS, "--type=merge", "-p", actions[round_ % len(actions)])
            time.sleep(rng.uniform(0.5, 4.0))  # the random point at which the operator dies
            op.kill()
    finally:
        cluster.kubectl("patch", "isvc", ISVC, "-n", NS, "--type=merge", "-p", actions[1])
        cluster.kubectl("patch", "isvc", ISVC, "-n", NS, "--type=merge", "-p", actions[3])
        operator.start()
        operator.wait_ready()
    wait_ready(cluster, timeout=120)
    assert children(cluster) == EXPECTED_CHILDREN
    pods = kjson(cluster, "get", "pods", "-n", NS, "-l", SELECTOR)["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert len(live) == 17, sorted(p["metadata"]["name"] for p in live)
    replicasets = kjson(cluster, "get", "replicasets", "-n", NS, "-l", SELECTOR)["items"]
    assert sum(int(rs["spec"].get("replicas") or 0) for rs in replicasets) == 1


def _ago(seconds: float) -> str:
    return datetime.fromtimestamp(time.time() - seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
