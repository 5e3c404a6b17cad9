"""Bounded work, refusals as conditions, poison pills, foreign fields: the operator on a real control plane.

- A 400-group InferenceService is applied a slice per pass with progress in status; a neighbour's
  edit is acted on meanwhile; deleting the big object stops its work at once (bench/fairness.py
  prints the same figures).
- Objects stored with validation off (the CRD's schema swapped out, as an older CRD version without
  bounds would have let them in: 2^31 and 10,000 groups, 10,000 env entries, a 1 MB command line, a
  bad quantity, duplicate env names) get SpecValid=False naming the field, and nothing is rendered.
- A refused child (422) and a model whose node label would exceed 63 characters are conditions and
  cost at most a few writes a minute (counted in the audit log; printed).
- An env var another tool adds to a workload is not drift: no re-apply loop; a real edit of ours is.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench import fairness
from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.nodes import KWOK_ANNOTATION
from devtools.operator import OPERATOR_USER, OperatorProcess, apply_crds, write_operator_kubeconfig
from ome_operator.reconcile.budget import CHUNK

from .operator_env import condition, kjson, running_operator

pytestmark = pytest.mark.integration
MODEL = "hardening-qwen"
RUNTIME = fairness.RUNTIME_NAME


@pytest.fixture(scope="module")
def operator(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    apply_crds(cluster)
    kubeconfig = write_operator_kubeconfig(cluster, tmp_path_factory.mktemp("hardening") / "kubeconfig")
    cluster.kubectl("apply", "-f", str(fairness.RUNTIME))
    doc = next(d for d in yaml.safe_load_all(fairness.MODEL.read_text()) if d and d.get("kind") == "ClusterBaseModel")
    doc["metadata"]["name"] = MODEL
    doc["spec"]["storage"]["nodeSelector"] = {"kubernetes.io/hostname": "h200-015"}
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(doc))
    log = tmp_path_factory.mktemp("hardening-log") / "operator.log"
    with running_operator(kubeconfig, log) as op:
        yield op
        cluster.kubectl("delete", "clusterbasemodel", MODEL, "--ignore-not-found", "--wait=false")


def utc(seconds_ago: float = 0) -> str:
    return datetime.fromtimestamp(time.time() - seconds_ago, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def writes_about(cluster: ClusterHandle, since: str, namespace: str | None, name_prefix: str = "") -> list[str]:
    """The operator's writes since `since` in a namespace (or on cluster objects named name_prefix*)."""
    found = []
    for event in cluster.audit_events():
        if event.get("stage") != "ResponseComplete" or event.get("user", {}).get("username") != OPERATOR_USER:
            continue
        if event.get("requestReceivedTimestamp", "") < since:
            continue
        ref = event.get("objectRef") or {}
        if namespace is not None and ref.get("namespace") != namespace:
            continue
        if name_prefix and not str(ref.get("name") or "").startswith(name_prefix):
            continue
        found.append(f"{event.get('verb')} {ref.get('resource')}/{ref.get('subresource', '')} {ref.get('name')}")
    return found


def test_big_object_is_sliced_fair_and_stopped_by_deletion(cluster: ClusterHandle, operator: OperatorProcess) -> None:
    with cluster.temp_namespace("fair") as ns:
        figures = fairness.run_fairness(cluster.kubeconfig, ns, MODEL, groups=400)
        fairness.print_figures(figures)
        # Status shows progress between slices: more than one distinct Applying message.
        assert figures.progress_messages >= 2
        # The neighbour's edit was applied while the big object still had most of its work to do.
        assert figures.big_children_when_neighbour_done < figures.children
        assert 0 < figures.big_children_at_delete < figures.children
        # After the delete, at most the chunk in flight and one started before the watch delivered
        # the delete to the cache: counted in the audit log from the moment the delete was sent.
        deleted = next(
            e["stageTimestamp"]
            for e in cluster.audit_events()
            if e.get("verb") == "delete"
            and e.get("stage") == "ResponseComplete"
            and (e.get("objectRef") or {}).get("resource") == "inferenceservices"
            and (e.get("objectRef") or {}).get("namespace") == ns
            and (e.get("objectRef") or {}).get("name") == "big"
        )
        late = [w for w in writes_about(cluster, deleted, ns) if " big-" in w and not w.startswith("delete")]
        print(f"operator writes for the big object after its delete was answered: {len(late)}")
        assert len(late) <= 2 * CHUNK, late
        wait_for(
            lambda: not kjson(cluster, "get", "statefulsets", "-n", ns, "-l", "ome.io/inferenceservice=big")["items"],
            timeout=240,
            interval=2,
            what="the big object's StatefulSets garbage-collected",
        )
        since_gone = utc(0)
        time.sleep(5)
        assert not [w for w in writes_about(cluster, since_gone, ns) if " big" in w], "work for a deleted object"


def peak_rss_kib(op: OperatorProcess) -> int:
    assert op.proc is not None
    for line in Path(f"/proc/{op.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def schemaless(crd: dict[str, Any]) -> dict[str, Any]:
    """The CRD with no schema, as an older version without bounds (validation off for the test's writes)."""
    loose = copy.deepcopy(crd)
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        loose["metadata"].pop(key, None)
    loose.pop("status", None)
    for version in loose["spec"]["versions"]:
        version["schema"] = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    return loose


def store_unvalidated(
    cluster: ClusterHandle, objects: list[dict[str, Any]], crd_name: str = "inferenceservices"
) -> None:
    crd = kjson(cluster, "get", "crd", f"{crd_name}.ome.io")
    cluster.kubectl("replace", "-f", "-", stdin=json.dumps(schemaless(crd)))
    try:
        # The API server takes a moment to serve the new schema; retry until it accepts the objects.
        def stored() -> bool:
            proc = cluster.kubectl("create", "-f", "-", stdin=yaml.safe_dump_all(objects), check=False)
            return proc.returncode == 0 or "AlreadyExists" in proc.stderr

        wait_for(stored, timeout=30, interval=1, what="the unvalidated objects stored")
    finally:
        apply_crds(cluster)


def pill(ns: str, name: str, engine: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "ome.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"model": {"name": MODEL}, "runtime": {"name": RUNTIME}, "engine": engine},
    }


PILLS: dict[str, tuple[dict[str, Any], str]] = {
    "groups-2-31": ({"minReplicas": 2**31, "maxReplicas": 2**31, "leader": {}, "worker": {"size": 1}}, "minReplicas"),
    "groups-10000": (
        {"minReplicas": 10_000, "maxReplicas": 10_000, "leader": {}, "worker": {"size": 1}},
        "minReplicas",
    ),
    "env-10000": ({"runner": {"env": [{"name": f"E{i}", "value": "x"} for i in range(10_000)]}}, "env"),
    "command-1mb": ({"runner": {"args": ["x" * (1 << 20)]}}, "args"),
    "memory-20gib": ({"runner": {"resources": {"limits": {"memory": "20GiB"}}}}, "memory"),
    "cpu-8x": ({"runner": {"resources": {"requests": {"cpu": "8x"}}}}, "cpu"),
    "env-duplicate": ({"runner": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}}, "env"),
    "gpu-half": ({"runner": {"resources": {"limits": {"nvidia.com/gpu": "0.5"}}}}, "nvidia.com/gpu"),
}


def test_poison_pills_are_conditions_and_neighbours_keep_reacting(
    cluster: ClusterHandle, operator: OperatorProcess
) -> None:
    with cluster.temp_namespace("pill") as ns:
        neighbour = fairness.isvc("neighbour", ns, MODEL, minReplicas=1, maxReplicas=3)
        cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(neighbour))
        store_unvalidated(cluster, [pill(ns, name, engine) for name, (engine, _) in PILLS.items()])
        since = utc(0)
        for name, (_, field) in PILLS.items():

            def refused(name: str = name) -> str | None:
                cond = condition(kjson(cluster, "get", "isvc", name, "-n", ns), "SpecValid")
                if cond.get("status") == "False":
                    return f"SpecValid=False {cond['reason']}: {cond['message']}"
                # An object too big for etcd cannot take any status write: the Warning Event says it.
                events = kjson(cluster, "get", "events", "-n", ns, "--field-selector", "type=Warning")["items"]
                said = [e["message"] for e in events if e["involvedObject"]["name"] == name]
                return f"Event: {said[0]}" if said else None

            said = wait_for(refused, timeout=60, what=f"SpecValid=False (or a Warning Event) on {name}")
            assert field in said and ("SpecValid=False" in said or "Ready=False Invalid" in said), (name, said)
            print(f"{name}: {said[:300]}")
        edited = time.monotonic()
        cluster.kubectl(
            "patch", "isvc", "neighbour", "-n", ns, "--type=merge", "-p", '{"spec":{"engine":{"minReplicas":2}}}'
        )

        def neighbour_scaled() -> bool:
            dep = kjson(cluster, "get", "deployments", "-n", ns, "-l", "ome.io/inferenceservice=neighbour")["items"]
            return bool(dep) and dep[0]["spec"]["replicas"] == 2

        wait_for(neighbour_scaled, timeout=60, what="the neighbour's edit applied")
        print(f"neighbour reacted in {time.monotonic() - edited:.1f} s with {len(PILLS)} pills present; "
              f"operator peak RSS {peak_rss_kib(operator) / 1024:.0f} MiB")  # fmt: skip
        rendered = [w for w in writes_about(cluster, since, ns) if "neighbour" not in w and "/status" not in w]
        assert not [w for w in rendered if not w.startswith("create events")], rendered
        assert peak_rss_kib(operator) < 1024 * 1024, "the operator stays far below 1 GiB"
        # Not a loop: over a minute (three resync periods) each pill costs at most a few writes.
        quiet = utc(0)
        time.sleep(60)
        writes = [w for w in writes_about(cluster, quiet, ns) if "neighbour" not in w]
        per_pill = {name: sum(1 for w in writes if w.endswith(f" {name}") or f" {name}." in w) for name in PILLS}
        print(f"writes per pill in 60 s: {per_pill}")
        assert all(count <= 3 for count in per_pill.values()), writes


def test_refused_child_and_model_are_conditions_not_loops(cluster: ClusterHandle, operator: OperatorProcess) -> None:
    model_name = "hardening-bad-affinity"
    with cluster.temp_namespace("refuse") as ns:
        bad = pill(ns, "bad-env-name", {"minReplicas": 1, "runner": {"env": [{"name": "BAD=NAME", "value": "x"}]}})
        cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(bad))
        doc = next(
            d for d in yaml.safe_load_all(fairness.MODEL.read_text()) if d and d.get("kind") == "ClusterBaseModel"
        )
        doc["metadata"] = {"name": model_name}
        # Stored without validation: a node selector term that is a string, not an object.
        doc["spec"]["storage"]["nodeAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": ["h200-014"]}
        }
        store_unvalidated(cluster, [doc], "clusterbasemodels")
        try:

            def isvc_refused() -> dict[str, Any] | None:
                cond = condition(kjson(cluster, "get", "isvc", "bad-env-name", "-n", ns), "ChildrenApplied")
                return cond if cond.get("status") == "False" else None

            cond = wait_for(isvc_refused, timeout=60, what="ChildrenApplied=False on bad-env-name")
            assert cond["reason"] == "ApplyFailed" and ".env[" in cond["message"], cond

            def model_refused() -> dict[str, Any] | None:
                cond = condition(kjson(cluster, "get", "clusterbasemodel", model_name), "Downloaded")
                return cond if cond.get("status") == "False" and cond.get("reason") != "Downloading" else None

            model_cond = wait_for(model_refused, timeout=60, what="Downloaded=False on the malformed model")
            print(f"model: Downloaded=False {model_cond['reason']}: {model_cond['message'][:300]}")
            assert (
                "spec.storage.nodeAffinity" in model_cond["message"] and "nodeSelectorTerms[0]" in model_cond["message"]
            )
            events = kjson(cluster, "get", "events", "-n", ns, "--field-selector", "type=Warning")["items"]
            assert any(e["involvedObject"]["name"] == "bad-env-name" for e in events)
            since = utc(0)
            time.sleep(60)  # three resync periods
            isvc_writes = writes_about(cluster, since, ns)
            model_writes = writes_about(cluster, since, None, model_name)
            print(f"writes in 60 s: refused InferenceService {len(isvc_writes)}, refused model {len(model_writes)}")
            assert len(isvc_writes) <= 3, isvc_writes
            assert len(model_writes) <= 3, model_writes
        finally:
            cluster.kubectl("delete", "clusterbasemodel", model_name, "--ignore-not-found", "--wait=false")


def test_foreign_env_var_is_not_fought_over_and_real_drift_is_repaired(
    cluster: ClusterHandle, operator: OperatorProcess
) -> None:
    with cluster.temp_namespace("foreign") as ns:
        cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(fairness.isvc("own", ns, MODEL, minReplicas=1)))

        def deployment() -> dict[str, Any] | None:
            items = kjson(cluster, "get", "deployments", "-n", ns, "-l", "ome.io/inferenceservice=own")["items"]
            return items[0] if items else None

        name = wait_for(deployment, timeout=60, what="the engine Deployment")["metadata"]["name"]
        # Another tool (here kubectl, with its own field manager) adds an env var to our container.
        cluster.kubectl("set", "env", f"deployment/{name}", "-n", ns, "FOREIGN_TOOL=1")
        since = utc(0)
        time.sleep(60)  # three resync periods
        patches = [w for w in writes_about(cluster, since, ns) if w.startswith("patch deployments")]
        print(f"re-applies of the Deployment in 60 s after a foreign env var: {len(patches)}")
        assert patches == [], patches
        env = {
            e["name"]: e.get("value") for e in (deployment() or {})["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env.get("FOREIGN_TOOL") == "1"
        # A real drift of a field we own is still repaired.
        cluster.kubectl("set", "env", f"deployment/{name}", "-n", ns, "PYTHONUNBUFFERED=0")

        def repaired() -> bool:
            containers = (deployment() or {})["spec"]["template"]["spec"]["containers"]
            return {e["name"]: e.get("value") for e in containers[0]["env"]}.get("PYTHONUNBUFFERED") == "1"

        wait_for(repaired, timeout=30, what="our env var restored")


POOL_LABEL = "ome-operator.dev/test-pool"
POOL = ("h200-010", "h200-011", "h200-012")
POOL_MODEL = "hardening-pool-qwen"


def group_isvc(ns: str) -> dict[str, Any]:
    """A 2-pod group (leader + 1 worker), 8 GPUs a pod so each takes a whole node, on the pool's nodes.

    The command is not one the node-side runner starts, so kwok makes the pods Running at once."""
    gpus = {"nvidia.com/gpu": 8}
    engine = {
        "minReplicas": 1,
        "nodeSelector": {POOL_LABEL: "c6"},
        "leader": {},
        "worker": {"size": 1},
        "runner": {"command": ["sleep", "infinity"], "resources": {"limits": gpus, "requests": gpus}},
    }
    obj = pill(ns, "lost", engine)
    obj["spec"]["model"] = {"name": POOL_MODEL}
    return obj


def group_pods(cluster: ClusterHandle, ns: str) -> list[dict[str, Any]]:
    pods = kjson(cluster, "get", "pods", "-n", ns, "-l", "ome.io/inferenceservice=lost")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def placed(cluster: ClusterHandle, ns: str, old_uids: set[str]) -> dict[str, str] | None:
    """pod name -> node once both pods are new and bound."""
    pods = group_pods(cluster, ns)
    if len(pods) != 2 or any(p["metadata"]["uid"] in old_uids or not p["spec"].get("nodeName") for p in pods):
        return None
    return {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods}


def test_lost_node_recreates_the_group_elsewhere_or_says_why(cluster: ClusterHandle, operator: OperatorProcess) -> None:
    saved = {n: kjson(cluster, "get", "node", n) for n in POOL}
    for node in POOL:
        cluster.kubectl("label", "node", node, f"{POOL_LABEL}=c6", "--overwrite")
    # Engine pods run only beside a verified copy: the pool's own model, downloaded on its three nodes.
    doc = next(d for d in yaml.safe_load_all(fairness.MODEL.read_text()) if d and d.get("kind") == "ClusterBaseModel")
    doc["metadata"] = {"name": POOL_MODEL}
    doc["spec"]["storage"]["nodeSelector"] = {POOL_LABEL: "c6"}
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(doc))
    try:
        wait_for(
            lambda: (
                (kjson(cluster, "get", "clusterbasemodel", POOL_MODEL).get("status") or {}).get("nodesSummary") == "3/3"
            ),
            timeout=180,
            interval=2,
            what="the pool's model on its 3 nodes",
        )
        with cluster.temp_namespace("lost") as ns:
            cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(group_isvc(ns)))
            first = wait_for(lambda: placed(cluster, ns, set()), timeout=90, what="the group's two pods bound")
            uids = {p["metadata"]["uid"] for p in group_pods(cluster, ns)}
            # 1. A node of the running group is deleted; the third pool node has room.
            victim = next(node for name, node in first.items() if "worker" in name)
            cluster.kubectl("delete", "node", victim, "--wait=false")
            started = time.monotonic()
            second = wait_for(lambda: placed(cluster, ns, uids), timeout=90, what="the group recreated")
            print(f"node {victim} deleted: group recreated on {sorted(second.values())} in "
                  f"{time.monotonic() - started:.1f} s")  # fmt: skip
            assert victim not in second.values() and set(second.values()) <= set(POOL)
            events = kjson(cluster, "get", "events", "-n", ns, "--field-selector", "reason=GroupNodeLost")["items"]
            assert any(victim in e["message"] for e in events)
            # The node comes back without the pool label (it no longer belongs to the pool).
            node = copy.deepcopy(saved[victim])
            node["metadata"] = {k: v for k, v in node["metadata"].items() if k in ("name", "labels", "annotations")}
            node["metadata"]["labels"].pop(POOL_LABEL, None)
            saved_status = node.pop("status", None) or {}
            cluster.kubectl("create", "-f", "-", stdin=json.dumps(node))
            shape = {k: saved_status[k] for k in ("capacity", "allocatable", "addresses") if k in saved_status}
            patch = json.dumps({"status": shape})
            cluster.kubectl("patch", "node", victim, "--subresource=status", "--type=merge", "-p", patch)
            # 2. A node of the group goes NotReady (for longer than the operator's grace); no pool node is free.
            uids = {p["metadata"]["uid"] for p in group_pods(cluster, ns)}
            sick = sorted(second.values())[0]
            past = datetime.fromtimestamp(time.time() - 120, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            status = {
                "status": {
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "False",
                            "reason": "KubeletNotReady",
                            "message": "test: no heartbeat",
                            "lastHeartbeatTime": past,
                            "lastTransitionTime": past,
                        }
                    ]
                }
            }
            # kwok keeps the nodes it manages Ready: it lets go of this one first (like a kubelet that died).
            cluster.kubectl("annotate", "node", sick, f"{KWOK_ANNOTATION[0]}-")
            cluster.kubectl("patch", "node", sick, "--subresource=status", "--type=strategic", "-p", json.dumps(status))

            def says_why() -> dict[str, Any] | None:
                cond = condition(kjson(cluster, "get", "isvc", "lost", "-n", ns), "EngineReady")
                pods = group_pods(cluster, ns)
                recreated = pods and all(p["metadata"]["uid"] not in uids for p in pods)
                return cond if recreated and cond.get("reason") == "Unschedulable" else None

            cond = wait_for(says_why, timeout=120, interval=1, what="EngineReady=False Unschedulable after NotReady")
            print(f"node {sick} NotReady: {cond['message'][:300]}")
            assert "node" in cond["message"]
            events = kjson(cluster, "get", "events", "-n", ns, "--field-selector", "reason=GroupNodeLost")["items"]
            assert any(sick in e["message"] and "NotReady" in e["message"] for e in events)
    finally:
        cluster.kubectl("delete", "clusterbasemodel", POOL_MODEL, "--ignore-not-found", "--wait=false", check=False)
        for node in POOL:
            cluster.kubectl("label", "node", node, f"{POOL_LABEL}-", check=False)
        for node in POOL:  # kwok takes the node back and makes it Ready again
            cluster.kubectl("annotate", "node", node, "=".join(KWOK_ANNOTATION), "--overwrite", check=False)
