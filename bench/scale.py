"""`make bench-scale`: 1,000 small InferenceServices on 200 simulated nodes, and what the operator costs.

From config/: 700 Qwen3 0.6B services (one engine Deployment, one GPU, a router) and 300 Llama 3.2
1B prefill/decode services (engine and decoder Deployments, a GPU each, a router), across 20
namespaces, on 200 kwok nodes of 8 H200s. kwok makes every pod Ready at once (no router or engine
processes: a thousand do not fit on a small machine, and the operator is what is measured).

Prints: time from the last apply until all are Ready, p50/p95 per object (create -> Ready), operator
peak RSS, its API requests by verb during the create and during the idle minutes after, the time
for one ClusterServingRuntime edit to reach the 300 services using it, and after deleting
everything, the time until no child, node label or Job is left. Numbers only, no assertions.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from bench.apiserver import make_every_pod_ready, requests_by, restart_apiserver
from bench.operator import by_verb, percentile, utc
from devtools.cluster import LocalCluster, find_bin_dir
from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.operator import OPERATOR_USER, OperatorProcess, apply_crds, write_operator_kubeconfig

REPO = Path(__file__).resolve().parents[1]
NODES = int(os.environ.get("OME_SCALE_NODES", "200"))
SERVICES = int(os.environ.get("OME_SCALE_SERVICES", "1000"))
NAMESPACES = 20
PD_SHARE = 0.3  # 300 of 1,000 use the runtime that is edited
IDLE_SECONDS = int(os.environ.get("OME_SCALE_IDLE_SECONDS", "300"))
MODELS = ("models/Qwen/Qwen3-0.6B.yaml", "models/meta-llama/Llama-3.2-1B-Instruct.yaml")
RUNTIMES = ("runtimes/srt/Qwen/qwen3-0-6b-rt.yaml", "runtimes/srt/meta/llama-3-2-1b-instruct-pd-rt.yaml")
SAMPLES = {"qwen": "samples/isvc/Qwen/qwen3-0-6b.yaml", "pd": "samples/isvc/meta/llama-3-2-1b-instruct-pd.yaml"}
PD_RUNTIME = "srt-llama-3-2-1b-instruct-pd"
CHILDREN = "statefulsets,deployments,services,serviceaccounts,roles,rolebindings,configmaps,jobs,pods"


def sample(kind: str) -> dict[str, Any]:
    docs = yaml.safe_load_all((REPO / "config" / SAMPLES[kind]).read_text())
    found: dict[str, Any] = next(d for d in docs if d and d["kind"] == "InferenceService")
    return found


def manifests() -> dict[str, list[dict[str, Any]]]:
    """namespace -> its InferenceServices; every 10th is Qwen or PD in a 7:3 mix."""
    templates = {"qwen": sample("qwen"), "pd": sample("pd")}
    by_namespace: dict[str, list[dict[str, Any]]] = {f"scale-{n:02d}": [] for n in range(NAMESPACES)}
    for index in range(SERVICES):
        kind = "pd" if index % 10 < PD_SHARE * 10 else "qwen"
        ns = f"scale-{index % NAMESPACES:02d}"
        isvc = json.loads(json.dumps(templates[kind]))
        isvc["metadata"] = {"name": f"{kind}-{index:04d}", "namespace": ns}
        by_namespace[ns].append(isvc)
    return by_namespace


def all_isvcs(cluster: ClusterHandle) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(
        cluster.kubectl("get", "inferenceservices", "-A", "-o", "json", timeout=120).stdout
    )["items"]
    return items


def ready_at(isvc: dict[str, Any]) -> str | None:
    for cond in (isvc.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            return str(cond.get("lastTransitionTime"))
    return None


def seconds(ts: str) -> float:
    return time.mktime(time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone


def peak_rss_mib(op: OperatorProcess) -> float:
    assert op.proc is not None
    for line in Path(f"/proc/{op.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def count(cluster: ClusterHandle, *args: str) -> int:
    out = cluster.kubectl("get", *args, "-o", "name", check=False, timeout=120).stdout
    return len(out.split())


def main() -> int:
    local = LocalCluster("bench-scale", nodes=NODES, bin_dir=find_bin_dir(), component_timeout=300)
    t0 = time.monotonic()
    local.start()
    print(f"[scale] {NODES}-node cluster up in {time.monotonic() - t0:.0f} s", flush=True)
    cluster = ClusterHandle(kubeconfig=local.kubeconfig, audit_log=local.audit_log)
    workdir = local.dir / "bench"
    workdir.mkdir(exist_ok=True)
    op = None
    try:
        apply_crds(cluster)
        restart_apiserver(cluster, audit_user=OPERATOR_USER)
        make_every_pod_ready(cluster)  # after: a kwok started while the API server is down gives up
        kubeconfig = write_operator_kubeconfig(cluster, workdir / "operator.kubeconfig")
        op = OperatorProcess(kubeconfig, workdir / "operator.log").start()
        op.wait_ready(timeout=120)
        for path in (*MODELS, *RUNTIMES):
            cluster.kubectl("apply", "-f", str(REPO / "config" / path))
        label_count = len(MODELS) * NODES
        wait_for(
            lambda: (
                count(cluster, "nodes", "-l", "models.ome.io/clusterbasemodel.qwen3-0-6b=Ready") == NODES
                and count(cluster, "nodes", "-l", "models.ome.io/clusterbasemodel.llama-3-2-1b-instruct=Ready") == NODES
            ),
            timeout=600,
            interval=2,
            what=f"{label_count} model node labels",
        )
        print(f"[scale] models on all {NODES} nodes; creating {SERVICES} InferenceServices", flush=True)
        by_namespace = manifests()
        for ns in by_namespace:
            cluster.kubectl("create", "namespace", ns)
        create_start = utc()
        started = time.monotonic()

        def apply(ns: str) -> None:
            cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(by_namespace[ns]), timeout=600)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(apply, by_namespace))
        last_apply = time.monotonic()
        print(f"[scale] all applied in {last_apply - started:.1f} s; waiting for Ready", flush=True)
        ready = wait_for(
            lambda: (lambda items: items if sum(1 for i in items if ready_at(i)) >= SERVICES else None)(
                all_isvcs(cluster)
            ),
            timeout=1800,
            interval=2,
            what="every InferenceService Ready",
        )
        all_ready = time.monotonic()
        create_end = utc()
        latencies = [
            seconds(ready_at(i) or "") - seconds(i["metadata"]["creationTimestamp"]) for i in ready if ready_at(i)
        ]
        create_requests = requests_by(cluster, OPERATOR_USER, since=create_start, until=create_end)
        rss_after_create = peak_rss_mib(op)

        time.sleep(15)  # the last workload status updates settle
        idle_start = utc()
        time.sleep(IDLE_SECONDS)
        idle = requests_by(cluster, OPERATOR_USER, since=idle_start, until=utc())

        edit_start = time.monotonic()
        patch = [
            {"op": "add", "path": "/spec/engineConfig/runner/env/-", "value": {"name": "BENCH_EDIT", "value": "1"}}
        ]
        cluster.kubectl("patch", "clusterservingruntime", PD_RUNTIME, "--type=json", "-p", json.dumps(patch))

        def edited() -> bool:
            deployments = json.loads(cluster.kubectl("get", "deployments", "-A", "-o", "json", timeout=120).stdout)
            done = 0
            for d in deployments["items"]:
                containers = d["spec"]["template"]["spec"]["containers"]
                if any(e.get("name") == "BENCH_EDIT" for c in containers for e in c.get("env") or []):
                    done += 1
            return done >= SERVICES * PD_SHARE

        wait_for(edited, timeout=900, interval=1, what="the runtime edit on every engine Deployment using it")
        edit_seconds = time.monotonic() - edit_start

        delete_start = time.monotonic()
        cluster.kubectl("delete", "inferenceservices", "--all", "-A", "--wait=false", timeout=600)
        cluster.kubectl("delete", "clusterbasemodels", "--all", "--wait=false", timeout=600)
        wait_for(
            lambda: (
                count(cluster, CHILDREN, "-A", "-l", "app.kubernetes.io/managed-by=ome-operator") == 0
                and not any(
                    k.startswith("models.ome.io/")
                    for n in json.loads(cluster.kubectl("get", "nodes", "-o", "json", timeout=120).stdout)["items"]
                    for k in n["metadata"].get("labels") or {}
                )
            ),
            timeout=1800,
            interval=2,
            what="every child, Job and node label gone",
        )
        delete_seconds = time.monotonic() - delete_start

        print(f"ome-operator scale benchmark: {SERVICES} InferenceServices in {NAMESPACES} namespaces, {NODES} nodes")
        print(f"  applies took {last_apply - started:.1f} s (kubectl, 4 in parallel)")
        print(
            f"  all Ready {all_ready - last_apply:.1f} s after the last apply; per object create -> Ready: "
            f"p50 {percentile(latencies, 0.5):.0f} s, p95 {percentile(latencies, 0.95):.0f} s (1 s resolution)"
        )
        print(f"  operator peak RSS: {rss_after_create:.0f} MiB after the create, {peak_rss_mib(op):.0f} MiB overall")
        print(f"  API requests during the create: {len(create_requests)} ({by_verb(create_requests)})")
        others = [e for e in idle if e.get("verb") != "watch"]
        print(
            f"  API requests in {IDLE_SECONDS} s idle: {len(idle)} ({by_verb(idle)}); other than watches: {len(others)}"
        )
        print(f"  runtime edit -> {int(SERVICES * PD_SHARE)} InferenceServices rolled out: {edit_seconds:.1f} s")
        print(f"  delete all -> no child, Job or node label left: {delete_seconds:.1f} s")
        return 0
    finally:
        if op is not None:
            op.stop()
        local.stop()


if __name__ == "__main__":
    sys.exit(main())
