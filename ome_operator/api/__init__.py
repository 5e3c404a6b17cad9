"""The ome.io/v1beta1 API: pydantic models, the single source of truth for the CRDs."""

from .base import API_VERSION, GROUP, VERSION, Condition, CrdInfo, ObjectMeta, Resource
from .inferenceservice import COMPONENTS, InferenceService, InferenceServiceSpec, InferenceServiceStatus
from .load import KIND_TYPES as KINDS
from .load import Loaded, Problem, load_paths, load_text
from .model import BaseModel, BaseModelSpec, ClusterBaseModel, ModelStatus, StorageSpec
from .pod import Container, EnvVar, PodFields
from .runtime import (
    ClusterServingRuntime,
    ComponentSpec,
    RouterSpec,
    ServingRuntime,
    ServingRuntimeSpec,
    SupportedModelFormat,
)

__all__ = [
    "API_VERSION",
    "COMPONENTS",
    "GROUP",
    "KINDS",
    "VERSION",
    "BaseModel",
    "BaseModelSpec",
    "ClusterBaseModel",
    "ClusterServingRuntime",
    "ComponentSpec",
    "Condition",
    "Container",
    "CrdInfo",
    "EnvVar",
    "InferenceService",
    "InferenceServiceSpec",
    "InferenceServiceStatus",
    "Loaded",
    "ModelStatus",
    "ObjectMeta",
    "PodFields",
    "Problem",
    "Resource",
    "RouterSpec",
    "ServingRuntime",
    "ServingRuntimeSpec",
    "StorageSpec",
    "SupportedModelFormat",
    "load_paths",
    "load_text",
]
