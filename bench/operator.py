"""`make bench`: how fast and how frugal the operator is on the local 16-node cluster.

Prints: time from `kubectl apply` of an InferenceService to all its children existing (p50/p95 over
RUNS runs), API requests the reconcilers send per InferenceService create (from the operator's own
ome_api_requests_total counter), writes per idle minute (from the apiserver's audit log), and the
operator's resident memory. Numbers only: targets live in issues, not here.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import yaml

from devtools.cluster import LocalCluster, find_bin_dir, kubectl_path
from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.operator import (
    OperatorProcess,
    apply_crds,
    operator_writes,
    reference_files,
    write_operator_kubeconfig,
)

RUNS = int(os.environ.get("OME_BENCH_RUNS", "10"))
IDLE_SECONDS = 60
EXPECTED_CHILDREN = 14  # 4 StatefulSets, 1 Deployment, 6 Services, SA, Role, RoleBinding


def kubectl(cluster: ClusterHandle, *args: str, stdin: str | None = None) -> str:
    return cluster.kubectl(*args, stdin=stdin).stdout


def children(cluster: ClusterHandle, ns: str) -> int:
    out = kubectl(
        cluster,
        "get",
        "statefulsets,deployments,services,serviceaccounts,roles,rolebindings",
        "-n",
        ns,
        "-l",
        "ome.io/inferenceservice=kimi-k2-instruct",
        "-o",
        "name",
    )
    return len(out.split())


def api_requests(op: OperatorProcess) -> float:
    _, text = op.get("/metrics")
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("ome_api_requests_total{")
    )


def isvc_in(ns: str) -> str:
    docs = list(yaml.safe_load_all(reference_files().isvc.read_text()))
    isvc = next(d for d in docs if d and d.get("kind") == "InferenceService")
    isvc["metadata"]["namespace"] = ns
    return yaml.safe_dump_all([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, isvc])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    local = LocalCluster("bench", nodes=16, bin_dir=find_bin_dir())
    local.start()
    cluster = ClusterHandle(kubeconfig=local.kubeconfig, audit_log=local.audit_log)
    workdir = local.dir / "bench"
    workdir.mkdir(exist_ok=True)
    op = None
    try:
        apply_crds(cluster)
        kubeconfig = write_operator_kubeconfig(cluster, workdir / "operator.kubeconfig")
        op = OperatorProcess(kubeconfig, workdir / "operator.log", "--resync-seconds", "30").start()
        op.wait_ready()
        files = reference_files()
        kubectl(cluster, "apply", "-f", str(files.model), "-f", str(files.runtime))
        wait_for(
            lambda: (
                json.loads(kubectl(cluster, "get", "clusterbasemodel", "kimi-k2-instruct", "-o", "json"))
                .get("status", {})
                .get("state")
                == "Ready"
            ),
            timeout=120,
            what="model Ready",
        )
        durations: list[float] = []
        requests: list[float] = []
        for run in range(RUNS):
            ns = f"bench-{run}"
            before = api_requests(op)
            started = time.monotonic()
            kubectl(cluster, "apply", "-f", "-", stdin=isvc_in(ns))
            wait_for(
                lambda ns=ns: children(cluster, ns) >= EXPECTED_CHILDREN, timeout=60, interval=0.05, what="children"
            )
            durations.append(time.monotonic() - started)
            # Let the pass that follows creation (status, Ready) finish before counting requests.
            time.sleep(3)
            requests.append(api_requests(op) - before)
            kubectl(cluster, "delete", "namespace", ns, "--wait=true", "--timeout=120s")
        kubectl(cluster, "apply", "-f", "-", stdin=isvc_in("bench-idle"))
        wait_for(lambda: children(cluster, "bench-idle") >= EXPECTED_CHILDREN, timeout=60, what="children")
        time.sleep(10)  # settle: workload status updates stop
        start = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        time.sleep(IDLE_SECONDS)
        writes = operator_writes(cluster, start)
        rss_mib = op.rss_kib() / 1024
        print(f"ome-operator benchmark on a local {local.nodes}-node cluster ({RUNS} runs)")
        print(
            f"apply -> all {EXPECTED_CHILDREN} children created: p50 {percentile(durations, 0.5):.2f} s, "
            f"p95 {percentile(durations, 0.95):.2f} s, mean {statistics.mean(durations):.2f} s"
        )
        print(
            f"API requests per InferenceService create (reconciler, incl. status): median "
            f"{statistics.median(requests):.0f}, max {max(requests):.0f}"
        )
        print(f"writes in {IDLE_SECONDS} s idle: {len(writes)} {writes if writes else ''}".rstrip())
        print(f"operator RSS: {rss_mib:.0f} MiB")
        return 0
    finally:
        if op is not None:
            kubectl_delete = [
                str(kubectl_path()),
                f"--kubeconfig={local.kubeconfig}",
                "delete",
                "clusterbasemodel",
                "--all",
            ]
            subprocess.run(kubectl_delete, capture_output=True, check=False, timeout=60)
            op.stop()
        local.stop()


if __name__ == "__main__":
    sys.exit(main())
