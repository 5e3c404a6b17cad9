"""ClusterServingRuntime and ServingRuntime: how to run a family of models, and component specs.

The component types (engine, decoder, router, leader, worker) are shared with InferenceService: a
runtime supplies defaults, an InferenceService overrides them.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from .base import CrdInfo, OmeModel, PrinterColumn, Resource, Unstructured, desc
from .model import ModelFormat
from .pod import Container, PodFields


class ComponentExtension(OmeModel):
    """Scaling and pod-metadata settings of a component (OME ComponentExtensionSpec)."""

    min_replicas: int | None = desc("Groups (or pods for single-node components) to run.", default=None, ge=0)
    max_replicas: int | None = desc("Upper bound for autoscaling; the operator runs minReplicas.", default=None, ge=0)
    scale_target: int | None = desc("Autoscaling target (OME compatibility; not acted on yet).", default=None)
    scale_metric: Literal["cpu", "memory", "concurrency", "rps"] | None = desc(
        "Autoscaling metric (OME compatibility; not acted on yet).", default=None
    )
    container_concurrency: int | None = desc("Knative concurrency (not acted on).", default=None)
    timeout_seconds: int | None = desc("Knative request timeout (not acted on).", default=None)
    canary_traffic_percent: int | None = desc("Knative canary traffic (not acted on).", default=None)
    labels: dict[str, str] | None = desc("Labels added to the component's pods.", default=None)
    annotations: dict[str, str] | None = desc("Annotations added to the component's pods.", default=None)
    min_available: int | str | None = Field(
        default=None,
        description="PodDisruptionBudget minAvailable (OME compatibility).",
        json_schema_extra={"x-kubernetes-int-or-string": True},
    )
    max_unavailable: int | str | None = Field(
        default=None,
        description="PodDisruptionBudget maxUnavailable (OME compatibility).",
        json_schema_extra={"x-kubernetes-int-or-string": True},
    )
    deployment_strategy: Unstructured | None = desc("apps/v1 DeploymentStrategy for Deployments.", default=None)
    keda_config: Unstructured | None = desc("KEDA autoscaling settings (not acted on yet).", default=None)


class LeaderSpec(PodFields):
    """The leader pod of a multi-node group (rank 0)."""

    runner: Container | None = desc("The leader's serving container.", default=None)


class WorkerSpec(PodFields):
    """The worker pods of a multi-node group (ranks 1..size)."""

    size: int | None = desc("Worker pods per group besides the leader; 0 means single-node.", default=None, ge=0)
    runner: Container | None = desc("The workers' serving container.", default=None)


class ComponentSpec(PodFields, ComponentExtension):
    """An engine (prefill) or decoder (decode) component: single pods, or groups of leader + workers."""

    runner: Container | None = desc("The serving container of single-node pods.", default=None)
    leader: LeaderSpec | None = desc("Leader pod of each multi-node group.", default=None)
    worker: WorkerSpec | None = desc("Worker pods of each multi-node group.", default=None)
    accelerator_override: Unstructured | None = desc("AcceleratorClass override (not acted on yet).", default=None)

    @property
    def multi_node(self) -> bool:
        return self.leader is not None or self.worker is not None


class RouterSpec(PodFields, ComponentExtension):
    """The router in front of the engine (and decoder): sglang-router discovering leader pods."""

    runner: Container | None = desc("The router container.", default=None)
    config: dict[str, str] | None = desc("Settings passed to the router as environment variables.", default=None)


class SupportedModelFormat(OmeModel):
    """A kind of model this runtime can serve; any matching entry makes the runtime compatible."""

    name: str | None = desc("Legacy model name (OME compatibility).", default=None)
    model_format: ModelFormat | None = desc("Weight format; must equal the model's.", default=None)
    model_type: str | None = desc("Deprecated model type (OME compatibility).", default=None)
    version: str | None = desc("Legacy version (OME compatibility).", default=None)
    model_framework: ModelFormat | None = desc("Framework; names equal, versions compared.", default=None)
    model_architecture: str | None = desc("Architecture; must equal the model's (both set or neither).", default=None)
    quantization: str | None = desc("Quantization; must equal the model's (both set or neither).", default=None)
    diffusion_pipeline: Unstructured | None = desc("Diffusers pipeline match (not acted on yet).", default=None)
    auto_select: bool | None = desc("Eligible for automatic runtime selection.", default=None)
    priority: int | None = desc("Priority in auto-selection (default 1).", default=None, ge=1)
    accelerator_config: dict[str, Unstructured] | None = desc(
        "Per-AcceleratorClass overrides (not acted on yet).", default=None
    )


class ModelSizeRange(OmeModel):
    """Parameter-count range, e.g. min 1T, max 1.5T."""

    min: str | None = desc("Smallest model served, e.g. 650B.", default=None)
    max: str | None = desc("Largest model served, e.g. 1.5T.", default=None)


class ServingRuntimeSpec(PodFields):
    """How to serve a family of models."""

    supported_model_formats: list[SupportedModelFormat] | None = desc("Model kinds this runtime serves.", default=None)
    model_size_range: ModelSizeRange | None = desc("Parameter-count range served.", default=None)
    disabled: bool | None = desc("A disabled runtime is never selected.", default=None)
    protocol_versions: list[str] | None = desc("openAI, openInference-v1 or openInference-v2.", default=None)
    engine_config: ComponentSpec | None = desc("Defaults for the engine (prefill) component.", default=None)
    decoder_config: ComponentSpec | None = desc("Defaults for the decoder (decode) component.", default=None)
    router_config: RouterSpec | None = desc("Defaults for the router component.", default=None)
    accelerator_requirements: Unstructured | None = desc("Accelerator requirements (not acted on).", default=None)
    labels: dict[str, str] | None = desc("Legacy pod labels (OME compatibility).", default=None)
    annotations: dict[str, str] | None = desc("Legacy pod annotations (OME compatibility).", default=None)
    workers: Unstructured | None = desc("Legacy multi-node workers (OME compatibility).", default=None)


def _runtime_columns() -> tuple[PrinterColumn, ...]:
    return (
        PrinterColumn("Disabled", ".spec.disabled", type="boolean"),
        PrinterColumn("Architecture", ".spec.supportedModelFormats[*].modelArchitecture"),
        PrinterColumn("Quantization", ".spec.supportedModelFormats[*].quantization"),
        PrinterColumn("SizeMin", ".spec.modelSizeRange.min"),
        PrinterColumn("SizeMax", ".spec.modelSizeRange.max"),
        PrinterColumn("Age", ".metadata.creationTimestamp", type="date"),
    )


_RUNTIME_RULES = (
    (
        "!has(self.spec.modelSizeRange) || (has(self.spec.modelSizeRange.min) == has(self.spec.modelSizeRange.max))",
        "modelSizeRange needs both min and max",
        ".spec.modelSizeRange",
    ),
)


def _runtime_crd(kind: str, plural: str, scope: str, usable_from: str) -> CrdInfo:
    return CrdInfo(
        kind=kind,
        plural=plural,
        scope=scope,
        printer_columns=_runtime_columns(),
        validations=_RUNTIME_RULES,
        status_subresource=False,
        description=f"How to serve a family of models, usable from {usable_from}.",
    )


class _RuntimeResource(Resource):
    spec: ServingRuntimeSpec = desc("The runtime.")
    status: Unstructured | None = desc("Unused (OME compatibility).", default=None)


class ClusterServingRuntime(_RuntimeResource):
    """A serving runtime usable from every namespace."""

    crd: ClassVar[CrdInfo] = _runtime_crd(
        "ClusterServingRuntime", "clusterservingruntimes", "Cluster", "every namespace"
    )
    kind: str = desc("ClusterServingRuntime", default="ClusterServingRuntime")


class ServingRuntime(_RuntimeResource):
    """A serving runtime usable from its own namespace; preferred over cluster runtimes."""

    crd: ClassVar[CrdInfo] = _runtime_crd("ServingRuntime", "servingruntimes", "Namespaced", "its namespace")
    kind: str = desc("ServingRuntime", default="ServingRuntime")


AnyRuntime = ClusterServingRuntime | ServingRuntime
