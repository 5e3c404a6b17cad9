"""ClusterBaseModel and BaseModel: where a model's weights come from and where they live on nodes."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field

from .base import (
    MAX_INT32,
    MAX_INT64,
    Condition,
    CrdInfo,
    OmeModel,
    PrinterColumn,
    Resource,
    Rule,
    Unstructured,
    desc,
)
from .pod import NodeAffinity
from .storage_uri import SERVED_SCHEMES, SUPPORTED

MODEL_STATES = ("Creating", "Importing", "In_Transit", "In_Training", "Ready", "Failed")
# A parameter count as OME writes and parses it: 7B, 1.03T, 500M (a bare number is a count).
PARAMETER_SIZE_PATTERN = r"^[0-9]+(\.[0-9]+)?[KMBT]?$"
STORAGE_URI_PATTERN = "^(" + "|".join(SERVED_SCHEMES) + ")://.+"
# storage.path as admission can judge it without cluster state: absolute, one or more non-empty
# segments, so neither '/' itself, nor '//', nor a trailing '/'. Which roots it must be under are
# operator settings (ome_operator/render/roots.py). Character classes instead of backslashes: the
# same text is a CEL string literal and a Python regex.
STORAGE_PATH_PATTERN = "^(/[^/]+)+$"
DOT_SEGMENT_PATTERN = "(^|/)[.][.]?(/|$)"


class ModelFormat(OmeModel):
    """A model format or framework with an optional version (e.g. safetensors 1.0.0, transformers 4.48.3)."""

    name: str = desc("Name, e.g. safetensors or transformers.", min_length=1)
    version: str | None = desc("Version, e.g. 1.0.0.", default=None)
    operator: Literal["Equal", "GreaterThan", "GreaterThanOrEqual"] | None = desc(
        "How a runtime compares the model's version with its own (default Equal).", default=None
    )
    weight: int | None = desc(
        "Weight of this match in runtime auto-selection (default 1; 0 means the default).",
        default=None,
        ge=0,
        le=MAX_INT32,
    )


class DiffusionComponent(OmeModel):
    """One component of a diffusers pipeline (model_index.json): the library and class that load it."""

    library: str | None = desc("Library of the component, e.g. diffusers or transformers.", default=None)
    type: str | None = desc("Class of the component, e.g. AutoencoderKL.", default=None)


class DiffusionPipeline(OmeModel):
    """A diffusers pipeline, as model_index.json describes it (OME DiffusionPipelineSpec)."""

    class_name: str | None = desc("Pipeline class, e.g. FluxPipeline.", default=None)
    scheduler: DiffusionComponent | None = desc("The scheduler.", default=None)
    text_encoder: DiffusionComponent | None = desc("The text encoder.", default=None)
    tokenizer: DiffusionComponent | None = desc("The tokenizer.", default=None)
    transformer: DiffusionComponent | None = desc("The denoising transformer.", default=None)
    vae: DiffusionComponent | None = desc("The VAE.", default=None)
    additional_components: dict[str, DiffusionComponent] | None = desc(
        "Other components by name, e.g. text_encoder_2.", default=None
    )


class StorageSpec(OmeModel):
    """Where the weights come from and where they are kept on each node."""

    rules = (
        Rule(
            cel=f"self.storageUri.matches('{STORAGE_URI_PATTERN}')",
            message=f"unsupported storage URI: use one of {SUPPORTED}",
            field_path=".storageUri",
            holds=lambda s: re.search(STORAGE_URI_PATTERN, s.storage_uri) is not None,
        ),
        Rule(
            cel=f"!has(self.path) || self.path.matches('{STORAGE_PATH_PATTERN}')",
            message=(
                "must be a normalized absolute path below '/': it starts with '/', has no empty segment "
                "('//') and no trailing '/'"
            ),
            field_path=".path",
            holds=lambda s: s.path is None or re.search(STORAGE_PATH_PATTERN, s.path) is not None,
        ),
        Rule(
            cel=f"!has(self.path) || !self.path.matches('{DOT_SEGMENT_PATTERN}')",
            message="must not contain '.' or '..' segments",
            field_path=".path",
            holds=lambda s: s.path is None or re.search(DOT_SEGMENT_PATTERN, s.path) is None,
        ),
    )

    storage_uri: str = desc(
        f"Source of the weights: {SUPPORTED}. Object stores take credentials from the Secret named by "
        "`key` (see the README's storage section)."
    )
    path: str | None = desc(
        "Absolute, normalized path where pods see the weights. For hf:// it is also where each node keeps "
        "them, so it must lie strictly under one of the model roots the cluster admin allowed (the "
        "operator's --model-root) and, for a BaseModel, under that root's directory for its namespace; "
        "for pvc:// it is only the mount point of the claim.",
        default=None,
    )
    schema_path: str | None = desc("Path of a schema file inside the model (OME compatibility).", default=None)
    parameters: dict[str, str] | None = desc(
        "Provider parameters: secretKey (hf:// token data key), region (s3://, oci://), endpoint (an "
        "S3-compatible, GCS or Azure endpoint URL instead of the provider's own).",
        default=None,
    )
    key: str | None = desc(
        "Name of a Secret holding credentials: hf:// the token (data key `token`, or parameters.secretKey); "
        "s3:// and oci:// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; gs:// token; az:// "
        "AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN. Jobs reference it with secretKeyRef; the operator never reads it.",
        default=None,
    )
    node_selector: dict[str, str] | None = desc("Nodes that must hold a copy (all labels must match).", default=None)
    node_affinity: NodeAffinity | None = desc(
        "Nodes that must hold a copy (core NodeAffinity; requiredDuringScheduling is honoured).", default=None
    )
    download_policy: Literal["AlwaysDownload", "ReuseIfExists"] | None = desc(
        "AlwaysDownload (default) verifies and completes the copy; ReuseIfExists trusts a verified copy.",
        default=None,
    )


class BaseModelSpec(OmeModel):
    """A model's identity, capabilities and storage."""

    storage: StorageSpec | None = desc(
        "Where the weights come from and where they live on nodes (optional, as in OME).", default=None
    )
    model_format: ModelFormat | None = desc("Weight format, e.g. safetensors 1.0.0.", default=None)
    model_type: str | None = desc("config.json model_type, e.g. kimi_k2 or llama.", default=None)
    model_framework: ModelFormat | None = desc("Framework, e.g. transformers 4.48.3.", default=None)
    model_architecture: str | None = desc("config.json architectures[0], e.g. DeepseekV3ForCausalLM.", default=None)
    quantization: str | None = desc("Quantization, e.g. fp8, fbgemm_fp8, int4.", default=None)
    model_parameter_size: str | None = desc(
        "Parameter count with suffix, e.g. 7B, 671B, 1T.", default=None, pattern=PARAMETER_SIZE_PATTERN
    )
    model_capabilities: list[str] | None = desc("Capabilities, e.g. TEXT_TO_TEXT, EMBEDDING.", default=None)
    api_capabilities: list[str] | None = desc("API capabilities, e.g. OPENAI_V1_CHAT_COMPLETIONS.", default=None)
    model_configuration: Unstructured | None = desc(
        "Free-form summary of the model's configuration (model_type, context_length, torch_dtype, ...). "
        "Free-form on purpose: OME declares it raw JSON, written by its model agent from whatever the "
        "model's config.json holds.",
        default=None,
    )
    display_name: str | None = desc("Human-readable name.", default=None)
    version: str | None = desc("Version of this model entry.", default=None)
    disabled: bool | None = desc("A disabled model cannot be served.", default=None)
    vendor: str | None = desc("Vendor, e.g. moonshotai.", default=None)
    compartment_id: str | None = Field(default=None, alias="compartmentID", description="OCI compartment.")
    serving_mode: list[str] | None = desc("On-demand or Dedicated.", default=None)
    max_tokens: int | None = desc("Maximum context length in tokens.", default=None, ge=1, le=MAX_INT32)
    diffusion_pipeline: DiffusionPipeline | None = desc("Diffusers pipeline description.", default=None)
    additional_metadata: dict[str, str] | None = desc("Free-form metadata.", default=None)
    allow_pickle: bool | None = desc(
        "Allow pickle weight formats (.bin, .pt); off by default because loading them runs code.",
        default=None,
    )


# The key of a model's progress ConfigMap that lists the nodes the operator created download Jobs
# for: a peer that has everything keeps serving until those have joined (node names hold no "_").
PROGRESS_EXPECTED_KEY = "_expected"


class DownloadProgress(OmeModel):
    """Progress of one node's download, as published by its download Job."""

    phase: str | None = desc("Resolving, Downloading, Verifying, Ready or Failed.", default=None)
    total_bytes: int | None = desc("Bytes to transfer in total.", default=None, ge=0, le=MAX_INT64)
    completed_bytes: int | None = desc("Bytes verified in place so far.", default=None, ge=0, le=MAX_INT64)
    total_files: int | None = desc("Files in the model.", default=None, ge=0, le=MAX_INT64)
    completed_files: int | None = desc("Files verified in place so far.", default=None, ge=0, le=MAX_INT64)
    speed_bytes_per_sec: int | None = desc("Current throughput.", default=None, ge=0, le=MAX_INT64)
    eta_seconds: int | None = desc("Estimated seconds left.", default=None, ge=0, le=MAX_INT64)
    last_updated: str | None = desc("When this progress was published.", default=None)
    message: str | None = desc("What went wrong, for a failed node.", default=None)
    bytes_transferred: int | None = desc(
        "Bytes received from the source so far (resumed bytes excluded).", default=None, ge=0, le=MAX_INT64
    )
    elapsed_seconds: float | None = desc("Seconds since this node's download started.", default=None, ge=0)
    commit: str | None = desc("Repository commit being copied.", default=None)


class ModelMetadata(OmeModel):
    """Facts about the weights discovered by the download Job (config.json and safetensors headers)."""

    commit: str | None = desc("Repository commit the copy was made from.", default=None)
    architecture: str | None = desc("config.json architectures[0].", default=None)
    model_type: str | None = desc("config.json model_type.", default=None)
    parameter_count: int | None = desc(
        "Parameter count summed from safetensors tensor shapes.", default=None, ge=0, le=MAX_INT64
    )
    parameter_size: str | None = desc("Parameter count with suffix, e.g. 1.03T.", default=None)
    dtype: str | None = desc("Dominant weight dtype, e.g. F8_E4M3 or BF16.", default=None)
    quantization: str | None = desc("quantization_config.quant_method, e.g. fp8.", default=None)
    max_tokens: int | None = desc("max_position_embeddings.", default=None, ge=0, le=MAX_INT64)
    transformers_version: str | None = desc("config.json transformers_version.", default=None)
    size_bytes: int | None = desc("Bytes of the verified copy.", default=None, ge=0, le=MAX_INT64)
    files: int | None = desc("Files in the verified copy.", default=None, ge=0, le=MAX_INT64)


class ModelStatus(OmeModel):
    """Observed state of a model across its target nodes."""

    state: Literal["Creating", "Importing", "In_Transit", "In_Training", "Ready", "Failed"] | None = desc(
        "OME state: Ready when at least one node holds a verified copy; Failed when none does and one "
        "failed; In_Transit while downloading.",
        default=None,
    )
    lifecycle: str | None = desc("OME lifecycle string.", default=None)
    nodes_ready: list[str] | None = desc("Nodes holding a verified copy.", default=None)
    nodes_failed: list[str] | None = desc("Nodes whose download failed.", default=None)
    nodes_summary: str | None = desc("Ready nodes over target nodes, e.g. 16/16.", default=None)
    progress_summary: str | None = desc("Overall download progress, e.g. 42%.", default=None)
    progress: dict[str, DownloadProgress] | None = desc("Download progress per node.", default=None)
    metadata: ModelMetadata | None = desc("Facts discovered from the weights.", default=None)
    architecture: str | None = desc("Effective architecture: spec if set, else discovered.", default=None)
    parameter_size: str | None = desc("Effective parameter size: spec if set, else discovered.", default=None)
    conditions: list[Condition] | None = desc("Ready, Downloaded, InUse conditions.", default=None)
    observed_generation: int | None = desc(
        "Spec generation this status was computed from.", default=None, ge=0, le=MAX_INT64
    )


def _model_columns() -> tuple[PrinterColumn, ...]:
    return (
        PrinterColumn("State", ".status.state", description="OME model state"),
        PrinterColumn("Ready", ".status.nodesSummary", description="Nodes with a verified copy / target nodes"),
        PrinterColumn("Progress", ".status.progressSummary", description="Download progress"),
        PrinterColumn("Size", ".status.parameterSize", description="Parameter count"),
        PrinterColumn("Architecture", ".status.architecture", description="Model architecture"),
        PrinterColumn("Age", ".metadata.creationTimestamp", type="date"),
    )


def _model_crd(kind: str, plural: str, scope: str, usable_from: str) -> CrdInfo:
    return CrdInfo(
        kind=kind,
        plural=plural,
        scope=scope,
        printer_columns=_model_columns(),
        description=f"A model whose weights the operator places on nodes, usable from {usable_from}.",
    )


class _ModelResource(Resource):
    spec: BaseModelSpec = desc("The model.")
    status: ModelStatus | None = desc("Observed state of the model.", default=None)


class ClusterBaseModel(_ModelResource):
    """A model available to InferenceServices in every namespace."""

    crd: ClassVar[CrdInfo] = _model_crd("ClusterBaseModel", "clusterbasemodels", "Cluster", "every namespace")
    kind: str = desc("ClusterBaseModel", default="ClusterBaseModel")


class BaseModel(_ModelResource):
    """A model available to InferenceServices in its own namespace (OME kind BaseModel)."""

    crd: ClassVar[CrdInfo] = _model_crd("BaseModel", "basemodels", "Namespaced", "its namespace")
    kind: str = desc("BaseModel", default="BaseModel")


AnyModel = ClusterBaseModel | BaseModel
