"""InferenceService: serve a model with a runtime as engine (prefill), decoder (decode) and router."""

from __future__ import annotations

from typing import ClassVar, Literal

from .base import Condition, CrdInfo, OmeModel, PrinterColumn, Resource, Unstructured, desc
from .runtime import ComponentSpec, RouterSpec

COMPONENTS = ("engine", "decoder", "router")


class ModelRef(OmeModel):
    """The model to serve: a BaseModel in this namespace, else a ClusterBaseModel of that name."""

    name: str = desc("Name of the BaseModel or ClusterBaseModel.")
    kind: Literal["ClusterBaseModel", "BaseModel"] | None = desc(
        "Kind to look up; default: a BaseModel in this namespace, else a ClusterBaseModel.", default=None
    )
    api_group: str | None = desc("ome.io", default=None)
    fine_tuned_weights: list[str] | None = desc("Fine-tuned weights (not acted on yet).", default=None)


class RuntimeRef(OmeModel):
    """The runtime to use; omit to select one automatically."""

    name: str = desc("Name of the ServingRuntime or ClusterServingRuntime.")
    kind: Literal["ClusterServingRuntime", "ServingRuntime"] | None = desc(
        "Kind to look up; default: a ServingRuntime in this namespace, else a ClusterServingRuntime.",
        default=None,
    )
    api_group: str | None = desc("ome.io", default=None)


class InferenceServiceSpec(OmeModel):
    """What to serve and how its components are shaped."""

    model: ModelRef | None = desc("The model to serve.", default=None)
    runtime: RuntimeRef | None = desc("The runtime; omitted means auto-select.", default=None)
    engine: ComponentSpec | None = desc("The engine (prefill with a decoder) component.", default=None)
    decoder: ComponentSpec | None = desc("The decoder (decode) component; requires an engine.", default=None)
    router: RouterSpec | None = desc("The router in front of the engine and decoder.", default=None)
    keda_config: Unstructured | None = desc("KEDA autoscaling (not acted on yet).", default=None)
    accelerator_selector: Unstructured | None = desc("Accelerator selection (not acted on yet).", default=None)
    predictor: Unstructured | None = desc("Deprecated KServe-style predictor (not acted on).", default=None)


class RuntimeExclusion(OmeModel):
    """Why a runtime was not chosen."""

    name: str = desc("Runtime name.")
    kind: str = desc("ServingRuntime or ClusterServingRuntime.")
    reason: str = desc("Why it was excluded.")


class ComponentStatus(OmeModel):
    """Observed state of one component."""

    runtime: str | None = desc("Runtime the component was rendered from.", default=None)
    groups: int | None = desc("Groups (multi-node) or replicas (single-node) wanted.", default=None)
    groups_ready: int | None = desc("Groups whose every pod is ready.", default=None)
    pods: int | None = desc("Pods wanted.", default=None)
    pods_ready: int | None = desc("Pods ready.", default=None)
    gpus: int | None = desc("GPUs requested by the component.", default=None)
    url: str | None = desc("In-cluster URL of the component.", default=None)


class ModelStatusInfo(OmeModel):
    """OME's modelStatus (kept for compatibility)."""

    transition_status: str | None = desc("UpToDate, InProgress, BlockedByFailedLoad or InvalidSpec.", default=None)
    model_revision_states: Unstructured | None = desc("Active and target model states.", default=None)
    last_failure_info: Unstructured | None = desc("Last failure: reason, message, time.", default=None)
    model_copies: Unstructured | None = desc("Failed and total copies.", default=None)


class InferenceServiceStatus(OmeModel):
    """Observed state: conditions say what is happening and why."""

    conditions: list[Condition] | None = desc(
        "Ready aggregates ModelReady, RuntimeResolved, EngineReady, DecoderReady, RouterReady.", default=None
    )
    observed_generation: int | None = desc("Spec generation this status was computed from.", default=None)
    url: str | None = desc("In-cluster URL of the service (port 80).", default=None)
    address: Unstructured | None = desc("Address of the service: {url}.", default=None)
    runtime: str | None = desc("The runtime in use (named or selected).", default=None)
    runtime_exclusions: list[RuntimeExclusion] | None = desc(
        "Runtimes considered and not chosen, with reasons.", default=None
    )
    gpus: int | None = desc("GPUs requested by all components.", default=None)
    components: dict[str, ComponentStatus] | None = desc("Status per component.", default=None)
    model_status: ModelStatusInfo | None = desc("OME model status (compatibility).", default=None)
    annotations: dict[str, str] | None = desc("OME status annotations (compatibility).", default=None)


_NAME_RULE = (
    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 63",
    "name must be a DNS-1035 label: lowercase letters, digits and '-', starting with a letter, at most 63",
    ".metadata.name",
)
_DECODER_RULE = (
    "!has(self.spec.decoder) || has(self.spec.engine)",
    "a decoder requires an engine (prefill) component",
    ".spec.decoder",
)


class InferenceService(Resource):
    """A served model: prefill/decode groups and a router, reachable on port 80 of a Service of its name."""

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
        validations=(_NAME_RULE, _DECODER_RULE),
        description="Serves a model with a runtime: engine (prefill), decoder (decode) and router.",
    )
    kind: str = desc("InferenceService", default="InferenceService")
    spec: InferenceServiceSpec = desc("What to serve and how.")
    status: InferenceServiceStatus | None = desc("Observed state.", default=None)
