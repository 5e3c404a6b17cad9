"""C6 (a GPU node of a running group deleted, or NotReady) and C8 (poison pills stored without validation)."""

from __future__ import annotations

import copy
import json
import threading
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from devtools.cluster_testing import WaitTimeout, wait_for
from devtools.nodes import KWOK_ANNOTATION
from devtools.operator import REPO, apply_crds

from .crashes import baseline_of
from .env import ISVC, MODEL, NS, RUNTIME, ChaosEnv, condition
from .flows import FLOWS, apply_reference, created
from .runs import Baseline, Row, RunOutcome, judge, reset

VICTIM_POD = f"{ISVC}-engine-0-worker-1"
SAY_WHY_WITHIN = 60.0
RSS_BOUND_MIB = 1024
NEIGHBOUR_WITHIN = 10.0


def _ensure_created(env: ChaosEnv) -> None:
    env.ensure_operator()
    if not created(env):
        apply_reference(env)
        env.wait_quiet(lambda: created(env), timeout=240, what="Kimi K2 Ready")


def _said_why(env: ChaosEnv) -> str | None:
    obj = env.isvc()
    ready = condition(obj, "Ready")
    if ready.get("status") != "False":
        return None
    for cond in (obj or {}).get("status", {}).get("conditions") or []:
        if cond.get("status") == "False" and cond.get("type") != "Ready" and cond.get("reason"):
            return f"{cond['type']}={cond['reason']}: {cond.get('message', '')[:120]}"
    return None


def _jobs_on(env: ChaosEnv, node: str) -> list[str]:
    return [
        j["metadata"]["name"]
        for j in env.items("jobs", selector="app.kubernetes.io/managed-by=ome-operator")
        if (j["metadata"].get("annotations") or {}).get("ome.io/node") == node
    ]


def _no_jobs_on(env: ChaosEnv, node: str) -> bool:
    return not _jobs_on(env, node)


def run_c6(env: ChaosEnv, baselines: dict[str, Baseline]) -> Row:
    row = Row("C6 node loss")
    base = baseline_of(env, "create", baselines)
    for mode in ("deleted", "NotReady"):
        try:
            _ensure_created(env)
        except WaitTimeout as exc:  # what an earlier mode left broken: a failure, not a harness error
            row.fail("precondition not reached", f"before node {mode}: {exc}")
            continue
        pod = env.items("pods", NS, name=VICTIM_POD)[0]
        node_name = pod["spec"]["nodeName"]
        node = env.items("nodes", name=node_name)[0]
        t0 = time.monotonic()
        stop = threading.Event()
        if mode == "deleted":
            env.kubectl("delete", "node", node_name, "--wait=false")
        else:
            threading.Thread(target=_hold_not_ready, args=(env, node_name, stop), daemon=True).start()
        try:
            why = wait_for(lambda: _said_why(env), timeout=SAY_WHY_WITHIN, interval=0.5, what="the service to say why")
            row.figures[f"{mode}: said why in s"] = f"{time.monotonic() - t0:.1f}"
            row.details.append(f"{mode}: {why}")
        except WaitTimeout:
            row.fail("no condition says why", f"node {mode}: Ready stayed {condition(env.isvc(), 'Ready')}")
        if mode == "deleted":
            try:
                wait_for(partial(_no_jobs_on, env, node_name), timeout=60, what="the lost node's Job removed")
            except WaitTimeout:
                row.fail("Job left on a deleted node", f"{_jobs_on(env, node_name)}")
            _restore_node(env, node)
        stop.set()
        row.runs += 1
        try:
            env.wait_quiet(lambda: created(env), timeout=240, what=f"recovery after node {mode}")
            outcome = judge(env, FLOWS["create"], base, RunOutcome(True, 0.0))
            if not outcome.converged:
                row.fail("not converged", f"node {mode}: {outcome.diffs[:3]}")
            row.figures[f"{mode}: recovered in s"] = f"{time.monotonic() - t0:.1f}"
        except WaitTimeout as exc:
            row.fail("not converged", f"node {mode}: {exc}")
            reset(env)
    return row


def _hold_not_ready(env: ChaosEnv, node: str, stop: threading.Event) -> None:
    """The node stops answering until told to stop: kwok stops managing it (it would set Ready
    again within half a second of any patch), and its Ready condition turns False once, as a
    kubelet's would; kube-controller-manager then taints it not-ready. At the end kwok takes the
    node back and reports it Ready."""
    key, value = KWOK_ANNOTATION
    env.kubectl("annotate", "node", node, f"{key}-")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cond = {
        "type": "Ready",
        "status": "False",
        "reason": "KubeletNotReady",
        "message": "chaos: node stopped answering",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }
    patch = json.dumps({"status": {"conditions": [cond]}})
    env.kubectl("patch", "node", node, "--subresource=status", "--type=strategic", "-p", patch)
    stop.wait()
    env.kubectl("annotate", "node", node, f"{key}={value}", "--overwrite", check=False)


def _restore_node(env: ChaosEnv, node: dict[str, Any]) -> None:
    fresh = copy.deepcopy(node)
    meta = fresh["metadata"]
    for key in ("uid", "resourceVersion", "creationTimestamp", "managedFields"):
        meta.pop(key, None)
    # Capacity is status: without it the node has no GPUs (the first C6 run lost that way).
    status = fresh.pop("status", {}) or {}
    fresh["status"] = {k: status[k] for k in ("capacity", "allocatable") if k in status}
    fresh["apiVersion"], fresh["kind"] = "v1", "Node"  # items of a list carry neither
    env.kubectl("create", "-f", "-", stdin=json.dumps(fresh))


# -- C8 -------------------------------------------------------------------------------------------
PILL_NS = "chaos-pills"


def _permissive_crd() -> str:
    crd = yaml.safe_load((REPO / "crds" / "inferenceservices.ome.io.yaml").read_text())
    for version in crd["spec"]["versions"]:
        version["schema"] = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    return yaml.safe_dump(crd)


def _isvc(name: str, engine: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "ome.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": PILL_NS},
        "spec": {"model": {"name": MODEL}, "runtime": {"name": RUNTIME}, "engine": engine},
    }


def pills() -> list[dict[str, Any]]:
    env_entries = [{"name": f"E{i}", "value": "x"} for i in range(10_000)]
    return [
        _isvc("pill-groups", {"minReplicas": 2**31, "maxReplicas": 2**31}),
        _isvc("pill-env", {"minReplicas": 1, "leader": {"runner": {"env": env_entries}}}),
        _isvc("pill-command", {"minReplicas": 1, "leader": {"runner": {"command": ["sh", "-c", "x" * 1_000_000]}}}),
    ]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_c8(env: ChaosEnv) -> Row:
    row = Row("C8 poison pills")
    _ensure_created(env)
    env.kubectl("create", "namespace", PILL_NS, check=False)
    neighbour = _isvc("neighbour", {"minReplicas": 1})
    neighbour["spec"]["router"] = {"minReplicas": 1, "maxReplicas": 1}
    env.kubectl("apply", "-f", "-", stdin=json.dumps(neighbour))
    wait_for(lambda: env.items("deployments", PILL_NS, name="neighbour-router"), timeout=60, what="the neighbour")
    peak = {"rss": 0.0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.25):
            if env.alive():
                peak["rss"] = max(peak["rss"], _rss_mib(env.pid()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        env.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=_permissive_crd())
        time.sleep(2)  # the permissive schema is served
        for pill in pills():
            # Through stdin as JSON: a 1 MB argv would not fit a command line.
            env.kubectl("create", "-f", "-", stdin=json.dumps(pill))
        apply_crds(env.cluster)  # the bounds are back; the pills stay stored as they are
        for pill in pills():
            name = pill["metadata"]["name"]
            try:
                cond = wait_for(partial(_pill_condition, env, name), timeout=60, interval=0.5, what=f"{name} condition")
                row.details.append(f"{name}: {cond}")
            except WaitTimeout:
                row.fail("pill without a condition", name)
            row.runs += 1
        t0 = time.monotonic()
        patch = '{"spec":{"router":{"minReplicas":2,"maxReplicas":2}}}'
        env.kubectl("patch", "isvc", "neighbour", "-n", PILL_NS, "--type=merge", "-p", patch)
        try:
            wait_for(
                lambda: (
                    (env.items("deployments", PILL_NS, name="neighbour-router") or [{}])[0]
                    .get("spec", {})
                    .get("replicas")
                    == 2
                ),
                timeout=60,
                interval=0.2,
                what="the neighbour's router scaled",
            )
            reacted = time.monotonic() - t0
            row.figures["neighbour reacts in s"] = f"{reacted:.1f}"
            if reacted > NEIGHBOUR_WITHIN:
                row.fail("neighbour starved", f"{reacted:.1f} s")
        except WaitTimeout:
            row.fail("neighbour starved", "no reaction in 60 s")
        row.runs += 1
    finally:
        stop.set()
        sampler.join(timeout=2)
        row.figures["peak RSS MiB"] = f"{peak['rss']:.0f}"
        if peak["rss"] > RSS_BOUND_MIB:
            row.fail("memory unbounded", f"{peak['rss']:.0f} MiB")
        if not env.alive():
            row.fail("operator died", "during C8")
        apply_crds(env.cluster)
        env.kubectl("delete", "namespace", PILL_NS, "--wait=false", check=False)
        try:
            wait_for(lambda: not env.items("namespaces", name=PILL_NS), timeout=90, what="the pills deleted")
        except WaitTimeout:
            row.fail("pill deletion hangs", PILL_NS)
    return row


def _pill_condition(env: ChaosEnv, name: str) -> str | None:
    found = env.items("inferenceservices", PILL_NS, name=name)
    if not found:
        return None
    for cond in (found[0].get("status") or {}).get("conditions") or []:
        if cond.get("status") == "False" and cond.get("type") != "Ready":
            return f"{cond['type']}={cond.get('reason')}"
    return None
