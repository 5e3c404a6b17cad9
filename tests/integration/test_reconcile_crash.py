"""Crash at every write of two flows converges to the objects of an uninterrupted run (issue 11, C1 flows).

Flows on a 2-group InferenceService (leader + 1 worker per group), through the fault-injecting API
front: an engine scale from 1 to 2 groups, and a runtime edit that touches only the leader's
template (which must still recreate both groups whole: leader and workers together). For each k the
operator is SIGKILLed right after its k-th write, restarted, and the result is compared with the
uninterrupted run: the same child names, no duplicate pods, every pod on its group's current
revision, and (for the edit) every pod recreated.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench import fairness
from devtools.apifront import ApiFront
from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.operator import OperatorProcess, apply_crds, write_operator_kubeconfig
from ome_operator.reconcile.children import GROUP_REVISION_ANNOTATION

from .operator_env import kjson

pytestmark = pytest.mark.integration
MODEL = "crash-qwen"
NAME = "crash"
SELECTOR = f"ome.io/inferenceservice={NAME}"
MAX_K = 16  # every write of both flows (7 and 14 here); a longer flow is cut here


@pytest.fixture(scope="module")
def env(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiFront, Path, str]]:
    apply_crds(cluster)
    base = tmp_path_factory.mktemp("crash")
    direct = write_operator_kubeconfig(cluster, base / "kubeconfig")
    token = yaml.safe_load(direct.read_text())["users"][0]["user"]["token"]
    doc = next(d for d in yaml.safe_load_all(fairness.MODEL.read_text()) if d and d.get("kind") == "ClusterBaseModel")
    doc["metadata"]["name"] = MODEL
    doc["spec"]["storage"]["nodeSelector"] = {"kubernetes.io/hostname": "h200-013"}
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(doc))
    with ApiFront(cluster.kubeconfig) as front, cluster.temp_namespace("crash") as ns:
        runtime = next(d for d in yaml.safe_load_all(fairness.RUNTIME.read_text()) if d)
        runtime["kind"] = "ServingRuntime"
        runtime["metadata"] = {"name": "crash-rt", "namespace": ns}
        cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(runtime))
        yield front, front.write_kubeconfig(base / "front-kubeconfig", token=token), ns
    cluster.kubectl("delete", "clusterbasemodel", MODEL, "--ignore-not-found", "--wait=false")


def isvc(ns: str, groups: int) -> dict[str, Any]:
    engine = {
        "minReplicas": groups,
        "maxReplicas": 2,
        "leader": {},
        "worker": {"size": 1},
        # Not a command the node-side runner starts: kwok makes the pods Running at once.
        "runner": {"command": ["sleep", "infinity"]},
    }
    return {
        "apiVersion": "ome.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": NAME, "namespace": ns},
        "spec": {"model": {"name": MODEL}, "runtime": {"name": "crash-rt", "kind": "ServingRuntime"}, "engine": engine},
    }


def snapshot(cluster: ClusterHandle, ns: str) -> dict[str, Any]:
    children = kjson(cluster, "get", "statefulsets,services", "-n", ns, "-l", SELECTOR)["items"]
    pods = [
        p
        for p in kjson(cluster, "get", "pods", "-n", ns, "-l", SELECTOR)["items"]
        if not p["metadata"].get("deletionTimestamp")
    ]
    revisions = {
        s["metadata"]["name"]: s["spec"]["template"]["metadata"].get("annotations", {}).get(GROUP_REVISION_ANNOTATION)
        for s in children
        if s["kind"] == "StatefulSet"
    }
    return {
        "children": sorted(f"{c['kind']}/{c['metadata']['name']}" for c in children),
        "owners": sorted({r["uid"] for c in children for r in c["metadata"].get("ownerReferences", [])}),
        "pods": sorted(p["metadata"]["name"] for p in pods),
        "pod_uids": {p["metadata"]["uid"] for p in pods},
        "pod_revisions": {p["metadata"].get("annotations", {}).get(GROUP_REVISION_ANNOTATION) for p in pods},
        "sts_revisions": revisions,
        "env": sorted(
            {
                e.get("value") or ""
                for p in pods
                for e in p["spec"]["containers"][0].get("env", [])
                if e["name"] == "ROLL_MARK"
            }
        ),
    }


def converged(cluster: ClusterHandle, ns: str, pods: int, mark: str | None, old: set[str]) -> dict[str, Any] | None:
    snap = snapshot(cluster, ns)
    ok = len(snap["pods"]) == pods and snap["pod_revisions"] == set(snap["sts_revisions"].values())
    ok = ok and len(set(snap["sts_revisions"].values())) == pods // 2  # one revision per group, both roles
    if mark is not None:
        ok = ok and snap["env"] == [mark] and not (snap["pod_uids"] & old)
    return snap if ok else None


def write_summary(front: ApiFront) -> dict[str, int]:
    """Writes by verb and resource, e.g. {"PATCH statefulsets": 4, "DELETE pods": 4}."""
    counts: Counter[str] = Counter()
    for entry in front.log():
        if entry.get("write"):
            parts = str(entry["path"]).split("?")[0].split("/")
            sub = parts[-1] in ("status", "scale")
            resource = parts[-1] if entry["method"] == "POST" else parts[-3] if sub else parts[-2]
            counts[f"{entry['method']} {resource}{'/' + parts[-1] if sub else ''}"] += 1
    return dict(sorted(counts.items()))


def mark_patch(value: str) -> str:
    env = [{"name": "ROLL_MARK", "value": value}]
    return json.dumps({"spec": {"engineConfig": {"leader": {"runner": {"env": env}}}}})


def run_flow(
    cluster: ClusterHandle,
    ns: str,
    front: ApiFront,
    kubeconfig: Path,
    log: Path,
    prepare: Callable[[], None],
    act: Callable[[], None],
    done: Callable[[set[str]], dict[str, Any] | None],
    kill_at: int | None,
) -> tuple[dict[str, Any], int, float, bool]:
    """(final snapshot, writes the operator made, seconds to converge after the restart, killed?)."""
    op = OperatorProcess(kubeconfig, log, "--resync-seconds", "20").start()
    killed = False
    try:
        op.wait_ready()
        prepare()
        old = set(snapshot(cluster, ns)["pod_uids"])
        front.clear()
        front.clear_counters()
        if kill_at is not None:
            front.kill_after_write(kill_at, lambda: op.proc.pid if op.proc else 0)
        act()
        if kill_at is not None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not killed:
                killed = op.proc is not None and op.proc.poll() is not None
                time.sleep(0.1)
            front.clear()
            if killed:
                op.kill()
                op = OperatorProcess(kubeconfig, log, "--resync-seconds", "20").start()
        restarted = time.monotonic()
        snap = wait_for(lambda: done(old), timeout=120, interval=0.5, what=f"convergence (kill at {kill_at})")
        # The front's write counter runs since it started; its log since clear_counters(): this flow only.
        flow_writes = sum(1 for entry in front.log() if entry.get("write"))
        return snap, flow_writes, time.monotonic() - restarted, killed
    finally:
        op.stop()


def test_crash_after_every_write_converges(
    cluster: ClusterHandle, env: tuple[ApiFront, Path, str], tmp_path: Path
) -> None:
    front, kubeconfig, ns = env
    log = tmp_path / "operator.log"

    def apply(obj: dict[str, Any]) -> None:
        cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(obj))

    def prepare_scale() -> None:
        apply(isvc(ns, 1))
        wait_for(lambda: converged(cluster, ns, 2, None, set()), timeout=120, what="one group")

    def prepare_edit() -> None:
        apply(isvc(ns, 2))
        wait_for(lambda: converged(cluster, ns, 4, None, set()), timeout=120, what="two groups")

    def scale(k: int) -> Callable[[], None]:
        def act() -> None:
            patch = '{"spec":{"engine":{"minReplicas":2}}}'
            cluster.kubectl("patch", "isvc", NAME, "-n", ns, "--type=merge", "-p", patch)

        return act

    def edit(k: int) -> Callable[[], None]:
        def act() -> None:
            cluster.kubectl("patch", "servingruntime", "crash-rt", "-n", ns, "--type=merge", "-p", mark_patch(f"m{k}"))

        return act

    def scaled(k: int) -> Callable[[set[str]], dict[str, Any] | None]:
        return lambda old: converged(cluster, ns, 4, None, set())

    def rolled(k: int) -> Callable[[set[str]], dict[str, Any] | None]:
        return lambda old: converged(cluster, ns, 4, f"m{k}", old)

    rows = []
    flows = [
        ("scale 1->2 groups", prepare_scale, scale, scaled),
        ("leader-only runtime edit, 2 groups", prepare_edit, edit, rolled),
    ]
    for title, prepare, act, done in flows:
        baseline, writes, _, _ = run_flow(cluster, ns, front, kubeconfig, log, prepare, act(0), done(0), None)
        print(f"{title}: the uninterrupted run's writes: {write_summary(front)}")
        runs = failures = 0
        slowest = 0.0
        for k in range(1, min(writes, MAX_K) + 1):
            runs += 1
            try:
                snap, _, seconds, killed = run_flow(cluster, ns, front, kubeconfig, log, prepare, act(k), done(k), k)
            except TimeoutError as exc:
                failures += 1
                print(f"{title}: kill after write {k}: {exc}")
                continue
            if not killed:
                print(f"{title}: the flow made fewer than {k} writes this time; no kill")
            slowest = max(slowest, seconds)
            if snap["children"] != baseline["children"] or snap["pods"] != baseline["pods"]:
                failures += 1
                print(f"{title}: kill after write {k}: differs: {snap['children']} vs {baseline['children']}")
        rows.append((title, writes, runs, failures, slowest))
    print("flow | writes | runs | failures | max seconds to converge")
    for row in rows:
        print(f"{row[0]} | {row[1]} | {row[2]} | {row[3]} | {row[4]:.1f}")
    assert all(row[3] == 0 for row in rows), rows
