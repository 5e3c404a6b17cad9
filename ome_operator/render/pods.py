"""Pod templates for engine and decoder pods: merged runtime + InferenceService, plus OME's contract.

Every engine/decoder pod gets the environment OME runtimes' command lines rely on (LWS_*,
PARALLELISM_SIZE, MODEL_PATH), the model weights mounted read-only from the node, and the
model-ready node selector that keeps it off nodes without a verified copy.
"""

from __future__ import annotations

from typing import Any

from ome_operator.api.pod import NON_POD_KEYS

from . import names
from .context import GPU_RESOURCE, IsvcContext
from .merge import Obj, merge_container, merge_objects

RUNNER_NAME = "ome-container"
MODEL_VOLUME = "ome-model-weights"


def gpus_of(container: Obj) -> int:
    """GPUs a container asks for: limits, else requests (extended resources need both equal)."""
    resources = container.get("resources") or {}
    for section in ("limits", "requests"):
        value = (resources.get(section) or {}).get(GPU_RESOURCE)
        if value is not None:
            return int(str(value))
    return 0


def pod_part(spec: Obj) -> Obj:
    """The PodSpec fields of a component, leader or worker mapping."""
    return {k: v for k, v in spec.items() if k not in NON_POD_KEYS}


def role_runner(component: Obj, role: str | None, default_name: str = RUNNER_NAME) -> Obj:
    """The serving container of a role: the component's runner overlaid with the leader's/worker's."""
    base = component.get("runner") or {}
    runner = merge_container(base, (component.get(role) or {}).get("runner") if role else None)
    runner.setdefault("name", default_name)
    return runner


def role_pod_fields(component: Obj, role: str | None) -> Obj:
    fields = pod_part(component)
    if role:
        fields = merge_objects(fields, pod_part(component.get(role) or {}))
    return fields


def contract_env(runner: Obj, contract: list[Obj]) -> list[Obj]:
    """Contract variables first (so the runner's own env may refer to them), then the runner's env.

    A runner that sets MODEL_PATH itself keeps its value (OME adds MODEL_PATH only when absent);
    the LWS_* and PARALLELISM_SIZE variables always come from the topology.
    """
    own = list(runner.get("env") or [])
    own_names = {e.get("name") for e in own}
    first = [e for e in contract if not (e["name"] == "MODEL_PATH" and "MODEL_PATH" in own_names)]
    first_names = {e["name"] for e in first}
    return [*first, *(e for e in own if e.get("name") not in first_names)]


def build_pod_spec(ctx: IsvcContext, fields: Obj, runner: Obj, env: list[Obj]) -> Obj:
    """A PodSpec: pod fields + the runner merged into its container + model volume + node selector."""
    runner = dict(runner)
    runner["env"] = env
    mounts = list(runner.get("volumeMounts") or [])
    if not any(m.get("name") == MODEL_VOLUME for m in mounts):
        mounts.append({"name": MODEL_VOLUME, "mountPath": ctx.model.path, "readOnly": True})
    runner["volumeMounts"] = mounts
    for port in runner.get("ports") or []:
        port.setdefault("protocol", "TCP")

    spec = dict(fields)
    containers = list(spec.get("containers") or [])
    index = next((i for i, c in enumerate(containers) if c.get("name") == runner["name"]), None)
    if index is None:
        containers.insert(0, runner)
    else:
        containers[index] = merge_container(containers[index], runner)
    spec["containers"] = containers

    volumes = list(spec.get("volumes") or [])
    if not any(v.get("name") == MODEL_VOLUME for v in volumes):
        volumes.append({"name": MODEL_VOLUME, "hostPath": {"path": ctx.model.path, "type": "Directory"}})
    spec["volumes"] = volumes
    spec["nodeSelector"] = {**(spec.get("nodeSelector") or {}), ctx.model.ready_label: "Ready"}
    return spec


def pod_metadata(component: Obj, labels: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": {**(component.get("labels") or {}), **labels}}
    if component.get("annotations"):
        meta["annotations"] = dict(component["annotations"])
    return meta


def leader_address(ctx: IsvcContext, component: str, group: int) -> str:
    """The leader pod's stable DNS name: <pod>.<headless service>.<namespace>."""
    service = names.group_name(ctx.name, component, group)
    return f"{service}-0.{service}.{ctx.namespace}"
