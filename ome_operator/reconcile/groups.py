"""Whole-group restarts: SGLang's NCCL world cannot heal a member, so a failed pod restarts its group.

Deleting every pod of the group lets both StatefulSets recreate them together. A recreated pod has a
new UID and no restarts, so each failure triggers exactly one restart.
"""

from __future__ import annotations

from typing import Any

from ome_operator.kube.client import Kube
from ome_operator.render import names

from .events import record_event
from .observe import find_failure

Obj = dict[str, Any]


def restart_failed_groups(kube: Kube, isvc: Obj, pods: list[Obj]) -> dict[str, str]:
    """Recreate every multi-node group with a failed pod; returns component -> what happened."""
    groups: dict[tuple[str, str], list[Obj]] = {}
    for pod in pods:
        labels = pod["metadata"].get("labels") or {}
        if names.LABEL_GROUP in labels:
            groups.setdefault((labels.get(names.LABEL_COMPONENT, ""), labels[names.LABEL_GROUP]), []).append(pod)
    restarting: dict[str, str] = {}
    for (component, group), members in sorted(groups.items()):
        failures = [f for f in (find_failure(p) for p in members) if f is not None]
        if not failures:
            continue
        first = failures[0]
        pod_name = first.pod["metadata"]["name"]
        exit_text = f", exit code {first.exit_code}" if first.exit_code is not None else ""
        tail = kube.pod_log_tail(pod_name, first.pod["metadata"]["namespace"]) or ""
        message = (
            f"pod {pod_name} failed ({first.reason}{exit_text}, {first.restarts} restarts): "
            f"recreating {component} group {group} ({len(members)} pods)"
        )
        if tail.strip():
            message += "; last log lines:\n" + "\n".join(tail.strip().splitlines()[-10:])
        record_event(kube, isvc, "Warning", "GroupRestart", message)
        for pod in members:
            kube.delete("Pod", pod["metadata"]["name"], pod["metadata"]["namespace"])
        restarting[component] = message.split(";")[0]
    return restarting
