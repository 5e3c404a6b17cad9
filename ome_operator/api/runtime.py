"""ClusterServingRuntime and ServingRuntime: how to run a family of models, and component specs.

The component types (engine, decoder, router, leader, worker) are shared with InferenceService: a
runtime supplies defaults, an InferenceService overrides them. Each is OME's inlined PodSpec
(pod.PodFields) plus OME's own fields, declared here with the bounds their meaning allows.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import ConfigDict, Field

from .base import MAX_INT32, Bound, CrdInfo, K8s, OmeModel, PrinterColumn, Quantity, Resource, Rule, desc
from .limits import MAX_REPLICAS, MAX_WORKER_SIZE
from .model import PARAMETER_SIZE_PATTERN, DiffusionPipeline, ModelFormat
from .pod import POD_SPEC, DeploymentStrategy, PodFields, Runner

# IntOrString of a PodDisruptionBudget: a count or a percentage.
PodBudget = Annotated[int | str, Bound(ge=0, le=MAX_INT32, pattern=r"^[0-9]+%$")]


class KedaAuthenticationRef(OmeModel):
    """The KEDA TriggerAuthentication the Prometheus trigger uses."""

    name: str = desc("Name of the TriggerAuthentication or ClusterTriggerAuthentication.", min_length=1)
    kind: Literal["TriggerAuthentication", "ClusterTriggerAuthentication"] | None = desc(
        "Kind of the authentication object (default TriggerAuthentication).", default=None
    )


class KedaConfig(OmeModel):
    """KEDA autoscaling from a Prometheus query (OME KedaConfig; not acted on yet)."""

    enable_keda: bool | None = desc("Scale with a KEDA ScaledObject instead of an HPA.", default=None)
    prom_server_address: str | None = desc("URL of the Prometheus server.", default=None)
    custom_prom_query: str | None = desc("PromQL query whose value drives scaling.", default=None)
    scaling_threshold: str | None = desc('Threshold of the query value, e.g. "10".', default=None)
    scaling_operator: str | None = desc(
        "How the value compares with the threshold, e.g. GreaterThanOrEqual.", default=None
    )
    authentication_ref: KedaAuthenticationRef | None = desc("Authentication for the Prometheus server.", default=None)
    auth_modes: str | None = desc("KEDA authModes of the Prometheus trigger, e.g. bearer.", default=None)


class AcceleratorConstraints(OmeModel):
    """What an automatically chosen AcceleratorClass must offer."""

    min_memory: Quantity | None = desc("Least accelerator memory.", default=None)
    max_memory: Quantity | None = desc("Most accelerator memory.", default=None)
    min_compute_performance_tflops: Quantity | None = Field(
        default=None, alias="minComputePerformanceTFLOPS", description="Least compute performance in TFLOPS."
    )
    min_architecture_version: str | None = desc("Least architecture version, e.g. 8.0.", default=None)
    required_features: list[str] | None = desc("Features the accelerator must have, e.g. nvlink.", default=None)
    excluded_classes: list[str] | None = desc("AcceleratorClasses never chosen.", default=None)
    architecture_families: list[str] | None = desc("Architecture families allowed, e.g. hopper.", default=None)
    preferred_precisions: list[str] | None = desc("Precisions preferred, e.g. fp8.", default=None)


class AcceleratorSelector(OmeModel):
    """Which AcceleratorClass serves a component (OME AcceleratorSelector; not acted on yet)."""

    accelerator_class: str | None = desc("Name of the AcceleratorClass to use.", default=None)
    constraints: AcceleratorConstraints | None = desc("Constraints for automatic choice.", default=None)
    policy: Literal["BestFit", "Cheapest", "MostCapable", "FirstAvailable"] | None = desc(
        "How to choose among matching classes.", default=None
    )


class ComponentExtension(OmeModel):
    """Scaling and pod-metadata settings of a component (OME ComponentExtensionSpec)."""

    rules = (
        Rule(
            cel="!has(self.minReplicas) || !has(self.maxReplicas) || self.maxReplicas == 0 "
            "|| self.minReplicas <= self.maxReplicas",
            message="minReplicas must not exceed maxReplicas (maxReplicas 0 means unset, as in OME)",
            field_path=".minReplicas",
            holds=lambda c: (
                c.min_replicas is None
                or c.max_replicas is None
                or c.max_replicas == 0
                or c.min_replicas <= c.max_replicas
            ),
        ),
    )

    min_replicas: int | None = desc(
        f"Groups (or pods for single-node components) to run, at most {MAX_REPLICAS}.",
        default=None,
        ge=0,
        le=MAX_REPLICAS,
    )
    max_replicas: int | None = desc(
        f"Upper bound for autoscaling, at most {MAX_REPLICAS}; 0 means unset. The operator runs minReplicas.",
        default=None,
        ge=0,
        le=MAX_REPLICAS,
    )
    scale_target: int | None = desc(
        "Autoscaling target of the metric (OME compatibility; not acted on yet).", default=None, ge=1, le=MAX_INT32
    )
    scale_metric: Literal["cpu", "memory", "concurrency", "rps", "tps"] | None = desc(
        "Autoscaling metric (OME compatibility; not acted on yet).", default=None
    )
    container_concurrency: int | None = desc(
        "Knative concurrent requests per pod, 0 unlimited (not acted on).", default=None, ge=0, le=MAX_INT32
    )
    timeout_seconds: int | None = desc("Knative request timeout (not acted on).", default=None, ge=0, le=MAX_INT32)
    canary_traffic_percent: int | None = desc("Knative canary traffic (not acted on).", default=None, ge=0, le=100)
    labels: dict[str, str] | None = desc("Labels added to the component's pods.", default=None)
    annotations: dict[str, str] | None = desc("Annotations added to the component's pods.", default=None)
    min_available: PodBudget | None = Field(
        default=None,
        description="PodDisruptionBudget minAvailable: a count or a percentage (OME compatibility).",
        json_schema_extra={"x-kubernetes-int-or-string": True},
    )
    max_unavailable: PodBudget | None = Field(
        default=None,
        description="PodDisruptionBudget maxUnavailable: a count or a percentage (OME compatibility).",
        json_schema_extra={"x-kubernetes-int-or-string": True},
    )
    deployment_strategy: DeploymentStrategy | None = desc("apps/v1 DeploymentStrategy for Deployments.", default=None)
    keda_config: KedaConfig | None = desc("KEDA autoscaling settings (not acted on yet).", default=None)


class LeaderSpec(PodFields):
    """The leader pod of a multi-node group (rank 0)."""

    runner: Runner | None = desc("The leader's serving container.", default=None)


class WorkerSpec(PodFields):
    """The worker pods of a multi-node group (ranks 1..size)."""

    size: int | None = desc(
        f"Worker pods per group besides the leader, at most {MAX_WORKER_SIZE}; 0 means single-node.",
        default=None,
        ge=0,
        le=MAX_WORKER_SIZE,
    )
    runner: Runner | None = desc("The workers' serving container.", default=None)


class ComponentSpec(PodFields, ComponentExtension):
    """An engine (prefill) or decoder (decode) component: single pods, or groups of leader + workers."""

    # ComponentExtension is closed; the PodSpec view keeps the PodSpec fields it does not declare.
    model_config = ConfigDict(extra="allow")

    runner: Runner | None = desc("The serving container of single-node pods.", default=None)
    leader: LeaderSpec | None = desc("Leader pod of each multi-node group.", default=None)
    worker: WorkerSpec | None = desc("Worker pods of each multi-node group.", default=None)
    accelerator_override: AcceleratorSelector | None = desc(
        "AcceleratorClass override (not acted on yet).", default=None
    )

    @property
    def multi_node(self) -> bool:
        return self.leader is not None or self.worker is not None


class RouterSpec(PodFields, ComponentExtension):
    """The router in front of the engine (and decoder): sglang-router discovering leader pods."""

    model_config = ConfigDict(extra="allow")

    runner: Runner | None = desc("The router container.", default=None)
    config: dict[str, str] | None = desc("Settings passed to the router as environment variables.", default=None)


class TensorParallelism(OmeModel):
    """Parallelism sizes that replace the runtime's flags on one AcceleratorClass."""

    tensor_parallel_size: int | None = desc("--tp-size.", default=None, ge=1, le=MAX_INT32)
    pipeline_parallel_size: int | None = desc("--pp-size.", default=None, ge=1, le=MAX_INT32)
    data_parallel_size: int | None = desc("--dp-size.", default=None, ge=1, le=MAX_INT32)


class AcceleratorModelConfig(OmeModel):
    """How a runtime serves its models on one AcceleratorClass (not acted on yet)."""

    min_memory_per_billion_params: Quantity | None = desc(
        "Accelerator memory needed per billion parameters.", default=None
    )
    tensor_parallelism_override: TensorParallelism | None = desc("Parallelism on this class.", default=None)
    runtime_args_override: list[str] | None = desc("Arguments merged into the runner's by flag.", default=None)
    environment_override: dict[str, str] | None = desc("Environment variables set on the runner.", default=None)


class SupportedModelFormat(OmeModel):
    """A kind of model this runtime can serve; any matching entry makes the runtime compatible."""

    name: str | None = desc("Legacy model name (OME compatibility).", default=None)
    model_format: ModelFormat | None = desc("Weight format; must equal the model's.", default=None)
    model_type: str | None = desc("Deprecated model type (OME compatibility).", default=None)
    version: str | None = desc("Legacy version (OME compatibility).", default=None)
    model_framework: ModelFormat | None = desc("Framework; names equal, versions compared.", default=None)
    model_architecture: str | None = desc("Architecture; must equal the model's (both set or neither).", default=None)
    quantization: str | None = desc("Quantization; must equal the model's (both set or neither).", default=None)
    diffusion_pipeline: DiffusionPipeline | None = desc("Diffusers pipeline match (not acted on yet).", default=None)
    auto_select: bool | None = desc("Eligible for automatic runtime selection.", default=None)
    priority: int | None = desc("Priority in auto-selection (default 1).", default=None, ge=1, le=MAX_INT32)
    accelerator_config: dict[str, AcceleratorModelConfig] | None = desc(
        "Per-AcceleratorClass overrides, by class name (not acted on yet).", default=None
    )


class ModelSizeRange(OmeModel):
    """Parameter-count range, e.g. min 1T, max 1.5T."""

    rules = (
        Rule(
            cel="has(self.min) == has(self.max)",
            message="modelSizeRange needs both min and max",
            field_path="",
            holds=lambda r: (r.min is None) == (r.max is None),
        ),
    )

    min: str | None = desc("Smallest model served, e.g. 650B.", default=None, pattern=PARAMETER_SIZE_PATTERN)
    max: str | None = desc("Largest model served, e.g. 1.5T.", default=None, pattern=PARAMETER_SIZE_PATTERN)


class AcceleratorRequirements(OmeModel):
    """The accelerators a runtime runs on (not acted on yet)."""

    accelerator_classes: list[str] | None = desc("AcceleratorClasses the runtime supports.", default=None)
    min_memory: Quantity | None = desc("Least accelerator memory.", default=None)
    min_compute_performance_tflops: Quantity | None = Field(
        default=None, alias="minComputePerformanceTFLOPS", description="Least compute performance in TFLOPS."
    )
    min_architecture_version: str | None = desc("Least architecture version, e.g. 8.0.", default=None)
    required_features: list[str] | None = desc("Features the accelerator must have.", default=None)
    preferred_precisions: list[str] | None = desc("Precisions preferred, e.g. fp8.", default=None)


# OME's ServingRuntimePodSpec: the PodSpec fields a runtime may set outside its components.
RUNTIME_POD_FIELDS = (
    "containers",
    "volumes",
    "nodeSelector",
    "affinity",
    "tolerations",
    "imagePullSecrets",
    "schedulerName",
    "hostIPC",
    "dnsPolicy",
    "hostNetwork",
)


class RuntimePodFields(PodFields):
    """OME's ServingRuntimePodSpec: a subset of PodSpec, plus pod labels and annotations (legacy)."""

    k8s: ClassVar[K8s] = K8s(POD_SPEC, optional=("containers",), only=RUNTIME_POD_FIELDS)

    labels: dict[str, str] | None = desc("Legacy pod labels (OME compatibility).", default=None)
    annotations: dict[str, str] | None = desc("Legacy pod annotations (OME compatibility).", default=None)


class RuntimeWorkers(RuntimePodFields):
    """Legacy multi-node workers of a runtime (OME WorkerPodSpec)."""

    size: int | None = desc(
        f"Worker pods besides the head, at most {MAX_WORKER_SIZE}.", default=None, ge=0, le=MAX_WORKER_SIZE
    )


class ServingRuntimeSpec(RuntimePodFields):
    """How to serve a family of models."""

    supported_model_formats: list[SupportedModelFormat] | None = desc("Model kinds this runtime serves.", default=None)
    model_size_range: ModelSizeRange | None = desc("Parameter-count range served.", default=None)
    disabled: bool | None = desc("A disabled runtime is never selected.", default=None)
    protocol_versions: list[Literal["openAI", "openInference-v1", "openInference-v2"]] | None = desc(
        "Protocols the runtime speaks (informational).", default=None
    )
    engine_config: ComponentSpec | None = desc("Defaults for the engine (prefill) component.", default=None)
    decoder_config: ComponentSpec | None = desc("Defaults for the decoder (decode) component.", default=None)
    router_config: RouterSpec | None = desc("Defaults for the router component.", default=None)
    accelerator_requirements: AcceleratorRequirements | None = desc(
        "Accelerator requirements (not acted on).", default=None
    )
    workers: RuntimeWorkers | None = desc("Legacy multi-node workers (OME compatibility).", default=None)


class RuntimeStatus(OmeModel):
    """OME's ServingRuntimeStatus is empty: a runtime has no observed state."""


def _runtime_columns() -> tuple[PrinterColumn, ...]:
    return (
        PrinterColumn("Disabled", ".spec.disabled", type="boolean"),
        PrinterColumn("Architecture", ".spec.supportedModelFormats[*].modelArchitecture"),
        PrinterColumn("Quantization", ".spec.supportedModelFormats[*].quantization"),
        PrinterColumn("SizeMin", ".spec.modelSizeRange.min"),
        PrinterColumn("SizeMax", ".spec.modelSizeRange.max"),
        PrinterColumn("Age", ".metadata.creationTimestamp", type="date"),
    )


def _runtime_crd(kind: str, plural: str, scope: str, usable_from: str) -> CrdInfo:
    return CrdInfo(
        kind=kind,
        plural=plural,
        scope=scope,
        printer_columns=_runtime_columns(),
        status_subresource=False,
        description=f"How to serve a family of models, usable from {usable_from}.",
    )


class _RuntimeResource(Resource):
    spec: ServingRuntimeSpec = desc("The runtime.")
    status: RuntimeStatus | None = desc("Unused (OME compatibility).", default=None)


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
