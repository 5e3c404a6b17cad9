"""Whole-group restarts: SGLang's NCCL world cannot heal a member, so the group is recreated whole.

A group is recreated when one of its pods failed, when a pod's node is gone (deleted, or NotReady
for longer than NODE_LOST_AFTER), or when its pods run an older group revision than both of its
StatefulSets now carry (a runtime edit that touched only the leader's template still replaces the
workers with it). Deleting every pod of the group lets both StatefulSets recreate them together;
each delete names the pod's uid, so a pod already recreated under the same name is never deleted
by a decision made about its predecessor. A recreated pod has a new UID and no restarts, so each
failure triggers exactly one restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ome_operator.kube.client import Kube
from ome_operator.render import names

from .children import GROUP_REVISION_ANNOTATION
from .events import record_event
from .observe import find_failure

Obj = dict[str, Any]
# A node that has not been Ready for this long has lost its pods: their group is recreated elsewhere.
NODE_LOST_AFTER = 30.0


@dataclass(frozen=True)
class GroupState:
    """Facts the restart decision needs beyond the pods: nodes and the revisions now applied."""

    nodes: dict[str, Obj]  # name -> Node
    revisions: dict[tuple[str, str], str]  # (component, group) -> revision both StatefulSets carry
    now: float = 0.0  # seconds since the epoch (NotReady durations)


def _since(timestamp: str | None, now: float) -> float:
    if not timestamp:
        return 0.0
    try:
        then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0
    return now - then


def node_lost(pod: Obj, state: GroupState) -> str | None:
    """Why the pod's node can no longer run it, or None."""
    node_name = (pod.get("spec") or {}).get("nodeName")
    if not node_name:
        return None
    node = state.nodes.get(node_name)
    if node is None:
        return f"node {node_name} was deleted"
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") != "Ready" or cond.get("status") == "True":
            continue
        down = _since(cond.get("lastTransitionTime"), state.now)
        if down >= NODE_LOST_AFTER:
            return f"node {node_name} has been NotReady for {down:.0f}s ({cond.get('reason') or 'no heartbeat'})"
    return None


def compute_recheck(pods: list[Obj], state: GroupState) -> float | None:
    """Seconds until a group pod's NotReady node has been down for NODE_LOST_AFTER, if one is."""
    waits = []
    for members in group_pods(pods).values():
        for pod in members:
            node = state.nodes.get((pod.get("spec") or {}).get("nodeName") or "")
            for cond in ((node or {}).get("status") or {}).get("conditions") or []:
                left = NODE_LOST_AFTER - _since(cond.get("lastTransitionTime"), state.now)
                if cond.get("type") == "Ready" and cond.get("status") != "True" and left > 0:
                    waits.append(left + 1.0)  # past the grace, the restart itself is the news
    return min(waits) if waits else None


def group_pods(pods: list[Obj]) -> dict[tuple[str, str], list[Obj]]:
    groups: dict[tuple[str, str], list[Obj]] = {}
    for pod in pods:
        labels = pod["metadata"].get("labels") or {}
        if names.LABEL_GROUP in labels and not pod["metadata"].get("deletionTimestamp"):
            groups.setdefault((labels.get(names.LABEL_COMPONENT, ""), labels[names.LABEL_GROUP]), []).append(pod)
    return groups


def _failure_message(kube: Kube, component: str, group: str, members: list[Obj]) -> str | None:
    failures = [f for f in (find_failure(p) for p in members) if f is not None]
    if not failures:
        return None
    first = failures[0]
    pod_name = first.pod["metadata"]["name"]
    exit_text = f", exit code {first.exit_code}" if first.exit_code is not None else ""
    message = (
        f"pod {pod_name} failed ({first.reason}{exit_text}, {first.restarts} restarts): "
        f"recreating {component} group {group} ({len(members)} pods)"
    )
    tail = kube.pod_log_tail(pod_name, first.pod["metadata"]["namespace"]) or ""
    if tail.strip():
        message += "; last log lines:\n" + "\n".join(tail.strip().splitlines()[-10:])
    return message


def restart_failed_groups(kube: Kube, isvc: Obj, pods: list[Obj], state: GroupState | None = None) -> dict[str, str]:
    """Recreate every multi-node group that cannot go on as it is; returns component -> what happened."""
    restarting: dict[str, str] = {}
    for (component, group), members in sorted(group_pods(pods).items()):
        message = _failure_message(kube, component, group, members)
        reason, grace = "GroupRestart", None
        if message is None and state is not None:
            lost = next(((p, why) for p in members if (why := node_lost(p, state)) is not None), None)
            if lost is not None:
                pod, why = lost
                message = f"pod {pod['metadata']['name']}: {why}: recreating {component} group {group} on other nodes"
                reason, grace = "GroupNodeLost", 0  # nobody is left on that node to end the pod gracefully
            else:
                revision = state.revisions.get((component, group))
                stale = [p for p in members if _revision(p) != revision]
                if revision is not None and stale:
                    message = (
                        f"{len(stale)} of {len(members)} pods run an older revision of {component} group {group}: "
                        "recreating the whole group (leader and workers together)"
                    )
                    reason = "GroupRolled"
        if message is None:
            continue
        record_event(kube, isvc, "Normal" if reason == "GroupRolled" else "Warning", reason, message)
        for pod in members:
            meta = pod["metadata"]
            on_lost_node = state is not None and node_lost(pod, state) is not None
            kube.delete(
                "Pod", meta["name"], meta["namespace"], uid=meta.get("uid"), grace_seconds=0 if on_lost_node else grace
            )
        restarting[component] = message.split(";")[0]
    return restarting


def _revision(pod: Obj) -> str | None:
    return (pod["metadata"].get("annotations") or {}).get(GROUP_REVISION_ANNOTATION)
