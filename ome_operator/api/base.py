"""Shared building blocks of the ome.io/v1beta1 API models.

Every model is closed (`extra="forbid"`) and strict about types, as the API server is with
structural schemas and strict field validation: `spec.engin` or `runner.imagee` is refused with
its path offline exactly as `kubectl apply` refuses it. Two exceptions keep what they are given:
ObjectMeta (the API server owns metadata) and the typed views of Kubernetes objects below, whose
undeclared fields are checked against the Kubernetes definition instead.

Kubernetes types (PodSpec fields, Container, Volume, Affinity, Probe, ...) are not restated here.
A field names the definition it holds, `Annotated[dict[str, Any], K8s("io.k8s.api.core.v1.Affinity")]`,
and a model that is a typed view of one sets `k8s = K8s(...)` (K8sObject). The definitions are
vendored from the pinned Kubernetes release into ome_operator/schema/kubernetes-definitions.json
(see ome_operator/schema/kubernetes.py); the CRD generator inlines them, and validation here walks
the same file, so the offline loader and the API server agree on every embedded object.

Cross-field rules are `Rule`s: one CEL expression for the API server (x-kubernetes-validations on
the model's schema node) and its Python twin for the offline loader, side by side.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self

import pydantic
from pydantic import ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler, WithJsonSchema, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import CoreSchema, InitErrorDetails, PydanticCustomError, PydanticKnownError, core_schema

GROUP = "ome.io"
VERSION = "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"

MAX_INT32 = 2**31 - 1
MAX_INT64 = 2**63 - 1

Schema = dict[str, Any]
Loc = tuple[str | int, ...]

# A genuinely free-form value (OME's raw JSON fields): kept as written, nothing to check.
Unstructured = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]

# --- Kubernetes definitions ------------------------------------------------------------------------------------------

# Written by `python -m ome_operator.schema --vendor-kubernetes`; data shared with the CRD generator.
KUBERNETES_DEFINITIONS_FILE = "kubernetes-definitions.json"
_DEFINITIONS_PATH = Path(__file__).resolve().parent.parent / "schema" / KUBERNETES_DEFINITIONS_FILE
# The JSON-schema key by which a model tells the CRD generator which definition to inline.
K8S_MARKER = "x-ome-kubernetes"
CORE = "io.k8s.api.core.v1."
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"

# A resource.Quantity as Kubernetes parses it, without a sign: every quantity a pod spec holds
# (requests, limits, overhead, sizeLimit) must be non-negative, so `nvidia.com/gpu: -1` or
# `memory: 20 Gi` is refused at admission instead of by the pod API after the workload exists.
QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# Kubernetes object names, for references to models and runtimes and for the names themselves.
DNS_1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS_1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
MAX_SUBDOMAIN = 253
MAX_LABEL = 63
# What a pattern means, for offline messages (the API server can only quote the pattern).
PATTERN_MEANINGS = {
    QUANTITY_PATTERN: "a non-negative quantity such as 8, 500m or 20Gi",
    DNS_1123_SUBDOMAIN: "a DNS subdomain: lowercase letters, digits, '-' and '.'",
}
_PORT = {"minimum": 1, "maximum": 65535}
# Bounds Kubernetes' OpenAPI leaves to the pod API's own validation, added to the vendored
# definitions (definition, property or None for the definition itself) wherever they are used.
K8S_REFINEMENTS: Mapping[tuple[str, str | None], Schema] = {
    (QUANTITY, None): {"pattern": QUANTITY_PATTERN, "minimum": 0},
    (CORE + "ContainerPort", "containerPort"): _PORT,
    # 0 is how a pod spec says "no host port".
    (CORE + "ContainerPort", "hostPort"): {"minimum": 0, "maximum": 65535},
    (CORE + "GRPCAction", "port"): _PORT,
}


@functools.cache
def kubernetes_definitions() -> Mapping[str, Schema]:
    """The vendored Kubernetes definitions with K8S_REFINEMENTS applied (read once)."""
    document = json.loads(_DEFINITIONS_PATH.read_text())
    definitions: dict[str, Schema] = document["definitions"]
    for (name, prop), extra in K8S_REFINEMENTS.items():
        target = definitions[name] if prop is None else definitions[name]["properties"][prop]
        target.update(extra)
    return definitions


@dataclass(frozen=True)
class K8s:
    """The Kubernetes definition a value holds, as OME embeds it.

    `optional`: required fields of the definition that OME's embedding makes optional (a runner's
    `name`, a component PodSpec's `containers`). `only`: the properties OME's type keeps, when it
    embeds a subset (ServingRuntimePodSpec); None keeps all.
    """

    definition: str
    optional: tuple[str, ...] = ()
    only: tuple[str, ...] | None = None

    def marker(self) -> Schema:
        out: Schema = {"definition": self.definition}
        if self.optional:
            out["optional"] = list(self.optional)
        if self.only is not None:
            out["only"] = list(self.only)
        return out

    def schema(self) -> Schema:
        """The definition as this embedding declares it (still with `$ref`s to other definitions)."""
        return embedded_definition(self.definition, self.optional, self.only)

    def problems(self, value: Any, loc: Loc = ()) -> list[Finding]:
        return list(openapi_problems(value, self.schema(), loc))

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        def check(value: Any, info: core_schema.ValidationInfo) -> Any:
            findings = self.problems(value) if admitting(info.context) else []
            if findings:
                raise validation_error("Kubernetes", findings)
            return value

        return core_schema.with_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> Schema:
        return {K8S_MARKER: self.marker()}


# A resource.Quantity outside a Kubernetes object (OME's accelerator memory bounds).
Quantity = Annotated[int | str, K8s(QUANTITY)]


def embedded_definition(name: str, optional: tuple[str, ...] = (), only: tuple[str, ...] | None = None) -> Schema:
    definition = kubernetes_definitions()[name]
    if not optional and only is None:
        return definition
    out = dict(definition)
    properties = definition.get("properties") or {}
    missing = [key for key in (*optional, *(only or ())) if key not in properties]
    if missing:
        raise KeyError(f"{name} has no properties {missing}")
    if only is not None:
        out["properties"] = {key: child for key, child in properties.items() if key in only}
    required = [key for key in definition.get("required", []) if key not in optional and key in out["properties"]]
    if required:
        out["required"] = required
    else:
        out.pop("required", None)
    return out


# --- validation against an OpenAPI schema, as the API server does it ------------------------------------------------

UNKNOWN_FIELD = "unknown field"
NULL_VALUE = "null value (the API server drops it)"
_INT_RANGES = {"int32": (-(2**31), MAX_INT32), "int64": (-(2**63), MAX_INT64)}
_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}


@dataclass(frozen=True)
class Finding:
    """One thing the API server would refuse (or, for UNKNOWN_FIELD and NULL_VALUE, drop)."""

    loc: Loc
    reason: str


def openapi_problems(value: Any, schema: Schema, loc: Loc = (), *, report_nulls: bool = False) -> Iterator[Finding]:
    """Every problem of `value` against a structural schema; `$ref`s name vendored Kubernetes definitions.

    Follows what kube-apiserver checks for a custom resource with strict field validation: types
    (int-or-string, int32/int64 ranges), enum, bounds, patterns, lengths, required and unknown
    fields, and duplicate keys of list-maps and sets. CEL rules are not evaluated here.
    """
    if "$ref" in schema:
        schema = {**kubernetes_definitions()[schema["$ref"]], **{k: v for k, v in schema.items() if k != "$ref"}}
    if value is None:
        if report_nulls and not schema.get("nullable"):
            yield Finding(loc, NULL_VALUE)
        return
    if schema.get("x-kubernetes-int-or-string"):
        if not _JSON_TYPES["integer"](value) and not isinstance(value, str):
            yield Finding(loc, f"must be of type integer or string, got {_json_type(value)}")
            return
    elif "type" in schema and not _JSON_TYPES[schema["type"]](value):
        yield Finding(loc, f"must be of type {schema['type']}, got {_json_type(value)}")
        return
    elif "type" not in schema and schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    yield from (Finding(loc, reason) for reason in _value_problems(value, schema))
    if isinstance(value, dict):
        yield from _object_problems(value, schema, loc, report_nulls)
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            yield from openapi_problems(item, schema["items"], (*loc, index), report_nulls=report_nulls)
        yield from _list_problems(value, schema, loc)


def _object_problems(value: dict[str, Any], schema: Schema, loc: Loc, report_nulls: bool) -> Iterator[Finding]:
    properties = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    for key, child in value.items():
        if key in properties:
            yield from openapi_problems(child, properties[key], (*loc, key), report_nulls=report_nulls)
        elif isinstance(extra, dict):
            yield from openapi_problems(child, extra, (*loc, key), report_nulls=report_nulls)
        elif not schema.get("x-kubernetes-preserve-unknown-fields"):
            yield Finding((*loc, key), UNKNOWN_FIELD)
    for key in schema.get("required", []):
        if value.get(key) is None:
            yield Finding((*loc, key), "Required value")


def _list_problems(value: list[Any], schema: Schema, loc: Loc) -> Iterator[Finding]:
    list_type = schema.get("x-kubernetes-list-type")
    if list_type not in ("map", "set"):
        return
    seen: dict[str, int] = {}
    for index, item in enumerate(value):
        if list_type == "map":
            if not isinstance(item, dict):
                continue
            item_schema = schema["items"]
            if "$ref" in item_schema:
                item_schema = kubernetes_definitions()[item_schema["$ref"]]
            props = item_schema.get("properties") or {}
            key = {k: item.get(k, (props.get(k) or {}).get("default")) for k in schema["x-kubernetes-list-map-keys"]}
        else:
            key = item
        text = json.dumps(key, sort_keys=True)
        if text in seen:
            yield Finding((*loc, index), f"Duplicate value: {text}")
        seen[text] = index


def _value_problems(value: Any, schema: Schema) -> Iterator[str]:
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(json.dumps(v) for v in schema["enum"])
        yield f"Unsupported value: {json.dumps(value)}: supported values: {supported}"
    if _JSON_TYPES["number"](value):
        low, high = _INT_RANGES.get(schema.get("format", ""), (None, None))
        if low is not None and high is not None and isinstance(value, int) and not low <= value <= high:
            yield f"must fit in {schema['format']}"
        if "minimum" in schema and value < schema["minimum"]:
            yield f"should be greater than or equal to {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            yield f"should be less than or equal to {schema['maximum']}"
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            yield f"Too long: may not be more than {schema['maxLength']} characters"
        if "minLength" in schema and len(value) < schema["minLength"]:
            yield f"should be at least {schema['minLength']} chars long"
        if "pattern" in schema and not re.search(schema["pattern"], value):
            meaning = PATTERN_MEANINGS.get(schema["pattern"])
            yield f"must be {meaning}" if meaning else f"should match '{schema['pattern']}'"
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            yield f"Too many: {len(value)}: must have at most {schema['maxItems']} items"
        if "minItems" in schema and len(value) < schema["minItems"]:
            yield f"should have at least {schema['minItems']} items"


def _json_type(value: Any) -> str:
    for name in ("boolean", "integer", "number", "string", "array", "object"):
        if _JSON_TYPES[name](value):
            return name
    return type(value).__name__


_ERROR_TYPE = "kubernetes"


def validation_error(title: str, findings: list[Finding], more: list[Any] | None = None) -> pydantic.ValidationError:
    """The findings (and pydantic's own errors in `more`) as one ValidationError, located like pydantic's."""
    errors: list[Any] = [_error_details(f) for f in findings]
    for error in more or []:
        # pydantic re-raises its own error types by name; ours must be rebuilt.
        if error["type"] == _ERROR_TYPE:
            errors.append(_error_details(Finding(tuple(error["loc"]), error["msg"])))
        else:
            errors.append(error)
    return pydantic.ValidationError.from_exception_data(title, errors)


def _error_details(finding: Finding) -> InitErrorDetails:
    # The reason goes through the context so braces in a pattern are not read as placeholders.
    error = PydanticCustomError(_ERROR_TYPE, "{reason}", {"reason": finding.reason})
    return InitErrorDetails(type=error, loc=finding.loc, input=None)


# --- the models ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A cross-field rule: CEL for the API server and the same condition in Python for the offline loader.

    `field_path` is where the API server reports a broken rule, relative to the object carrying it
    (".minReplicas"), or "" for the object itself; `holds` gets the pydantic object.
    """

    cel: str
    message: str
    field_path: str
    holds: Callable[[Any], bool]

    def validation(self) -> Schema:
        out: Schema = {"rule": self.cel, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


def class_rules(cls: type) -> list[Rule]:
    """The rules a model class carries, its bases' first (each class lists only its own)."""
    rules: list[Rule] = []
    for klass in reversed(cls.__mro__):
        for rule in vars(klass).get("rules", ()):
            if rule not in rules:
                rules.append(rule)
    return rules


def _schema_extra(schema: Schema, cls: type) -> None:
    rules = class_rules(cls)
    if rules:
        schema["x-kubernetes-validations"] = [rule.validation() for rule in rules]
    k8s = getattr(cls, "k8s", None)
    if isinstance(k8s, K8s):
        schema[K8S_MARKER] = k8s.marker()


class OmeModel(pydantic.BaseModel):
    """Base of every API type: camelCase on the wire, closed, strict about types."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        strict=True,
        protected_namespaces=(),
        json_schema_extra=_schema_extra,
    )
    rules: ClassVar[tuple[Rule, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """The object as it was written (only fields that were set), camelCase keys."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class K8sObject(OmeModel):
    """A typed view of a Kubernetes object (`k8s`), possibly with OME's own fields added.

    The declared fields are what the operator reads; every other field of the definition is kept
    as written. Validation checks the whole Kubernetes part against the vendored definition
    (unknown fields, types, bounds), then lets pydantic validate the declared fields; fields the
    definition does not have (OME's additions, like `runner` on a component) are pydantic's alone.
    """

    model_config = ConfigDict(extra="allow")
    k8s: ClassVar[K8s]

    @classmethod
    def own_fields(cls) -> dict[str, str]:
        """Python name -> alias of the declared fields that are not part of the Kubernetes definition."""
        properties = embedded_definition(cls.k8s.definition).get("properties") or {}
        return {
            name: info.alias or name
            for name, info in cls.model_fields.items()
            if (info.alias or name) not in properties
        }

    @model_validator(mode="wrap")
    @classmethod
    def _check_kubernetes_part(
        cls, data: Any, handler: pydantic.ModelWrapValidatorHandler[Self], info: pydantic.ValidationInfo
    ) -> Self:
        # The API server has validated what it admitted: checking again on every read costs time.
        if not isinstance(data, dict) or not admitting(info.context):
            return handler(data)
        aliases = {name: info.alias or name for name, info in cls.model_fields.items()}
        own = set(cls.own_fields().values())
        kubernetes = {aliases.get(k, k): v for k, v in data.items() if aliases.get(k, k) not in own}
        findings = cls.k8s.problems(kubernetes)
        if not findings:
            return handler(data)
        # Report OME's own fields too, without the Kubernetes part pydantic would report twice.
        more: list[Any] = []
        try:
            handler({k: v for k, v in data.items() if aliases.get(k, k) in own})
        except pydantic.ValidationError as exc:
            more = list(exc.errors())
        raise validation_error(cls.__name__, findings, more)


def desc(
    text: str,
    *,
    ge: int | None = None,
    le: int | None = None,
    pattern: str | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    **kwargs: Any,
) -> Any:
    """A pydantic Field with a description (every CRD field carries one) and its admission bounds."""
    info = Field(description=text, **kwargs)
    if (ge, le, pattern, min_length, max_length) != (None, None, None, None, None):
        info.metadata.append(Bound(ge, le, pattern, min_length, max_length))
    return info


def admitting(context: Any) -> bool:
    """Whether a validation is admission (the offline loader: check everything the API server checks).

    Without it, an object is one the API server already admitted, possibly before a bound existed:
    it still parses, and the resolver reports what is out of bounds as a condition.
    """
    return isinstance(context, dict) and context.get("admission") is True


ADMISSION = {"admission": True}


@dataclass(frozen=True)
class Bound:
    """Bounds the API server enforces at admission (CRD keywords), checked by the loader in the same words as pydantic."""

    ge: int | None = None
    le: int | None = None
    pattern: str | None = None
    min_length: int | None = None
    max_length: int | None = None

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.with_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> Schema:
        out: Schema = handler(schema)
        is_list = "array" in {v.get("type") for v in [out, *out.get("anyOf", [])]}
        keys = {
            "minimum": self.ge,
            # The API server reads bounds as float64, where 2**63-1 overflows: say int64 instead.
            "maximum": None if self.le == MAX_INT64 else self.le,
            "format": "int64" if self.le == MAX_INT64 else None,
            "pattern": self.pattern,
            "minItems" if is_list else "minLength": self.min_length,
            "maxItems" if is_list else "maxLength": self.max_length,
        }
        out.update({key: value for key, value in keys.items() if value is not None})
        return out

    def _check(self, value: Any, info: core_schema.ValidationInfo) -> Any:
        if value is None or not admitting(info.context):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.ge is not None and value < self.ge:
                raise PydanticKnownError("greater_than_equal", {"ge": self.ge})
            if self.le is not None and value > self.le:
                raise PydanticKnownError("less_than_equal", {"le": self.le})
        if isinstance(value, str) and self.pattern is not None and not re.search(self.pattern, value):
            meaning = PATTERN_MEANINGS.get(self.pattern)
            if meaning:
                raise PydanticCustomError("string_pattern_mismatch", "must be {meaning}", {"meaning": meaning})
            raise PydanticKnownError("string_pattern_mismatch", {"pattern": self.pattern})
        if isinstance(value, str):
            if self.min_length is not None and len(value) < self.min_length:
                raise PydanticKnownError("string_too_short", {"min_length": self.min_length})
            if self.max_length is not None and len(value) > self.max_length:
                raise PydanticKnownError("string_too_long", {"max_length": self.max_length})
        if isinstance(value, list):
            sizes = {"field_type": "List", "actual_length": len(value)}
            if self.min_length is not None and len(value) < self.min_length:
                raise PydanticKnownError("too_short", {"min_length": self.min_length, **sizes})
            if self.max_length is not None and len(value) > self.max_length:
                raise PydanticKnownError("too_long", {"max_length": self.max_length, **sizes})
        return value


class ObjectMeta(OmeModel):
    """The subset of metav1.ObjectMeta the operator reads; the rest is kept as written."""

    # The API server owns metadata (managedFields, ownerReferences, ...) and validates it itself.
    model_config = ConfigDict(extra="allow")

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
    observed_generation: int | None = desc(
        "The spec generation this condition was computed from.", default=None, ge=0, le=MAX_INT64
    )
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
    """What the CRD generator needs besides the schema (rules on the whole object are the Resource's `rules`)."""

    kind: str
    plural: str
    scope: str  # "Namespaced" or "Cluster"
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ("ome",)
    printer_columns: tuple[PrinterColumn, ...] = ()
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
