"""Pydantic JSON schema -> structural OpenAPI v3 schema, as apiextensions.k8s.io/v1 accepts it.

The API server only accepts *structural* schemas: every node says its type, `$ref` does not exist,
`anyOf`/`oneOf` may only narrow types already declared (the one exception the generator uses is
the int-or-string pattern), and `additionalProperties` never sits beside `properties`. Pydantic
emits none of these guarantees, so this module rewrites its output node by node and fails loudly
on anything it does not understand rather than guessing.

Unknown fields: every OmeModel has `extra="allow"`, which pydantic renders as
`additionalProperties: true` beside `properties`. That is exactly the information the CRD needs:
such an object becomes `x-kubernetes-preserve-unknown-fields: true`, so the API server keeps what
the offline loader keeps (OME fields we do not declare survive `kubectl apply`). A model that
forbids or ignores extra fields gets a pruning object instead. The root object is the exception:
its top-level fields are fixed by Kubernetes, so it prunes, and `metadata` only names `name`
because the API server rejects any other restriction of ObjectMeta.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ome_operator.api.base import Resource

Schema = dict[str, Any]

INT_OR_STRING = "x-kubernetes-int-or-string"
PRESERVE_UNKNOWN = "x-kubernetes-preserve-unknown-fields"
VALIDATIONS = "x-kubernetes-validations"
# The only anyOf a structural schema may carry without declaring the types elsewhere.
INT_OR_STRING_ANY_OF = [{"type": "integer"}, {"type": "string"}]

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
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
        "x-kubernetes-embedded-resource",
    }
)
# `title` is pydantic's field name again. `default` is dropped on purpose: the API server would
# persist defaults into every object, while the loader keeps only what was written (exclude_unset),
# and render/status apply defaults in code where they are visible.
_DROPPED_KEYS = frozenset({"title", "default", "examples"})
# Handled by the converter itself.
_STRUCTURE_KEYS = frozenset({"$ref", "anyOf", "oneOf", "allOf", "const", "properties", "items", "additionalProperties"})


class SchemaError(ValueError):
    """The models contain something the generator cannot turn into a structural schema."""


def openapi_schema(resource: type[Resource]) -> Schema:
    """The structural openAPIV3Schema of one kind, with every `$ref` inlined."""
    raw = resource.model_json_schema(by_alias=True, mode="validation")
    converter = _Converter(raw.pop("$defs", {}))
    schema = converter.convert(raw, resource.crd.kind, ())
    return _envelope(schema, resource)


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
    def __init__(self, defs: Mapping[str, Schema]) -> None:
        self._defs = defs

    def convert(self, node: Schema, path: str, inlining: tuple[str, ...]) -> Schema:
        """Convert one node; `inlining` is the chain of $defs being expanded, to stop recursion."""
        node, inlining = self._resolve(node, path, inlining)
        _reject_unknown_keys(node, path)
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
                        "use Quantity for int-or-string or Unstructured for free-form values"
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
            # additionalProperties beside properties is not structural; true means the model keeps
            # unknown fields, which the API server only does with preserve-unknown-fields.
            if extra is True:
                out[PRESERVE_UNKNOWN] = True
            elif isinstance(extra, dict):
                raise SchemaError(f"{path}: typed extra fields beside declared properties are not structural")
        elif isinstance(extra, dict) and extra:
            out["additionalProperties"] = self.convert(extra, f"{path}{{}}", inlining)
        elif extra is not False:
            # dict[str, Any] or a model without fields: nothing to check, keep everything.
            out[PRESERVE_UNKNOWN] = True


def _int_or_string(out: Schema, node: Schema, path: str) -> Schema:
    types = sorted(str(v.get("type")) for v in node.get("anyOf", INT_OR_STRING_ANY_OF))
    if types != ["integer", "string"]:
        raise SchemaError(f"{path}: x-kubernetes-int-or-string needs exactly integer and string, got {types}")
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
