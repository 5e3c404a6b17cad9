"""What to do next, keyed by a condition's reason. Pure.

Keyed by the reason constants of api/reasons.py (one spelling of each reason). A reason this table
does not know (an older or newer operator wrote it) falls back to the condition's own message,
which already says what to do in most cases.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ome_operator.api import reasons as R

Obj = dict[str, Any]

ADVICE: dict[str, str] = {
    # InferenceService: spec
    R.INVALID_SPEC: "fix the field the message names; `ome-operator render -f FILE` checks a file offline",
    R.NO_COMPONENT: "declare spec.engine (OME's `predictor` is read as engine, model and runtime)",
    R.CONTAINER_WITHOUT_IMAGE: "set runner.image in the runtime or in the InferenceService",
    R.INVALID_GPU_REQUEST: "set the nvidia.com/gpu request and limit to the same whole number",
    R.RUNTIME_NOT_DISAGGREGATED: "the runtime has no decoderConfig: remove spec.decoder, or use a prefill-decode runtime",
    R.ROUTER_REQUIRED: "engine and decoder need a router to pair prefill with decode: add spec.router",
    # InferenceService: model
    R.MODEL_NOT_FOUND: (
        "create the model, or fix spec.model.name: `kubectl get clusterbasemodels` and "
        "`kubectl get basemodels -n {namespace}` list the models that exist"
    ),
    R.MODEL_NOT_READY: ("the weights are not on the nodes yet; `{model_explain}` shows the download on each node"),
    R.MODEL_DISABLED: "set spec.disabled: false on the model, or point spec.model.name at another model",
    R.MODEL_BEING_DELETED: "the model is being deleted: recreate it, or point spec.model.name at another model",
    R.WAITING_FOR_MODEL: "the runtime is chosen once the model exists: see ModelReady",
    # InferenceService: runtime
    R.RUNTIME_NOT_FOUND: (
        "spec.runtime.name names no ServingRuntime in {namespace} and no ClusterServingRuntime: "
        "fix the name (`kubectl get clusterservingruntimes`), or remove spec.runtime to let the operator choose"
    ),
    R.RUNTIME_INCOMPATIBLE: (
        "the named runtime cannot serve this model (the message says what differs): name another runtime, "
        "or remove spec.runtime to let the operator choose"
    ),
    R.NO_RUNTIME_FOUND: (
        "no auto-selectable runtime fits the model; the excluded runtimes above say why each was refused: "
        "add a runtime that fits, or name one in spec.runtime"
    ),
    R.WAITING_FOR_MODEL_METADATA: (
        "auto-selection waits until the download has read the model's architecture and quantization; "
        "if it stays, `{model_explain}`, or set them in the model's spec"
    ),
    R.RUNTIME_DISABLED: "the runtime has spec.disabled: true: enable it, or name another runtime",
    # InferenceService: children and components
    R.APPLY_FAILED: (
        "the API server refused a rendered object and the message names the field: fix it in the "
        "InferenceService or its runtime (`ome-operator render -f FILE` shows the objects offline)"
    ),
    R.NOT_CREATED: (
        "the operator creates this component once the conditions before it are True; if they are, check "
        "that the operator runs (`kubectl -n ome logs deploy/ome-operator`)"
    ),
    R.UNSCHEDULABLE: (
        "the pods wait for capacity (the scheduler's reason is above): free GPUs or nodes, lower minReplicas, "
        "or get the model Ready on more nodes (the pods select the model-ready node label)"
    ),
    R.PODS_NOT_READY: (
        "the pods are scheduled but not ready yet (loading weights, starting): wait; if it stays, read the "
        "pod's state, Events and log above"
    ),
    R.GROUP_RESTARTING: (
        "a pod of a group failed and the whole group is being recreated; the GroupRestart Event has its exit "
        "code and log tail: if it repeats, fix the cause (OOMKilled: memory; exit code 1: the engine's "
        "arguments or the model)"
    ),
    # models
    R.DOWNLOADING: "the weights are being copied and verified: wait (the progress per node is above)",
    R.DOWNLOAD_FAILED: (
        "a download Job failed after its retries; its pod's state and log above say why (hub unreachable, "
        "401/403: the token Secret, disk full); `kubectl delete job -n {jobs_namespace} JOB` retries that node"
    ),
    R.NO_TARGET_NODES: (
        "no node matches spec.storage.nodeSelector / nodeAffinity (default: nodes with nvidia.com/gpu "
        "capacity): fix the selector or label the nodes"
    ),
    R.INVALID_STORAGE: "fix spec.storage as the message says; nothing is downloaded until then",
    R.DOWNLOAD_NAMESPACE_MISSING: (
        "the namespace where ClusterBaseModel downloads run does not exist: create it, or start the operator "
        "with --operator-namespace"
    ),
    # advisory conditions (Ready does not wait on them)
    R.ENGINE_ARGS_REFUSED: "the image's SGLang version refuses a flag: use the replacement the message names",
}

NO_STATUS = (
    "the operator has not written a status yet: check that it runs "
    "(`kubectl -n ome get deploy/ome-operator`, or `ome-operator run` locally) and read its log"
)
STALE = (
    "the status is from generation {observed}, the spec is at generation {generation}: "
    "the operator has not processed the latest change yet"
)


class _Fields(dict[str, str]):
    """Template fields; a field the caller did not supply stays visible instead of raising."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def compute_advice(condition: Obj, fields: Mapping[str, str]) -> str:
    """The next step for a failing condition: the table's advice, else the condition's own message."""
    reason = str(condition.get("reason") or "")
    template = ADVICE.get(reason)
    if template is not None:
        return template.format_map(_Fields(fields))
    message = str(condition.get("message") or "").strip()
    if message:
        return f"no advice for reason {reason or '(none)'}; the condition says: {message}"
    return f"no advice for reason {reason or '(none)'}; read the operator's log and the Events above"
