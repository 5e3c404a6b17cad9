"""The resolved inputs of a render: everything it needs, already looked up, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ome_operator.api import InferenceService
from ome_operator.api.model import AnyModel, ClusterBaseModel
from ome_operator.api.runtime import AnyRuntime

from . import names

GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_MODELS_ROOT = "/mnt/data/models"
PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class Settings:
    """Operator-wide settings that shape rendered objects."""

    operator_namespace: str = "ome"
    image: str = "ome-operator:0.1.0"
    hf_endpoint: str | None = None
    models_root: str = DEFAULT_MODELS_ROOT
    download_workers: int = 8
    download_backoff_limit: int = 6


@dataclass(frozen=True)
class ModelRefResolved:
    """The model an InferenceService serves, reduced to what its pods need."""

    name: str
    namespace: str | None  # None for a ClusterBaseModel
    path: str

    @classmethod
    def of(cls, model: AnyModel, settings: Settings) -> ModelRefResolved:
        namespace = None if isinstance(model, ClusterBaseModel) else model.namespace
        return cls(model.name, namespace, model_path(model, settings))

    @property
    def ready_label(self) -> str:
        return names.model_ready_label(self.name, self.namespace)


def model_path(model: AnyModel, settings: Settings) -> str:
    """Where the weights live on a node: storage.path, else a per-model directory under the models root."""
    if model.spec.storage.path:
        return model.spec.storage.path
    if model.spec.storage.storage_uri.startswith("local:///"):
        # The weights already are on the node: serve them in place.
        return model.spec.storage.storage_uri.removeprefix("local://")
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

    def metadata(self, name: str, component: str, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": {**names.isvc_labels(self.name, component), **(extra_labels or {})},
            "ownerReferences": [self.owner_reference()],
        }
