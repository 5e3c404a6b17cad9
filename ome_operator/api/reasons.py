"""The condition tree: every condition type and reason the operator writes, what it means, what to do.

Reasons are part of the API: users and tools match on them, so they are constants here and nowhere
else. The resolver, the status computation and the CLI refer to these names; the README's
"Conditions" section documents the same table (tests/unit/test_reasons.py keeps them in step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["True", "False", "Unknown"]

# --- condition types ---------------------------------------------------------------------------
READY = "Ready"
SPEC_VALID = "SpecValid"
MODEL_READY = "ModelReady"
RUNTIME_RESOLVED = "RuntimeResolved"
CHILDREN_APPLIED = "ChildrenApplied"
ENGINE_READY = "EngineReady"
DECODER_READY = "DecoderReady"
ROUTER_READY = "RouterReady"
ENGINE_ARGS_VALID = "EngineArgsValid"
DOWNLOADED = "Downloaded"
IN_USE = "InUse"

COMPONENT_CONDITIONS = {"engine": ENGINE_READY, "decoder": DECODER_READY, "router": ROUTER_READY}
# Conditions that report and never gate Ready (warnings).
ADVISORY_CONDITIONS = frozenset({ENGINE_ARGS_VALID, IN_USE})

# --- reasons -----------------------------------------------------------------------------------
# Ready (InferenceService): True with READY, otherwise the reason of the first part that is not True.
# SpecValid
SPEC_ACCEPTED = "SpecAccepted"
PREDICTOR_MIGRATED = "PredictorMigrated"
INVALID_SPEC = "InvalidSpec"
NO_COMPONENT = "NoComponent"
CONTAINER_WITHOUT_IMAGE = "ContainerWithoutImage"
INVALID_GPU_REQUEST = "InvalidGpuRequest"
RUNTIME_NOT_DISAGGREGATED = "RuntimeNotDisaggregated"
ROUTER_REQUIRED = "RouterRequired"
# ModelReady
MODEL_READY_REASON = "ModelReady"
MODEL_NOT_FOUND = "ModelNotFound"
MODEL_DISABLED = "ModelDisabled"
MODEL_BEING_DELETED = "ModelBeingDeleted"
MODEL_NOT_READY = "ModelNotReady"
# RuntimeResolved
RUNTIME_NAMED = "RuntimeNamed"
RUNTIME_AUTO_SELECTED = "RuntimeAutoSelected"
PROVISIONALLY_ACCEPTED = "ProvisionallyAccepted"
RUNTIME_NOT_FOUND = "RuntimeNotFound"
RUNTIME_DISABLED = "RuntimeDisabled"
RUNTIME_INCOMPATIBLE = "RuntimeIncompatible"
NO_RUNTIME_FOUND = "NoRuntimeFound"
WAITING_FOR_MODEL = "WaitingForModel"
WAITING_FOR_MODEL_METADATA = "WaitingForModelMetadata"
# ChildrenApplied
APPLIED = "Applied"
APPLY_FAILED = "ApplyFailed"
APPLYING = "Applying"
RECONCILE_FAILED = "ReconcileFailed"  # also on Downloaded (models)
# EngineReady, DecoderReady, RouterReady
COMPONENT_READY = "Ready"
NOT_CREATED = "NotCreated"
PODS_NOT_READY = "PodsNotReady"
UNSCHEDULABLE = "Unschedulable"
GROUP_RESTARTING = "GroupRestarting"
# EngineArgsValid
ENGINE_ARGS_ACCEPTED = "EngineArgsAccepted"
ENGINE_ARGS_REFUSED = "EngineArgsRefused"
# Downloaded (and the model's Ready, which mirrors it)
ALL_NODES_READY = "AllNodesReady"
DOWNLOADING = "Downloading"
DOWNLOAD_FAILED = "DownloadFailed"
NO_TARGET_NODES = "NoTargetNodes"
INVALID_STORAGE = "InvalidStorage"
DOWNLOAD_NAMESPACE_MISSING = "DownloadNamespaceMissing"
# InUse
REFERENCED = "ReferencedByInferenceService"


@dataclass(frozen=True)
class Cond:
    """A condition as computed in one pass, before transition times are carried over."""

    type: str
    status: bool | None  # None: Unknown
    reason: str
    message: str = ""
    path: str = ""  # the field the condition is about, when it is about one (render prints it)

    @property
    def status_text(self) -> Status:
        return "Unknown" if self.status is None else ("True" if self.status else "False")


@dataclass(frozen=True)
class ReasonDoc:
    condition: str
    reason: str
    status: Status
    meaning: str
    action: str


# One row per (condition, reason): the README's table is this table.
CATALOG: tuple[ReasonDoc, ...] = (
    ReasonDoc(SPEC_VALID, SPEC_ACCEPTED, "True", "the spec passed every check that needs no cluster state", "-"),
    ReasonDoc(
        SPEC_VALID,
        PREDICTOR_MIGRATED,
        "True",
        "a deprecated `predictor` was read as `engine`, `model` and `runtime`, as OME does",
        "move the predictor's fields to spec.engine, spec.model and spec.runtime",
    ),
    ReasonDoc(
        SPEC_VALID, INVALID_SPEC, "False", "a field has a value the API cannot use", "fix the field the message names"
    ),
    ReasonDoc(SPEC_VALID, NO_COMPONENT, "False", "no engine (and no predictor) is declared", "add spec.engine"),
    ReasonDoc(
        SPEC_VALID,
        CONTAINER_WITHOUT_IMAGE,
        "False",
        "a merged container has no image: neither the runtime nor the InferenceService sets one",
        "set runner.image in the runtime or the InferenceService",
    ),
    ReasonDoc(
        SPEC_VALID,
        INVALID_GPU_REQUEST,
        "False",
        "a GPU request is not a whole number, or differs from the GPU limit (extended resources need both equal)",
        "set nvidia.com/gpu requests and limits to the same whole number",
    ),
    ReasonDoc(
        SPEC_VALID,
        RUNTIME_NOT_DISAGGREGATED,
        "False",
        "a decoder is declared but the runtime has no decoderConfig: it is not a prefill-decode runtime",
        "remove spec.decoder, or use a PD runtime",
    ),
    ReasonDoc(
        SPEC_VALID,
        ROUTER_REQUIRED,
        "False",
        "engine and decoder are declared without a router: nothing pairs prefill with decode",
        "add spec.router",
    ),
    ReasonDoc(MODEL_READY, MODEL_READY_REASON, "True", "the model holds verified copies on its nodes", "-"),
    ReasonDoc(
        MODEL_READY,
        MODEL_NOT_FOUND,
        "False",
        "no BaseModel in the namespace and no ClusterBaseModel of that name",
        "create the model or fix spec.model.name",
    ),
    ReasonDoc(MODEL_READY, MODEL_DISABLED, "False", "the model has spec.disabled: true", "set spec.disabled: false"),
    ReasonDoc(MODEL_READY, MODEL_BEING_DELETED, "False", "the model is being deleted", "recreate the model"),
    ReasonDoc(
        MODEL_READY,
        MODEL_NOT_READY,
        "False",
        "the model is still downloading, or its download failed",
        "`ome-operator explain` the model",
    ),
    ReasonDoc(RUNTIME_RESOLVED, RUNTIME_NAMED, "True", "the named runtime serves the model", "-"),
    ReasonDoc(RUNTIME_RESOLVED, RUNTIME_AUTO_SELECTED, "True", "a runtime was selected automatically", "-"),
    ReasonDoc(
        RUNTIME_RESOLVED,
        PROVISIONALLY_ACCEPTED,
        "True",
        "the named runtime is used before the model's metadata is known; it is checked again after the download",
        "-",
    ),
    ReasonDoc(
        RUNTIME_RESOLVED,
        RUNTIME_NOT_FOUND,
        "False",
        "no ServingRuntime in the namespace and no ClusterServingRuntime of that name",
        "create the runtime or fix spec.runtime.name",
    ),
    ReasonDoc(
        RUNTIME_RESOLVED, RUNTIME_DISABLED, "False", "the runtime has spec.disabled: true", "enable it or pick another"
    ),
    ReasonDoc(
        RUNTIME_RESOLVED,
        RUNTIME_INCOMPATIBLE,
        "False",
        "the named runtime cannot serve the model (format, architecture, quantization or size)",
        "pick a runtime whose supportedModelFormats match the model",
    ),
    ReasonDoc(
        RUNTIME_RESOLVED,
        NO_RUNTIME_FOUND,
        "False",
        "no runtime supports the model; status.runtimeExclusions says why each was not chosen",
        "create a runtime for the model or name one in spec.runtime",
    ),
    ReasonDoc(RUNTIME_RESOLVED, WAITING_FOR_MODEL, "Unknown", "the model must exist before a runtime is chosen", "-"),
    ReasonDoc(
        RUNTIME_RESOLVED,
        WAITING_FOR_MODEL_METADATA,
        "Unknown",
        "auto-selection waits for the download to read the model's format, architecture and size",
        "wait, or name a runtime in spec.runtime",
    ),
    ReasonDoc(CHILDREN_APPLIED, APPLIED, "True", "every child object was accepted by the API server", "-"),
    ReasonDoc(
        CHILDREN_APPLIED,
        APPLY_FAILED,
        "False",
        "the API server refused a child object; the message is its answer and names the field",
        "fix the field in the InferenceService or the runtime",
    ),
    ReasonDoc(
        CHILDREN_APPLIED,
        APPLYING,
        "False",
        "many children are being applied a bounded slice per pass; the message counts what is left",
        "wait; other InferenceServices keep being served meanwhile",
    ),
    ReasonDoc(
        CHILDREN_APPLIED,
        RECONCILE_FAILED,
        "False",
        "the operator could not process the object (the message names the error); retried when the spec "
        "changes, otherwise after a backoff of 30 s doubling to 10 min",
        "fix the field the message names, or report the error",
    ),
    ReasonDoc(
        ENGINE_READY, COMPONENT_READY, "True", "every group's pods are ready (same for DecoderReady, RouterReady)", "-"
    ),
    ReasonDoc(ENGINE_READY, NOT_CREATED, "False", "the component's workloads do not exist yet", "-"),
    ReasonDoc(ENGINE_READY, PODS_NOT_READY, "False", "pods exist and are not ready yet", "`ome-operator explain`"),
    ReasonDoc(
        ENGINE_READY,
        UNSCHEDULABLE,
        "False",
        "pods cannot be scheduled; the message quotes the scheduler",
        "add nodes with free GPUs and the model's copy, or lower the replicas",
    ),
    ReasonDoc(
        ENGINE_READY,
        GROUP_RESTARTING,
        "False",
        "a pod of a multi-node group failed; the whole group is recreated (an Event names the pod)",
        "`ome-operator explain` shows the failed pod's last state",
    ),
    ReasonDoc(
        ENGINE_ARGS_VALID, ENGINE_ARGS_ACCEPTED, "True", "every SGLang flag is accepted by the image's version", "-"
    ),
    ReasonDoc(
        ENGINE_ARGS_VALID,
        ENGINE_ARGS_REFUSED,
        "False",
        "a flag is refused by the SGLang version the image names (advisory: Ready does not wait on it)",
        "use the replacement the message names",
    ),
    ReasonDoc(DOWNLOADED, ALL_NODES_READY, "True", "every target node holds a verified copy", "-"),
    ReasonDoc(DOWNLOADED, DOWNLOADING, "False", "download Jobs are running; progress per node in status", "wait"),
    ReasonDoc(
        DOWNLOADED,
        DOWNLOAD_FAILED,
        "False",
        "a node's download Job failed; the message carries its reason",
        "`ome-operator explain clusterbasemodel NAME`",
    ),
    ReasonDoc(
        DOWNLOADED,
        NO_TARGET_NODES,
        "False",
        "no node matches storage.nodeSelector / nodeAffinity (or has GPUs)",
        "fix the selector or label nodes",
    ),
    ReasonDoc(
        DOWNLOADED,
        INVALID_STORAGE,
        "False",
        "the storage URI or path cannot be used, or the API server refused a download object",
        "fix the field the message names",
    ),
    ReasonDoc(
        DOWNLOADED,
        DOWNLOAD_NAMESPACE_MISSING,
        "False",
        "the namespace where ClusterBaseModel downloads run does not exist",
        "create it, or start the operator with --operator-namespace",
    ),
    ReasonDoc(
        DOWNLOADED,
        RECONCILE_FAILED,
        "False",
        "the operator could not process the model (the message names the error); retried when the spec "
        "changes, otherwise after a backoff of 30 s doubling to 10 min",
        "fix the field the message names, or report the error",
    ),
    ReasonDoc(IN_USE, REFERENCED, "True", "InferenceServices that serve this model", "-"),
)
