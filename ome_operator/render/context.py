"""The resolved inputs of a render: everything it needs, already looked up, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ome_operator.api import InferenceService
from ome_operator.api.model import AnyModel, ClusterBaseModel
from ome_operator.api.runtime import AnyRuntime
from ome_operator.api.storage_uri import LocalUri, StorageUriError, parse_storage_uri

from . import names

GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_MODELS_ROOT = "/mnt/data/models"
PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"
# OME reads a model's size class for the base-model-size pod label from this annotation.
SIZE_CATEGORY_ANNOTATION = "models.ome.io/category"


@dataclass(frozen=True)
class Settings:
    """Operator-wide settings that shape rendered objects."""

    operator_namespace: str = "ome"
    image: str = "ome-operator:0.1.0"
    hf_endpoint: str | None = None
    models_root: str = DEFAULT_MODELS_ROOT
    download_workers: int = 8
    download_backoff_limit: int = 6
    download_retry_base_seconds: float = 30.0  # delay before recreating a Job that used up its retries
    download_slots_per_node: int = 2  # download Jobs a node runs at once (one kept for serving demand)


@dataclass(frozen=True)
class ModelRefResolved:
    """The model an InferenceService serves, reduced to what its pods need."""

    name: str
    namespace: str | None  # None for a ClusterBaseModel
    path: str
    vendor: str | None = None
    size_category: str = "SMALL"

    @classmethod
    def of(cls, model: AnyModel, settings: Settings) -> ModelRefResolved:
        namespace = None if isinstance(model, ClusterBaseModel) else model.namespace
        category = (model.metadata.annotations or {}).get(SIZE_CATEGORY_ANNOTATION) or "SMALL"
        return cls(model.name, namespace, model_path(model, settings), model.spec.vendor, category)

    @property
    def ready_label(self) -> str:
        return names.model_ready_label(self.name, self.namespace)


def model_path(model: AnyModel, settings: Settings) -> str:
    """Where the weights live on a node: storage.path, else a per-model directory under the models root."""
    storage = model.spec.storage
    if storage is not None and storage.path:
        return storage.path
    try:
        uri = parse_storage_uri(storage.storage_uri) if storage is not None else None
    except StorageUriError:
        uri = None  # reported by check_model_storage; the path below is only a placeholder
    if isinstance(uri, LocalUri):
        # The weights already are on the node: serve them in place.
        return str(uri.path)
    scope = "cluster" if isinstance(model, ClusterBaseModel) else model.namespace
    return f"{settings.models_root}/{scope}/{model.name}"


@dataclass(frozen=True)
class IsvcContext:
    isvc: InferenceService
    runtime: AnyRuntime | None
    model: ModelRefResolved
    settings: Settings

    @property
    def name(self) -> str:
        return self.isvc.name

    @property
    def namespace(self) -> str:
        return self.isvc.namespace or "default"

    def owner_reference(self) -> dict[str, Any]:
        return {
            "apiVersion": self.isvc.api_version,
            "kind": "InferenceService",
            "name": self.name,
            "uid": self.isvc.metadata.uid or PLACEHOLDER_UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def ome_pod_labels(self) -> dict[str, str]:
        """The labels OME puts on every serving pod (its dashboards and tools select on them)."""
        labels = {
            "serving-runtime": self.runtime.name if self.runtime is not None else "",
            "base-model-name": self.model.name,
            "base-model-size": self.model.size_category,
            "base-model-type": "Serving",
            "fine-tuned-serving": "false",
        }
        if self.model.vendor:
            labels["base-model-vendor"] = self.model.vendor
        return {key: names.label_value(value) for key, value in labels.items() if value}

    def metadata(self, name: str, component: str, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": {**names.isvc_labels(self.name, component), **(extra_labels or {})},
            "ownerReferences": [self.owner_reference()],
        }
