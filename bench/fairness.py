"""Fairness under a huge object: how long a neighbour takes to react while thousands of children
of another InferenceService are being applied, and how much work a deletion leaves in flight.

    make bench-fairness                  # starts a local 16-node cluster and the operator, then stops them
    .venv/bin/python -m bench.fairness --kubeconfig KUBECONFIG [--groups 400]   # a running setup

tests/integration/test_reconcile_hardening.py runs the same scenario and asserts its behaviour.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from devtools.cluster import LocalCluster, find_bin_dir
from devtools.cluster_testing import ClusterHandle
from devtools.operator import OperatorProcess, apply_crds, write_operator_kubeconfig

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "config/models/Qwen/Qwen3-0.6B.yaml"
RUNTIME = REPO / "config/runtimes/srt/Qwen/qwen3-0-6b-rt.yaml"
RUNTIME_NAME = "srt-qwen3-0-6b"
# Pods that match no node stay Pending: the scenario measures the operator, not the node-side runner.
NOWHERE = {"ome-operator.dev/bench": "nowhere"}


@dataclass
class FairnessFigures:
    groups: int
    first_progress_s: float  # until the big object's status first showed ChildrenApplied=Applying
    progress_messages: int  # distinct progress messages seen (status written between slices)
    neighbour_react_s: float  # the neighbour's edit until its Deployment carried it
    children: int  # the big object's children: a Service and a StatefulSet per group, one Service more
    big_children_when_neighbour_done: int  # of those, how many existed at that moment
    big_children_at_delete: int
    big_children_after_delete: int  # more than when the delete was issued (a count, racing the operator)
    deleted_at: str = ""  # UTC time just before the delete was sent (audit-log comparisons)


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    return ClusterHandle(kubeconfig=kubeconfig).kubectl(*args, stdin=stdin).stdout


def kget(kubeconfig: Path, *args: str) -> Any:
    return json.loads(kubectl(kubeconfig, "get", *args, "-o", "json"))


def isvc(name: str, namespace: str, model: str, **engine: Any) -> dict[str, Any]:
    return {
        "apiVersion": "ome.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"name": model},
            "runtime": {"name": RUNTIME_NAME},
            "engine": {"nodeSelector": NOWHERE, **engine},
        },
    }


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def setup(kubeconfig: Path, namespace: str, model: str) -> None:
    kubectl(kubeconfig, "create", "namespace", namespace)
    kubectl(kubeconfig, "apply", "-f", str(RUNTIME))
    doc = next(d for d in yaml.safe_load_all(MODEL.read_text()) if d and d.get("kind") == "ClusterBaseModel")
    doc["metadata"]["name"] = model
    doc["spec"]["storage"]["nodeSelector"] = {"kubernetes.io/hostname": "h200-015"}
    kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump(doc))


def count_children(kubeconfig: Path, namespace: str, name: str) -> int:
    """Services and StatefulSets of one InferenceService (a group is one of each here)."""
    items = kget(kubeconfig, "services,statefulsets", "-n", namespace, "-l", f"ome.io/inferenceservice={name}")
    return len(items["items"])


def wait(probe: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def run_fairness(kubeconfig: Path, namespace: str, model: str, groups: int = 400) -> FairnessFigures:
    """The big object (multi-node, `groups` groups of one pod) and a small neighbour in one namespace."""
    small = isvc("neighbour", namespace, model, minReplicas=1, maxReplicas=3)
    kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump(small))
    wait(
        lambda: kubectl(kubeconfig, "get", "deployment", "-n", namespace, "-l", "ome.io/inferenceservice=neighbour"),
        60,
        "the neighbour's Deployment",
    )
    big = isvc("big", namespace, model, minReplicas=groups, maxReplicas=groups, leader={}, worker={"size": 0})
    started = time.monotonic()
    kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump(big))
    messages: set[str] = set()

    def applying() -> bool:
        cond = condition(kget(kubeconfig, "isvc", "big", "-n", namespace), "ChildrenApplied")
        if cond.get("reason") == "Applying":
            messages.add(str(cond.get("message")))
        return bool(messages)

    wait(applying, 120, "the big object's first progress in status")
    first_progress = time.monotonic() - started
    edited = time.monotonic()
    kubectl(kubeconfig, "patch", "isvc", "neighbour", "-n", namespace, "--type=merge", "-p",
            '{"spec":{"engine":{"minReplicas":2}}}')  # fmt: skip

    def neighbour_done() -> bool:
        applying()
        dep = kget(kubeconfig, "deployment", "neighbour-engine", "-n", namespace)
        return int(dep["spec"].get("replicas") or 0) == 2

    wait(neighbour_done, 120, "the neighbour's edit applied")
    react = time.monotonic() - edited
    at_neighbour = count_children(kubeconfig, namespace, "big")
    wait(lambda: applying() and len(messages) >= 2, 120, "a second progress message")
    at_delete = count_children(kubeconfig, namespace, "big")
    deleted_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    kubectl(kubeconfig, "delete", "isvc", "big", "-n", namespace, "--wait=false")
    time.sleep(5)
    after = max(0, count_children(kubeconfig, namespace, "big") - at_delete)
    figures = FairnessFigures(
        groups, first_progress, len(messages), react, 2 * groups + 1, at_neighbour, at_delete, after
    )
    figures.deleted_at = deleted_at
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--kubeconfig", type=Path, help="a cluster with CRDs and a running operator (else one is started)"
    )
    parser.add_argument("--groups", type=int, default=400)
    parser.add_argument("--namespace", default="bench-fairness")
    args = parser.parse_args()
    if args.kubeconfig is not None:
        run_on(args.kubeconfig, args.namespace, args.groups)
        return
    local = LocalCluster("bench-fairness", nodes=16, bin_dir=find_bin_dir())
    local.start()
    cluster = ClusterHandle(kubeconfig=local.kubeconfig, audit_log=local.audit_log)
    op = None
    try:
        apply_crds(cluster)
        workdir = local.dir / "bench"
        workdir.mkdir(exist_ok=True)
        kubeconfig = write_operator_kubeconfig(cluster, workdir / "operator.kubeconfig")
        op = OperatorProcess(kubeconfig, workdir / "operator.log", "--resync-seconds", "30").start()
        op.wait_ready()
        run_on(local.kubeconfig, args.namespace, args.groups)
    finally:
        if op is not None:
            op.stop()
        local.stop()


def run_on(kubeconfig: Path, namespace: str, groups: int) -> None:
    setup(kubeconfig, namespace, "bench-fairness-qwen")
    try:
        figures = run_fairness(kubeconfig, namespace, "bench-fairness-qwen", groups)
    finally:
        kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false")
    print_figures(figures)


def print_figures(f: FairnessFigures) -> None:
    print(f"big object: {f.groups} groups; first progress in status after {f.first_progress_s:.1f} s")
    print(f"  progress messages seen: {f.progress_messages}")
    print(f"neighbour reacted to its edit in {f.neighbour_react_s:.1f} s, while the big object had "
          f"{f.big_children_when_neighbour_done}/{f.children} children")  # fmt: skip
    print(f"big object deleted at {f.big_children_at_delete}/{f.children} children; "
          f"{f.big_children_after_delete} created after the delete")  # fmt: skip


if __name__ == "__main__":
    main()
