"""`make bench`: how fast and how frugal the operator is on the local 16-node cluster.

Prints, over RUNS creates of OME's Kimi K2 InferenceService: apply -> first child and -> all
children (p50/p95), the operator's API requests per create by verb, its CPU time per create; then,
with the service Ready and idle, its requests per idle minute by verb, and its resident memory.
Times and requests come from the API server's audit log (the API server is restarted once with a
policy that records the operator's reads too), CPU from /proc. Numbers only: targets live in issues.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from bench.apiserver import describe, requests_by, restart_apiserver
from devtools.cluster import LocalCluster, find_bin_dir
from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.operator import (
    OPERATOR_USER,
    OperatorProcess,
    apply_crds,
    reference_files,
    write_operator_kubeconfig,
)

RUNS = int(os.environ.get("OME_BENCH_RUNS", "10"))
IDLE_SECONDS = int(os.environ.get("OME_BENCH_IDLE_SECONDS", "60"))
EXPECTED_CHILDREN = 14  # 4 StatefulSets, 1 Deployment, 6 Services, SA, Role, RoleBinding
CHILD_RESOURCES = {"statefulsets", "deployments", "services", "serviceaccounts", "roles", "rolebindings"}
WRITES = {"create", "update", "patch", "delete", "deletecollection"}


def utc(ts: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(((ts or time.time()) % 1) * 1e6):06d}Z"


def parse(ts: str) -> float:
    seconds, _, fraction = ts.rstrip("Z").partition(".")
    base = time.mktime(time.strptime(seconds, "%Y-%m-%dT%H:%M:%S")) - time.timezone
    return base + float("0." + (fraction or "0"))


def children(cluster: ClusterHandle, ns: str) -> int:
    out = cluster.kubectl(
        "get",
        ",".join(sorted(CHILD_RESOURCES)),
        "-n",
        ns,
        "-l",
        "ome.io/inferenceservice=kimi-k2-instruct",
        "-o",
        "name",
    ).stdout
    return len(out.split())


def isvc_in(ns: str) -> str:
    docs = list(yaml.safe_load_all(reference_files().isvc.read_text()))
    isvc = next(d for d in docs if d and d.get("kind") == "InferenceService")
    isvc["metadata"]["namespace"] = ns
    return yaml.safe_dump_all([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, isvc])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_seconds(op: OperatorProcess) -> float:
    assert op.proc is not None
    fields = Path(f"/proc/{op.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def child_writes(cluster: ClusterHandle, ns: str, since: str) -> list[dict[str, Any]]:
    return [
        e
        for e in requests_by(cluster, OPERATOR_USER, since=since)
        if e.get("verb") in WRITES
        and (e.get("objectRef") or {}).get("namespace") == ns
        and (e.get("objectRef") or {}).get("resource") in CHILD_RESOURCES
    ]


def isvc_created(cluster: ClusterHandle, ns: str, since: str) -> float:
    for event in cluster.audit_events():
        ref = event.get("objectRef") or {}
        if (
            event.get("stage") == "ResponseComplete"
            and event.get("requestReceivedTimestamp", "") >= since
            and ref.get("resource") == "inferenceservices"
            and ref.get("namespace") == ns
            and event.get("verb") in ("create", "patch")
            and not ref.get("subresource")
            and event.get("user", {}).get("username") != OPERATOR_USER
        ):
            return parse(event["stageTimestamp"])
    raise RuntimeError(f"no create of the InferenceService in {ns} in the audit log")


def by_verb(events: list[dict[str, Any]]) -> str:
    counts = Counter(str(e.get("verb")) for e in events)
    return ", ".join(f"{verb} {n}" for verb, n in sorted(counts.items())) or "none"


def main() -> int:
    local = LocalCluster("bench", nodes=16, bin_dir=find_bin_dir())
    local.start()
    cluster = ClusterHandle(kubeconfig=local.kubeconfig, audit_log=local.audit_log)
    workdir = local.dir / "bench"
    workdir.mkdir(exist_ok=True)
    op = None
    try:
        apply_crds(cluster)
        restart_apiserver(cluster, audit_user=OPERATOR_USER)
        kubeconfig = write_operator_kubeconfig(cluster, workdir / "operator.kubeconfig")
        op = OperatorProcess(kubeconfig, workdir / "operator.log", "--resync-seconds", "30").start()
        op.wait_ready()
        files = reference_files()
        cluster.kubectl("apply", "-f", str(files.model), "-f", str(files.runtime))
        wait_for(
            lambda: (
                json.loads(cluster.kubectl("get", "clusterbasemodel", "kimi-k2-instruct", "-o", "json").stdout)
                .get("status", {})
                .get("state")
                == "Ready"
            ),
            timeout=120,
            what="model Ready",
        )
        first: list[float] = []
        everything: list[float] = []
        per_create: list[list[dict[str, Any]]] = []
        cpu: list[float] = []
        for run in range(RUNS):
            ns = f"bench-{run}"
            since = utc()
            cpu_before = cpu_seconds(op)
            cluster.kubectl("apply", "-f", "-", stdin=isvc_in(ns))
            wait_for(
                lambda ns=ns: children(cluster, ns) >= EXPECTED_CHILDREN, timeout=60, interval=0.1, what="children"
            )
            time.sleep(3)  # the passes that follow creation (pods, status, Ready) finish
            cpu.append(cpu_seconds(op) - cpu_before)
            created = isvc_created(cluster, ns, since)
            writes = child_writes(cluster, ns, since)
            first.append(min(parse(e["requestReceivedTimestamp"]) for e in writes) - created)
            everything.append(max(parse(e["stageTimestamp"]) for e in writes) - created)
            per_create.append(requests_by(cluster, OPERATOR_USER, since=since))
            cluster.kubectl("delete", "namespace", ns, "--wait=true", "--timeout=120s", timeout=150)
        cluster.kubectl("apply", "-f", "-", stdin=isvc_in("bench-idle"))
        wait_for(lambda: children(cluster, "bench-idle") >= EXPECTED_CHILDREN, timeout=60, what="children")
        wait_for(
            lambda: any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in json.loads(
                    cluster.kubectl("get", "isvc", "kimi-k2-instruct", "-n", "bench-idle", "-o", "json").stdout
                )
                .get("status", {})
                .get("conditions", [])
            ),
            timeout=300,
            interval=1,
            what="the idle InferenceService Ready",
        )
        time.sleep(10)  # settle: workload status updates stop
        idle_start = utc()
        time.sleep(IDLE_SECONDS)
        idle = requests_by(cluster, OPERATOR_USER, since=idle_start, until=utc())
        rss_mib = op.rss_kib() / 1024
        print(f"ome-operator benchmark on a local {local.nodes}-node cluster ({RUNS} runs, OME's Kimi K2 files)")
        print(
            f"apply -> first child: p50 {percentile(first, 0.5):.3f} s, p95 {percentile(first, 0.95):.3f} s; "
            f"-> all {EXPECTED_CHILDREN} children: p50 {percentile(everything, 0.5):.3f} s, "
            f"p95 {percentile(everything, 0.95):.3f} s"
        )
        totals = [len(r) for r in per_create]
        median_run = per_create[totals.index(sorted(totals)[len(totals) // 2])]
        print(
            f"API requests per create (audit log, incl. status and Events): median {statistics.median(totals):.0f}, "
            f"max {max(totals)}; median run by verb: {by_verb(median_run)}"
        )
        print(f"controller CPU per create: median {statistics.median(cpu):.3f} s, max {max(cpu):.3f} s")
        others = [describe(e) for e in idle if e.get("verb") != "watch"]
        print(f"requests in {IDLE_SECONDS} s idle: {len(idle)} ({by_verb(idle)}); other than watches: {others or 0}")
        print(f"operator RSS: {rss_mib:.0f} MiB")
        return 0
    finally:
        if op is not None:
            cluster.kubectl("delete", "clusterbasemodel", "--all", check=False, timeout=60)
            op.stop()
        local.stop()


if __name__ == "__main__":
    sys.exit(main())
