"""InferenceService: serve a model with a runtime as engine (prefill), decoder (decode) and router."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import ConfigDict

from .base import (
    DNS_1035_LABEL,
    DNS_1123_SUBDOMAIN,
    MAX_INT32,
    MAX_INT64,
    MAX_LABEL,
    MAX_SUBDOMAIN,
    Condition,
    CrdInfo,
    OmeModel,
    PrinterColumn,
    Resource,
    Rule,
    desc,
)
from .limits import MAX_WORKER_SIZE
from .model import ModelFormat
from .pod import PodFields, Runner
from .runtime import AcceleratorSelector, ComponentExtension, ComponentSpec, KedaConfig, RouterSpec

COMPONENTS = ("engine", "decoder", "router")


class ModelRef(OmeModel):
    """The model to serve: a BaseModel in this namespace, else a ClusterBaseModel of that name."""

    name: str = desc(
        "Name of the BaseModel or ClusterBaseModel (a DNS subdomain).",
        pattern=DNS_1123_SUBDOMAIN,
        max_length=MAX_SUBDOMAIN,
    )
    kind: Literal["ClusterBaseModel", "BaseModel"] | None = desc(
        "Kind to look up; default: a BaseModel in this namespace, else a ClusterBaseModel.", default=None
    )
    api_group: str | None = desc("ome.io", default=None)
    fine_tuned_weights: list[str] | None = desc(
        "Fine-tuned weights to serve on the base model; OME supports at most one (not acted on yet).",
        default=None,
        max_length=1,
    )


class RuntimeRef(OmeModel):
    """The runtime to use; omit to select one automatically."""

    name: str = desc(
        "Name of the ServingRuntime or ClusterServingRuntime (a DNS subdomain).",
        pattern=DNS_1123_SUBDOMAIN,
        max_length=MAX_SUBDOMAIN,
    )
    kind: Literal["ClusterServingRuntime", "ServingRuntime"] | None = desc(
        "Kind to look up; default: a ServingRuntime in this namespace, else a ClusterServingRuntime.",
        default=None,
    )
    api_group: str | None = desc("ome.io", default=None)


class PredictorModel(Runner):
    """The deprecated predictor's model: the model and runtime to use, plus container overrides."""

    runtime: str | None = desc("Name of the runtime (becomes spec.runtime.name).", default=None)
    base_model: str | None = desc(
        "Name of the base model (becomes spec.model.name).",
        default=None,
        pattern=DNS_1123_SUBDOMAIN,
        max_length=MAX_SUBDOMAIN,
    )
    fine_tuned_weights: list[str] | None = desc("Fine-tuned weights (at most one).", default=None, max_length=1)
    storage_uri: str | None = desc("Location of the model (KServe compatibility).", default=None)
    runtime_version: str | None = desc("Version of the runtime image.", default=None)
    protocol_version: str | None = desc("Protocol of the predictor, e.g. openAI.", default=None)
    model_format: ModelFormat | None = desc("Format of the model (KServe compatibility).", default=None)


class PredictorWorker(PodFields):
    """The deprecated predictor's multi-node workers."""

    size: int | None = desc(
        f"Worker pods per group besides the leader, at most {MAX_WORKER_SIZE}.",
        default=None,
        ge=0,
        le=MAX_WORKER_SIZE,
    )
    tensor_parallel_size: int | None = desc(
        "Tensor-parallel GPUs (KServe compatibility).", default=None, ge=1, le=MAX_INT32
    )
    pipeline_parallel_size: int | None = desc(
        "Pipeline-parallel nodes (KServe compatibility).", default=None, ge=1, le=MAX_INT32
    )


class PredictorSpec(PodFields, ComponentExtension):
    """OME's deprecated KServe-style predictor, which OME migrates into engine, model and runtime."""

    model_config = ConfigDict(extra="allow")

    model: PredictorModel | None = desc("The model, runtime and container overrides.", default=None)
    worker_spec: PredictorWorker | None = desc("Multi-node workers.", default=None)


def _declares(spec: InferenceServiceSpec, *names: str) -> bool:
    return any(getattr(spec, name) is not None for name in names)


class InferenceServiceSpec(OmeModel):
    """What to serve and how its components are shaped."""

    rules = (
        Rule(
            cel="has(self.engine) || has(self.decoder) || has(self.router) || has(self.predictor)",
            message="an InferenceService needs an engine (or the deprecated predictor, which becomes the engine)",
            field_path=".engine",
            holds=lambda s: _declares(s, "engine", "decoder", "router", "predictor"),
        ),
        Rule(
            cel="!has(self.decoder) || has(self.engine)",
            message="a decoder requires an engine (prefill) component",
            field_path=".decoder",
            holds=lambda s: s.decoder is None or s.engine is not None,
        ),
        Rule(
            cel="!has(self.router) || has(self.engine) || has(self.predictor)",
            message="a router requires an engine to route to (or the deprecated predictor, which becomes the engine)",
            field_path=".router",
            holds=lambda s: s.router is None or _declares(s, "engine", "predictor"),
        ),
        Rule(
            cel="has(self.model) || has(self.predictor)",
            message="the model to serve is required",
            field_path=".model",
            holds=lambda s: _declares(s, "model", "predictor"),
        ),
    )

    model: ModelRef | None = desc("The model to serve.", default=None)
    runtime: RuntimeRef | None = desc("The runtime; omitted means auto-select.", default=None)
    engine: ComponentSpec | None = desc("The engine (prefill with a decoder) component.", default=None)
    decoder: ComponentSpec | None = desc("The decoder (decode) component; requires an engine.", default=None)
    router: RouterSpec | None = desc("The router in front of the engine and decoder; requires an engine.", default=None)
    keda_config: KedaConfig | None = desc("KEDA autoscaling (not acted on yet).", default=None)
    accelerator_selector: AcceleratorSelector | None = desc("Accelerator selection (not acted on yet).", default=None)
    predictor: PredictorSpec | None = desc(
        "Deprecated KServe-style predictor; OME migrates it into engine, model and runtime.", default=None
    )


class RuntimeExclusion(OmeModel):
    """Why a runtime was not chosen."""

    name: str = desc("Runtime name.")
    kind: str = desc("ServingRuntime or ClusterServingRuntime.")
    reason: str = desc("Why it was excluded.")


class ComponentStatus(OmeModel):
    """Observed state of one component."""

    runtime: str | None = desc("Runtime the component was rendered from.", default=None)
    groups: int | None = desc("Groups (multi-node) or replicas (single-node) wanted.", default=None, ge=0, le=MAX_INT32)
    groups_ready: int | None = desc("Groups whose every pod is ready.", default=None, ge=0, le=MAX_INT32)
    pods: int | None = desc("Pods wanted.", default=None, ge=0, le=MAX_INT32)
    pods_ready: int | None = desc("Pods ready.", default=None, ge=0, le=MAX_INT32)
    gpus: int | None = desc("GPUs requested by the component.", default=None, ge=0, le=MAX_INT32)
    url: str | None = desc("In-cluster URL of the component.", default=None)


class Address(OmeModel):
    """Where the service is reached."""

    url: str | None = desc("In-cluster URL.", default=None)


class ModelRevisionStates(OmeModel):
    """OME's model states of the active and the target revision."""

    active_model_state: Literal["", "Pending", "Standby", "Loading", "Loaded", "FailedToLoad"] | None = desc(
        "State of the revision serving now.", default=None
    )
    target_model_state: Literal["", "Pending", "Standby", "Loading", "Loaded", "FailedToLoad"] | None = desc(
        "State of the revision being rolled out.", default=None
    )


class FailureInfo(OmeModel):
    """OME's last model-load failure."""

    location: str | None = desc("Where it failed, e.g. a pod name.", default=None)
    # OME's enum; a plain string here because the operator never writes it (and its values are
    # OME's vocabulary, not this operator's condition reasons).
    reason: str | None = desc(
        "Why it failed: BaseModelNotReady, BaseModelNotFound, ModelLoadFailed, RuntimeUnhealthy, "
        "RuntimeDisabled, NoSupportingRuntime, RuntimeNotRecognized or InvalidPredictorSpec.",
        default=None,
    )
    message: str | None = desc("What happened.", default=None)
    model_revision_name: str | None = desc("Revision that failed.", default=None)
    time: str | None = desc("When it failed (RFC 3339).", default=None)
    exit_code: int | None = desc("Exit code of the failed container.", default=None, ge=-(2**31), le=MAX_INT32)


class ModelCopies(OmeModel):
    """OME's count of model copies."""

    failed_copies: int | None = desc("Copies that failed to load.", default=None, ge=0, le=MAX_INT32)
    total_copies: int | None = desc("Copies wanted.", default=None, ge=0, le=MAX_INT32)


class ModelStatusInfo(OmeModel):
    """OME's modelStatus (kept for compatibility)."""

    transition_status: str | None = desc(
        "OME's transition status: UpToDate, InProgress, BlockedByFailedLoad or InvalidSpec.", default=None
    )
    model_revision_states: ModelRevisionStates | None = desc("Active and target model states.", default=None)
    last_failure_info: FailureInfo | None = desc("Last failure: reason, message, time.", default=None)
    model_copies: ModelCopies | None = desc("Failed and total copies.", default=None)


class InferenceServiceStatus(OmeModel):
    """Observed state: conditions say what is happening and why."""

    conditions: list[Condition] | None = desc(
        "Ready aggregates ModelReady, RuntimeResolved, EngineReady, DecoderReady, RouterReady.", default=None
    )
    observed_generation: int | None = desc(
        "Spec generation this status was computed from.", default=None, ge=0, le=MAX_INT64
    )
    url: str | None = desc("In-cluster URL of the service (port 80).", default=None)
    address: Address | None = desc("Address of the service.", default=None)
    runtime: str | None = desc("The runtime in use (named or selected).", default=None)
    runtime_exclusions: list[RuntimeExclusion] | None = desc(
        "Runtimes considered and not chosen, with reasons.", default=None
    )
    gpus: int | None = desc("GPUs requested by all components.", default=None, ge=0, le=MAX_INT32)
    components: dict[str, ComponentStatus] | None = desc("Status per component.", default=None)
    model_status: ModelStatusInfo | None = desc("OME model status (compatibility).", default=None)
    annotations: dict[str, str] | None = desc("OME status annotations (compatibility).", default=None)


class InferenceService(Resource):
    """A served model: prefill/decode groups and a router, reachable on port 80 of a Service of its name."""

    # Its name becomes Service names and label values: the stricter DNS-1035 label rule applies.
    rules = (
        Rule(
            cel=f"self.metadata.name.matches('{DNS_1035_LABEL}') && size(self.metadata.name) <= {MAX_LABEL}",
            message="must be a DNS-1035 label: lowercase letters, digits, '-', starting with a letter",
            field_path=".metadata.name",
            holds=lambda o: re.search(DNS_1035_LABEL, o.name) is not None and len(o.name) <= MAX_LABEL,
        ),
    )

    crd: ClassVar[CrdInfo] = CrdInfo(
        kind="InferenceService",
        plural="inferenceservices",
        scope="Namespaced",
        short_names=("isvc",),
        printer_columns=(
            PrinterColumn("Ready", ".status.conditions[?(@.type=='Ready')].status"),
            PrinterColumn("Reason", ".status.conditions[?(@.type=='Ready')].reason"),
            PrinterColumn("URL", ".status.url"),
            PrinterColumn("Model", ".spec.model.name"),
            PrinterColumn("Runtime", ".status.runtime"),
            PrinterColumn("GPUs", ".status.gpus", type="integer"),
            PrinterColumn("Age", ".metadata.creationTimestamp", type="date"),
        ),
        description="Serves a model with a runtime: engine (prefill), decoder (decode) and router.",
    )
    kind: str = desc("InferenceService", default="InferenceService")
    spec: InferenceServiceSpec = desc("What to serve and how.")
    status: InferenceServiceStatus | None = desc("Observed state.", default=None)
