"""Shared building blocks of the ome.io/v1beta1 API models.

Every model accepts fields it does not declare and keeps them (`extra="allow"`), so OME YAML loads
without loss and fields we do not act on yet survive a round trip. Pass-through Kubernetes types
(pod fields, probes, affinity) are kept as plain mappings: the CRD marks them
`x-kubernetes-preserve-unknown-fields` instead of inlining the PodSpec schema five times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import pydantic
from pydantic import ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

GROUP = "ome.io"
VERSION = "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"

# A Kubernetes resource.Quantity: YAML gives `8` or `"8"` or `"20Gi"`; both spellings are kept as written.
Quantity = Annotated[
    int | str,
    WithJsonSchema({"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}),
]

# A Kubernetes object we pass through to the pods unchanged (Affinity, Probe, SecurityContext, ...).
Unstructured = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]


class OmeModel(pydantic.BaseModel):
    """Base of every API type: camelCase on the wire, unknown fields kept."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        protected_namespaces=(),
        # The CRD generator reads descriptions from docstrings of nested types too.
        use_attribute_docstrings=False,
    )

    def to_dict(self) -> dict[str, Any]:
        """The object as it was written (only fields that were set), camelCase keys."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


def desc(text: str, **kwargs: Any) -> Any:
    """A pydantic Field with a description (every CRD field carries one)."""
    return Field(description=text, **kwargs)


class ObjectMeta(OmeModel):
    """The subset of metav1.ObjectMeta the operator reads; the rest is kept as written."""

    name: str = desc("Name of the object, unique within its namespace (or the cluster for cluster kinds).")
    namespace: str | None = desc("Namespace of a namespaced object.", default=None)
    labels: dict[str, str] | None = desc("Labels of the object.", default=None)
    annotations: dict[str, str] | None = desc("Annotations of the object.", default=None)
    uid: str | None = desc("UID assigned by the API server.", default=None)
    generation: int | None = desc("Generation of the spec, assigned by the API server.", default=None)
    resource_version: str | None = desc("Resource version assigned by the API server.", default=None)
    creation_timestamp: str | None = desc("Creation time assigned by the API server.", default=None)
    deletion_timestamp: str | None = desc("Set when the object is being deleted.", default=None)


class Condition(OmeModel):
    """A status condition shaped like metav1.Condition."""

    type: str = desc("Type of the condition, e.g. Ready, ModelReady, EngineReady.")
    status: str = desc("True, False or Unknown.")
    reason: str | None = desc("One CamelCase word saying why the condition has its status.", default=None)
    message: str | None = desc("What is happening and, when something is wrong, what to do.", default=None)
    last_transition_time: str | None = desc("When the status last changed (RFC 3339).", default=None)
    observed_generation: int | None = desc("The spec generation this condition was computed from.", default=None)
    severity: str | None = desc("OME compatibility: Error, Warning or Info.", default=None)


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class CrdInfo:
    """What the CRD generator needs besides the schema."""

    kind: str
    plural: str
    scope: str  # "Namespaced" or "Cluster"
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ("ome",)
    printer_columns: tuple[PrinterColumn, ...] = ()
    # CEL rules on the whole object: (rule, message, fieldPath or "")
    validations: tuple[tuple[str, str, str], ...] = ()
    status_subresource: bool = True
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Resource(OmeModel):
    """A top-level ome.io object: apiVersion, kind, metadata, spec, status."""

    crd: ClassVar[CrdInfo]

    api_version: str = desc("ome.io/v1beta1", default=API_VERSION)
    kind: str = desc("The kind of the object.")
    metadata: ObjectMeta = desc("Standard object metadata.")

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str | None:
        return self.metadata.namespace
