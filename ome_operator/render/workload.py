"""Engine and decoder workloads: StatefulSet groups for multi-node components, a Deployment otherwise.

A multi-node component is `minReplicas` groups of `1 + worker.size` pods. Leader and worker pods
have different templates in OME runtimes, so each group is two StatefulSets sharing one headless
Service: `<isvc>-<component>-<g>` (the leader, ordinal 0) and `<isvc>-<component>-<g>-worker`
(ordinals 1..size). Stable ordinals give each pod its rank and the leader a stable DNS name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import names
from .context import IsvcContext
from .merge import Obj
from .pods import (
    build_pod_spec,
    contract_env,
    gpus_of,
    leader_address,
    pod_metadata,
    prefill_annotations,
    role_pod_fields,
    role_runner,
    with_serving_probes,
)


@dataclass(frozen=True)
class Shape:
    """The size of a component: what plan prints and status counts."""

    component: str
    multi_node: bool
    groups: int
    pods_per_group: int
    gpus_per_pod: int

    @property
    def pods(self) -> int:
        return self.groups * self.pods_per_group

    @property
    def gpus(self) -> int:
        return self.pods * self.gpus_per_pod

    @property
    def parallelism(self) -> int:
        return self.gpus_per_pod * self.pods_per_group


def compute_shape(component_name: str, component: Obj) -> Shape:
    multi = "leader" in component or "worker" in component
    groups = component.get("minReplicas")
    groups = 1 if groups is None else int(groups)
    size = int((component.get("worker") or {}).get("size") or 0) if multi else 0
    runner = role_runner(component, "leader" if multi else None)
    return Shape(component_name, multi, groups, 1 + size, gpus_of(runner))


def ports_of(runner: Obj) -> list[Obj]:
    ports = []
    for port in runner.get("ports") or []:
        entry: Obj = {
            "name": port.get("name") or f"port-{port['containerPort']}",
            "port": port["containerPort"],
            "targetPort": port["containerPort"],
            "protocol": port.get("protocol") or "TCP",
        }
        ports.append(entry)
    return ports


def render_component(ctx: IsvcContext, component_name: str, component: Obj) -> list[Obj]:
    shape = compute_shape(component_name, component)
    if shape.multi_node:
        objects: list[Obj] = []
        for group in range(shape.groups):
            objects.extend(render_group(ctx, component_name, component, shape, group))
        objects.append(render_component_service(ctx, component_name, component, leaders_only=True))
        return objects
    return [
        render_deployment(ctx, component_name, component, shape),
        render_component_service(ctx, component_name, component, leaders_only=False),
    ]


def _topology_env(ctx: IsvcContext, component_name: str, shape: Shape, group: int, leader: bool) -> list[Obj]:
    rank: Obj = (
        {"name": "LWS_WORKER_INDEX", "value": "0"}
        if leader
        else {
            "name": "LWS_WORKER_INDEX",
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{names.LABEL_POD_INDEX}']"}},
        }
    )
    return [
        {"name": "LWS_LEADER_ADDRESS", "value": leader_address(ctx, component_name, group)},
        {"name": "LWS_GROUP_SIZE", "value": str(shape.pods_per_group)},
        rank,
        {"name": "PARALLELISM_SIZE", "value": str(shape.parallelism)},
        {"name": "MODEL_PATH", "value": ctx.model.path},
    ]


def render_group(ctx: IsvcContext, component_name: str, component: Obj, shape: Shape, group: int) -> list[Obj]:
    group_labels = {names.LABEL_GROUP: str(group)}
    service = names.group_name(ctx.name, component_name, group)
    objects: list[Obj] = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": ctx.metadata(service, component_name, group_labels),
            "spec": {
                "clusterIP": "None",
                # Peers resolve the leader before anyone is Ready: NCCL needs the address to become ready.
                "publishNotReadyAddresses": True,
                "selector": {
                    names.LABEL_ISVC: ctx.name,
                    names.LABEL_COMPONENT: component_name,
                    names.LABEL_GROUP: str(group),
                },
            },
        }
    ]
    roles = [("leader", service, 1, 0)]
    if shape.pods_per_group > 1:
        roles.append(("worker", names.worker_name(ctx.name, component_name, group), shape.pods_per_group - 1, 1))
    for role, name, replicas, first_ordinal in roles:
        leader = role == "leader"
        runner = role_runner(component, role)
        if leader:
            runner = with_serving_probes(ctx, runner)
        selector = {**names.isvc_labels(ctx.name, component_name), **group_labels, names.LABEL_ROLE: role}
        labels = dict(selector)
        if leader:
            labels[names.LABEL_LWS_WORKER_INDEX] = "0"
        env = contract_env(runner, _topology_env(ctx, component_name, shape, group, leader))
        spec: dict[str, Any] = {
            "serviceName": service,
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": pod_metadata(component, {**ctx.ome_pod_labels(), **labels}, prefill_annotations(runner)),
                "spec": build_pod_spec(ctx, role_pod_fields(component, role), runner, env),
            },
        }
        if first_ordinal:
            spec["ordinals"] = {"start": first_ordinal}
        objects.append(
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": ctx.metadata(name, component_name, {**group_labels, names.LABEL_ROLE: role}),
                "spec": spec,
            }
        )
    return objects


def render_deployment(ctx: IsvcContext, component_name: str, component: Obj, shape: Shape) -> Obj:
    runner = with_serving_probes(ctx, role_runner(component, None))
    env = contract_env(
        runner,
        [
            {"name": "PARALLELISM_SIZE", "value": str(shape.parallelism)},
            {"name": "MODEL_PATH", "value": ctx.model.path},
        ],
    )
    selector = names.isvc_labels(ctx.name, component_name)
    spec: dict[str, Any] = {
        "replicas": shape.groups,
        "selector": {"matchLabels": selector},
        "template": {
            "metadata": pod_metadata(component, {**ctx.ome_pod_labels(), **selector}, prefill_annotations(runner)),
            "spec": build_pod_spec(ctx, role_pod_fields(component, None), runner, env),
        },
    }
    if component.get("deploymentStrategy"):
        spec["strategy"] = component["deploymentStrategy"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": ctx.metadata(names.component_name(ctx.name, component_name), component_name),
        "spec": spec,
    }


def render_component_service(ctx: IsvcContext, component_name: str, component: Obj, leaders_only: bool) -> Obj:
    """`<isvc>-<component>`: selects this InferenceService's leaders (multi-node) or pods, never others'."""
    selector = {names.LABEL_ISVC: ctx.name, names.LABEL_COMPONENT: component_name}
    if leaders_only:
        selector[names.LABEL_LWS_WORKER_INDEX] = "0"
    runner = role_runner(component, "leader" if leaders_only else None)
    spec: Obj = {"selector": selector, "ports": ports_of(runner) or [_default_port()]}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": ctx.metadata(names.component_name(ctx.name, component_name), component_name),
        "spec": spec,
    }


def _default_port() -> Obj:
    return {"name": "http", "port": 8080, "targetPort": 8080, "protocol": "TCP"}
