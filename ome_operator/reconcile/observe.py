"""Reading what the cluster says about an InferenceService's workloads: readiness, pending pods, failures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ome_operator.render import names
from ome_operator.render.workload import Shape
from ome_operator.status.isvc import ComponentObservation

Obj = dict[str, Any]


def _ready(obj: Obj | None) -> int:
    return int(((obj or {}).get("status") or {}).get("readyReplicas") or 0)


def _wanted(obj: Obj | None) -> int:
    return int(((obj or {}).get("spec") or {}).get("replicas") or 0)


def pending_message(pods: list[Obj]) -> str:
    """The scheduler's reason for the first unschedulable pod, e.g. Insufficient nvidia.com/gpu."""
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                return f"{pod['metadata']['name']}: {cond.get('message') or cond.get('reason') or 'unschedulable'}"
    return ""


@dataclass(frozen=True)
class PodFailure:
    pod: Obj
    reason: str
    exit_code: int | None
    restarts: int


def find_failure(pod: Obj) -> PodFailure | None:
    """A pod that failed or whose container restarted: its group's NCCL world is broken."""
    if pod["metadata"].get("deletionTimestamp"):
        return None
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        restarts = int(cs.get("restartCount") or 0)
        terminated = (cs.get("lastState") or {}).get("terminated") or (cs.get("state") or {}).get("terminated")
        if restarts > 0 or (terminated and status.get("phase") == "Failed"):
            reason = (terminated or {}).get("reason") or "Restarted"
            return PodFailure(pod, reason, (terminated or {}).get("exitCode"), restarts)
    if status.get("phase") == "Failed":
        return PodFailure(pod, status.get("reason") or "Failed", None, 0)
    return None


def observe_component(shape: Shape, workloads: dict[str, Obj], pods: list[Obj], url: str = "") -> ComponentObservation:
    """Readiness of one engine/decoder component from its StatefulSets (or Deployment) and pods."""
    mine = [p for p in pods if p["metadata"].get("labels", {}).get(names.LABEL_COMPONENT) == shape.component]
    if shape.multi_node:
        groups_ready = 0
        pods_ready = 0
        for group in range(shape.groups):
            leader = workloads.get(f"StatefulSet/{group}/leader")
            worker = workloads.get(f"StatefulSet/{group}/worker")
            ready = _ready(leader) + _ready(worker)
            pods_ready += ready
            wanted = _wanted(leader) + _wanted(worker)
            if leader is not None and wanted == shape.pods_per_group and ready == wanted:
                groups_ready += 1
    else:
        deployment = workloads.get("Deployment")
        pods_ready = _ready(deployment)
        groups_ready = pods_ready
    return ComponentObservation(
        name=shape.component,
        groups=shape.groups,
        groups_ready=min(groups_ready, shape.groups),
        pods=shape.pods,
        pods_ready=pods_ready,
        gpus=shape.gpus,
        pending_message=pending_message(mine),
        url=url,
    )


def index_workloads(live: list[Obj], component: str) -> dict[str, Obj]:
    """This component's workloads keyed as observe_component expects."""
    result: dict[str, Obj] = {}
    for obj in live:
        labels = obj["metadata"].get("labels") or {}
        if labels.get(names.LABEL_COMPONENT) != component:
            continue
        if obj["kind"] == "StatefulSet":
            result[f"StatefulSet/{labels.get(names.LABEL_GROUP)}/{labels.get(names.LABEL_ROLE)}"] = obj
        elif obj["kind"] == "Deployment":
            result["Deployment"] = obj
    return result


def observe_router(live: list[Obj]) -> ComponentObservation:
    """Readiness of the router Deployment (pods, no GPUs, no groups beyond its replicas)."""
    router = next(
        (
            o
            for o in live
            if o["kind"] == "Deployment" and o["metadata"]["labels"].get(names.LABEL_COMPONENT) == "router"
        ),
        None,
    )
    wanted, ready = _wanted(router), _ready(router)
    return ComponentObservation("router", wanted, min(ready, wanted), wanted, ready, 0)
