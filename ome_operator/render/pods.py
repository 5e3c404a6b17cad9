"""Pod templates for engine and decoder pods: merged runtime + InferenceService, plus OME's contract.

Every engine/decoder pod gets the environment OME runtimes' command lines rely on (LWS_*,
PARALLELISM_SIZE, MODEL_PATH), the model weights mounted read-only at MODEL_PATH (the node's model
root with the model's directory as subPath, or the pvc:// claim with its sub path), and the
model-ready node selector that keeps it off nodes without a verified copy.
"""

from __future__ import annotations

import math
from typing import Any

from ome_operator.api.pod import NON_POD_KEYS

from . import names
from .context import GPU_RESOURCE, IsvcContext
from .engine_args import find_command
from .merge import Obj, merge_container, merge_objects

RUNNER_NAME = "ome-container"
MODEL_VOLUME = "ome-model-weights"

# The annotation SGLang's router reads, in PD service discovery, for a prefill pod's bootstrap port.
BOOTSTRAP_PORT_ANNOTATION = "sglang.ai/bootstrap-port"
SGLANG_BOOTSTRAP_PORT = 8998  # SGLang's --disaggregation-bootstrap-port default
SGLANG_PORT = 30000  # SGLang's --port default
# How long a leader may take to load the model before its startup probe gives up: an InferenceService
# annotation, in seconds; 30 minutes by default (a 1 TB checkpoint on a cold node takes that long).
STARTUP_TIMEOUT_ANNOTATION = "ome.io/startup-timeout-seconds"
DEFAULT_STARTUP_TIMEOUT = 1800
PROBE_PERIOD = 10


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
    mount = ctx.model.mount
    if not any(m.get("name") == MODEL_VOLUME for m in mounts):
        sub = {"subPath": mount.sub_path} if mount is not None and mount.sub_path else {}
        # Read-only: a serving pod never writes the weights, so a compromised engine cannot alter them.
        mounts.append({"name": MODEL_VOLUME, "mountPath": ctx.model.path, "readOnly": True, **sub})
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
        source = mount.source if mount is not None else {"hostPath": {"path": ctx.model.path, "type": "Directory"}}
        volumes.append({"name": MODEL_VOLUME, **source})
    spec["volumes"] = volumes
    spec["nodeSelector"] = {**(spec.get("nodeSelector") or {}), ctx.model.ready_label: "Ready"}
    return spec


def pod_metadata(component: Obj, labels: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": {**(component.get("labels") or {}), **labels}}
    merged = {**(annotations or {}), **(component.get("annotations") or {})}
    if merged:
        meta["annotations"] = merged
    return meta


def _engine_args(runner: Obj) -> list[str]:
    argv = [str(a) for a in [*(runner.get("command") or []), *(runner.get("args") or [])]]
    command = find_command(argv)
    return list(command.args) if command is not None and command.parser == "sglang" else []


def _flag_value(args: list[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def prefill_annotations(runner: Obj) -> dict[str, str]:
    """`sglang.ai/bootstrap-port` for a prefill server's pods, {} for any other."""
    args = _engine_args(runner)
    if _flag_value(args, "--disaggregation-mode") != "prefill":
        return {}
    port = _flag_value(args, "--disaggregation-bootstrap-port") or str(SGLANG_BOOTSTRAP_PORT)
    return {BOOTSTRAP_PORT_ANNOTATION: port}


def serving_port(runner: Obj) -> int:
    """The port a leader serves HTTP on: its first container port, else SGLang's --port."""
    for port in runner.get("ports") or []:
        return int(port["containerPort"])
    value = _flag_value(_engine_args(runner), "--port")
    return int(value) if value and value.isdigit() else SGLANG_PORT


def with_serving_probes(ctx: IsvcContext, runner: Obj) -> Obj:
    """A leader without a readiness probe gets one, GET /health on its serving port, behind a
    startup probe that allows the model's load time: Ready then means it answers, not only that
    its container started. A runtime's own probes are kept."""
    if runner.get("readinessProbe"):
        return runner
    annotations = ctx.isvc.metadata.annotations or {}
    raw = annotations.get(STARTUP_TIMEOUT_ANNOTATION, "")
    timeout = int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_STARTUP_TIMEOUT
    get = {"path": "/health", "port": serving_port(runner), "scheme": "HTTP"}
    probed = dict(runner)
    probed["readinessProbe"] = {
        "httpGet": get,
        "periodSeconds": PROBE_PERIOD,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    }
    if not runner.get("startupProbe"):
        probed["startupProbe"] = {
            "httpGet": dict(get),
            "periodSeconds": PROBE_PERIOD,
            "timeoutSeconds": 5,
            "failureThreshold": math.ceil(timeout / PROBE_PERIOD),
        }
    return probed


def leader_address(ctx: IsvcContext, component: str, group: int) -> str:
    """The leader pod's stable DNS name: <pod>.<headless service>.<namespace>."""
    service = names.group_name(ctx.name, component, group)
    return f"{service}-0.{service}.{ctx.namespace}"
