"""Pydantic JSON schema -> structural OpenAPI v3 schema, as apiextensions.k8s.io/v1 accepts it.

The API server only accepts *structural* schemas: every node says its type, `$ref` does not exist,
`anyOf`/`oneOf` may only narrow types already declared (the one exception the generator uses is
the int-or-string pattern), and `additionalProperties` never sits beside `properties`. Pydantic
emits none of these guarantees, so this module rewrites its output node by node and fails loudly
on anything it does not understand rather than guessing.

Unknown fields: every API model is closed, so every object prunes, and with strict field
validation (kubectl's default) the API server refuses an unknown field with its path. Only values
OME declares free-form (`Unstructured`) keep unknown fields. The root's top-level fields are
fixed by Kubernetes, and `metadata` only names `name` because the API server rejects any other
restriction of ObjectMeta.

Kubernetes types: a node carrying the K8s marker (base.K8S_MARKER) is replaced by the vendored
Kubernetes definition it names, inlined with every reference it makes (a CRD has no `$ref`); a
typed view (base.K8sObject) adds OME's own fields to the definition's. Vendored nodes carry no
descriptions (they would multiply every CRD's size); `kubernetes_paths` tells which nodes they are.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ome_operator.api.base import K8S_MARKER, K8s, Resource, embedded_definition, kubernetes_definitions

Schema = dict[str, Any]

INT_OR_STRING = "x-kubernetes-int-or-string"
PRESERVE_UNKNOWN = "x-kubernetes-preserve-unknown-fields"
VALIDATIONS = "x-kubernetes-validations"
LIST_MAP_KEYS = "x-kubernetes-list-map-keys"
# The only anyOf a structural schema may carry without declaring the types elsewhere.
INT_OR_STRING_ANY_OF = [{"type": "integer"}, {"type": "string"}]
# Value validations an int-or-string node may carry for either of its two types.
_INT_OR_STRING_VALUE_KEYS = frozenset({"minimum", "maximum", "pattern", "minLength", "maxLength", "format"})

# Keys copied unchanged: plain OpenAPI value validations and the Kubernetes extensions.
_KEPT_KEYS = frozenset(
    {
        "type",
        "description",
        "enum",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minProperties",
        "maxProperties",
        "required",
        "nullable",
        INT_OR_STRING,
        PRESERVE_UNKNOWN,
        VALIDATIONS,
        "x-kubernetes-list-type",
        LIST_MAP_KEYS,
        "x-kubernetes-map-type",
        "x-kubernetes-embedded-resource",
    }
)
# `title` is pydantic's field name again. `default` is dropped on purpose: the API server would
# persist defaults into every object, while the loader keeps only what was written (exclude_unset),
# and render/status apply defaults in code where they are visible. (Vendored list-map keys keep
# theirs: the API server requires one on a key that is not required.)
_DROPPED_KEYS = frozenset({"title", "default", "examples"})
# Handled by the converter itself.
_STRUCTURE_KEYS = frozenset(
    {"$ref", "anyOf", "oneOf", "allOf", "const", "properties", "items", "additionalProperties", K8S_MARKER}
)


class SchemaError(ValueError):
    """The models contain something the generator cannot turn into a structural schema."""


def openapi_schema(resource: type[Resource]) -> Schema:
    """The structural openAPIV3Schema of one kind, with every `$ref` inlined."""
    return _convert_resource(resource)[0]


def kubernetes_paths(resource: type[Resource]) -> set[str]:
    """Paths (".spec.engine.hostAliases[]") of the schema nodes inlined from Kubernetes definitions."""
    return _convert_resource(resource)[1]


def _convert_resource(resource: type[Resource]) -> tuple[Schema, set[str]]:
    raw = resource.model_json_schema(by_alias=True, mode="validation")
    converter = _Converter(raw.pop("$defs", {}), resource.crd.kind)
    schema = converter.convert(raw, resource.crd.kind, ())
    return _envelope(schema, resource), converter.kubernetes_paths


def _envelope(schema: Schema, resource: type[Resource]) -> Schema:
    """Adjust the root to what Kubernetes allows for the object envelope."""
    schema.pop(PRESERVE_UNKNOWN, None)
    if resource.crd.description:
        schema["description"] = resource.crd.description
    properties = schema["properties"]
    name = properties["metadata"]["properties"]["name"]
    # Only metadata.name may be restricted; naming it lets CEL rules point their fieldPath at it.
    properties["metadata"] = {
        "type": "object",
        "properties": {"name": {"type": "string", "description": name["description"]}},
    }
    required = [key for key in schema.get("required", []) if key != "metadata"]
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)
    return schema


class _Converter:
    def __init__(self, defs: Mapping[str, Schema], kind: str) -> None:
        self._defs = defs
        self._kind = kind
        self.kubernetes_paths: set[str] = set()

    def convert(self, node: Schema, path: str, inlining: tuple[str, ...]) -> Schema:
        """Convert one node; `inlining` is the chain of $defs being expanded, to stop recursion."""
        node, inlining = self._resolve(node, path, inlining)
        _reject_unknown_keys(node, path)
        if K8S_MARKER in node:
            return self._kubernetes(node, path, inlining)
        out: Schema = {key: copy.deepcopy(value) for key, value in node.items() if key in _KEPT_KEYS}
        if "const" in node:
            out["enum"] = [node["const"]]
        if node.get(INT_OR_STRING):
            return _int_or_string(out, node, path)
        if "type" not in out:
            _infer_type(out, node, path)
        if out["type"] == "array":
            if "items" not in node:
                raise SchemaError(f"{path}: array without items")
            out["items"] = self.convert(node["items"], f"{path}[]", inlining)
        elif out["type"] == "object":
            self._convert_object(out, node, path, inlining)
        return out

    def _resolve(self, node: Schema, path: str, inlining: tuple[str, ...]) -> tuple[Schema, tuple[str, ...]]:
        """Inline `$ref`, single-element `allOf` and `Optional` unions until the node is concrete."""
        while True:
            if "$ref" in node:
                name = str(node["$ref"]).rsplit("/", 1)[-1]
                if name in inlining:
                    raise SchemaError(f"{path}: recursive model {name} cannot be inlined into a CRD")
                if name not in self._defs:
                    raise SchemaError(f"{path}: unresolvable $ref {node['$ref']}")
                # The referencing field's own keys (its description above all) win over the model's.
                node = {**self._defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
                inlining = (*inlining, name)
            elif "allOf" in node:
                if len(node["allOf"]) != 1:
                    raise SchemaError(f"{path}: allOf with several schemas is not supported")
                node = {**node["allOf"][0], **{k: v for k, v in node.items() if k != "allOf"}}
            elif "anyOf" in node or "oneOf" in node:
                key = "anyOf" if "anyOf" in node else "oneOf"
                variants = [v for v in node[key] if v != {"type": "null"}]
                rest = {k: v for k, v in node.items() if k != key}
                if node.get(INT_OR_STRING):
                    return {**rest, "anyOf": variants}, inlining
                if len(variants) != 1:
                    raise SchemaError(
                        f"{path}: a union of {len(variants)} types is not structural; "
                        "use an int-or-string marker or Unstructured for free-form values"
                    )
                node = {**variants[0], **rest}
            else:
                return node, inlining

    def _convert_object(self, out: Schema, node: Schema, path: str, inlining: tuple[str, ...]) -> None:
        properties = node.get("properties")
        extra = node.get("additionalProperties")
        if properties:
            out["properties"] = {}
            for name, child in properties.items():
                child_path = f"{path}.{name}"
                converted = self.convert(child, child_path, inlining)
                if not converted.get("description"):
                    raise SchemaError(f"{child_path}: field has no description (use desc() in ome_operator/api)")
                out["properties"][name] = converted
            # Only ObjectMeta keeps unknown fields beside declared ones, and the envelope replaces it.
            if extra is True:
                out[PRESERVE_UNKNOWN] = True
            elif isinstance(extra, dict):
                raise SchemaError(f"{path}: typed extra fields beside declared properties are not structural")
        elif isinstance(extra, dict) and extra:
            out["additionalProperties"] = self.convert(extra, f"{path}{{}}", inlining)
        elif extra is not False:
            # dict[str, Any] or a model without fields: nothing to check, keep everything.
            out[PRESERVE_UNKNOWN] = True
        _check_field_paths(out, path)

    def _kubernetes(self, node: Schema, path: str, inlining: tuple[str, ...]) -> Schema:
        """A Kubernetes definition inlined; for a typed view, plus the model's own fields and rules."""
        marker = node[K8S_MARKER]
        only = marker.get("only")
        k8s = K8s(marker["definition"], tuple(marker.get("optional", ())), tuple(only) if only is not None else None)
        try:
            definition = k8s.schema()
        except KeyError as exc:
            raise SchemaError(f"{path}: {exc}; run `python -m ome_operator.schema --vendor-kubernetes`") from exc
        out = self._vendored(definition, path, (k8s.definition,))
        if node.get("description"):
            out["description"] = node["description"]
        own = node.get("properties") or {}
        if own:
            kubernetes_fields = set(embedded_definition(k8s.definition).get("properties") or {})
            for name, child in own.items():
                if name in kubernetes_fields:
                    continue
                converted = self.convert(child, f"{path}.{name}", inlining)
                if not converted.get("description"):
                    raise SchemaError(f"{path}.{name}: field has no description (use desc() in ome_operator/api)")
                out.setdefault("properties", {})[name] = converted
            required = [*out.get("required", []), *(k for k in node.get("required", []) if k not in kubernetes_fields)]
            if required:
                out["required"] = required
            if node.get(VALIDATIONS):
                out[VALIDATIONS] = copy.deepcopy(node[VALIDATIONS])
                _check_field_paths(out, path)
        return out

    def _vendored(self, node: Schema, path: str, inlining: tuple[str, ...]) -> Schema:
        """A node of a vendored definition, with its references inlined."""
        self.kubernetes_paths.add(path.removeprefix(self._kind))
        if "$ref" in node:
            name = node["$ref"]
            if name in inlining:
                raise SchemaError(f"{path}: recursive Kubernetes definition {name} cannot be inlined into a CRD")
            node = {**kubernetes_definitions()[name], **{k: v for k, v in node.items() if k != "$ref"}}
            inlining = (*inlining, name)
        unknown = set(node) - _KEPT_KEYS - {"default", "properties", "items", "additionalProperties", "$ref"}
        if unknown:
            raise SchemaError(f"{path}: keys the CRD generator does not know in a Kubernetes definition: {unknown}")
        out: Schema = {key: copy.deepcopy(value) for key, value in node.items() if key in _KEPT_KEYS | {"default"}}
        if out.get(INT_OR_STRING):
            out["anyOf"] = copy.deepcopy(INT_OR_STRING_ANY_OF)
            return out
        if "properties" in node:
            out["properties"] = {
                name: self._vendored(child, f"{path}.{name}", inlining) for name, child in node["properties"].items()
            }
        if "items" in node:
            out["items"] = self._vendored(node["items"], f"{path}[]", inlining)
        if "additionalProperties" in node:
            out["additionalProperties"] = self._vendored(node["additionalProperties"], f"{path}{{}}", inlining)
        return out


def _check_field_paths(node: Schema, path: str) -> None:
    """The API server rejects a rule whose fieldPath does not name a declared property."""
    for rule in node.get(VALIDATIONS, []):
        field_path = rule.get("fieldPath")
        if not field_path:
            continue
        if not field_path.startswith("."):
            raise SchemaError(f"{path}: CEL fieldPath {field_path!r} must start with '.'")
        current = node
        for part in field_path[1:].split("."):
            properties = current.get("properties") or {}
            if part not in properties:
                raise SchemaError(f"{path}: CEL fieldPath {field_path!r} names no declared field ({part!r})")
            current = properties[part]


def _int_or_string(out: Schema, node: Schema, path: str) -> Schema:
    variants: list[Schema] = []
    for variant in node.get("anyOf", INT_OR_STRING_ANY_OF):
        # `Annotated[int | str, Bound(...)] | None`: the bounds sit on an inner anyOf.
        if "anyOf" in variant:
            variants.append({k: v for k, v in variant.items() if k != "anyOf"} | {"type": "integer"})
            variants.extend(v for v in variant["anyOf"] if v.get("type") != "integer")
        else:
            variants.append(variant)
    types = sorted(str(v.get("type")) for v in variants)
    if types != ["integer", "string"]:
        raise SchemaError(f"{path}: x-kubernetes-int-or-string needs exactly integer and string, got {types}")
    # The structural form allows no keys inside the anyOf: each type's bounds move up to the node,
    # where they apply to values of that type only.
    for variant in variants:
        for key, value in variant.items():
            if key == "type":
                continue
            if key not in _INT_OR_STRING_VALUE_KEYS or out.get(key, value) != value:
                raise SchemaError(f"{path}: {key} inside an int-or-string union cannot be expressed structurally")
            out[key] = value
    out.pop("type", None)
    out.pop(PRESERVE_UNKNOWN, None)
    out["anyOf"] = copy.deepcopy(INT_OR_STRING_ANY_OF)
    return out


def _infer_type(out: Schema, node: Schema, path: str) -> None:
    if node.get(PRESERVE_UNKNOWN) or "properties" in node or "additionalProperties" in node:
        out["type"] = "object"
    elif "enum" in out and all(isinstance(v, str) for v in out["enum"]):
        out["type"] = "string"
    elif node == {} or set(node) <= {"description"} | _DROPPED_KEYS:
        # `Any`: an arbitrary JSON value has no structural type.
        raise SchemaError(f"{path}: untyped value (Any); use Unstructured for free-form objects")
    else:
        raise SchemaError(f"{path}: cannot tell the type of {sorted(node)}")


def _reject_unknown_keys(node: Schema, path: str) -> None:
    unknown = set(node) - _KEPT_KEYS - _DROPPED_KEYS - _STRUCTURE_KEYS
    if unknown:
        raise SchemaError(f"{path}: JSON schema keys the CRD generator does not know: {sorted(unknown)}")
