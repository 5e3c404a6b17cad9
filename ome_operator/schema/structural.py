"""What the API server checks before it accepts a CRD schema, restated for offline use.

`structural_problems` follows apiextensions-apiserver's ValidateStructural (k8s.io/apiextensions-
apiserver/pkg/apiserver/schema/validation.go) for the constructs the generator can produce: every
node has a type unless it is int-or-string or preserves unknown fields, `$ref` does not exist, the
only `anyOf` is the int-or-string pattern, `additionalProperties` never sits beside `properties`
nor at the root, arrays have items, and metadata at the root restricts only `name`/`generateName`.
Running it during generation means a CRD the server would reject is never written.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .openapi import INT_OR_STRING, INT_OR_STRING_ANY_OF, PRESERVE_UNKNOWN, Schema

_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean"})
# JSON Schema keywords a structural schema may not use at all.
# (`default` is allowed: the generator emits one only where the API server demands it, on a
# list-map key that is not required.)
_FORBIDDEN = frozenset({"$ref", "$defs", "definitions", "oneOf", "not", "allOf", "const", "title"})


def structural_problems(schema: Schema) -> list[str]:
    """Every reason the API server would call this schema non-structural (empty when it is fine)."""
    return list(_node_problems(schema, "", root=True))


def _node_problems(node: Any, path: str, *, root: bool = False) -> Iterator[str]:
    where = path or "<root>"
    if not isinstance(node, dict):
        yield f"{where}: schema node is not a mapping"
        return
    for key in sorted(_FORBIDDEN & set(node)):
        yield f"{where}: {key} is not allowed in a structural schema"
    yield from _type_problems(node, where, root=root)
    if "anyOf" in node and not (node.get(INT_OR_STRING) and node["anyOf"] == INT_OR_STRING_ANY_OF):
        yield f"{where}: anyOf is only allowed as the int-or-string pattern"
    if node.get(INT_OR_STRING) and node.get(PRESERVE_UNKNOWN):
        yield f"{where}: int-or-string and preserve-unknown-fields exclude each other"
    properties = node.get("properties")
    extra = node.get("additionalProperties")
    if properties is not None and extra is not None:
        yield f"{where}: additionalProperties beside properties is not structural"
    if root and extra is not None:
        yield f"{where}: additionalProperties is not allowed at the root"
    if isinstance(extra, bool):
        yield f"{where}: additionalProperties must be a schema (use x-kubernetes-preserve-unknown-fields)"
    elif extra is not None:
        yield from _node_problems(extra, f"{path}{{}}")
    if node.get("type") == "array":
        if "items" not in node:
            yield f"{where}: array without items"
        else:
            yield from _node_problems(node["items"], f"{path}[]")
            yield from _list_map_problems(node, where)
    for name, child in sorted((properties or {}).items()):
        child_path = f"{path}.{name}"
        if root and name == "metadata":
            yield from _metadata_problems(child, child_path)
        else:
            yield from _node_problems(child, child_path)


def _list_map_problems(node: Schema, where: str) -> Iterator[str]:
    """A list-map's keys must be scalar properties of its items, each required or defaulted."""
    if node.get("x-kubernetes-list-type") != "map":
        return
    items = node["items"]
    required = set(items.get("required", []))
    for key in node.get("x-kubernetes-list-map-keys") or [None]:
        prop = (items.get("properties") or {}).get(key) if key else None
        if prop is None:
            yield f"{where}: list-map key {key!r} is not a property of the items"
        elif prop.get("type") in ("object", "array"):
            yield f"{where}: list-map key {key!r} must be a scalar"
        elif key not in required and "default" not in prop:
            yield f"{where}: list-map key {key!r} must be required or have a default"


def _type_problems(node: Schema, where: str, *, root: bool) -> Iterator[str]:
    kind = node.get("type")
    if kind is None:
        if not (node.get(INT_OR_STRING) or node.get(PRESERVE_UNKNOWN)):
            yield f"{where}: no type (and neither int-or-string nor preserve-unknown-fields)"
    elif kind not in _TYPES:
        yield f"{where}: unknown type {kind!r}"
    elif node.get(INT_OR_STRING):
        yield f"{where}: int-or-string must not declare a type"
    if root and kind != "object":
        yield f"{where}: the root must be an object"


def _metadata_problems(node: Any, path: str) -> Iterator[str]:
    if not isinstance(node, dict) or node.get("type") != "object":
        yield f"{path}: metadata must be type object"
        return
    extra_keys = set(node) - {"type", "properties"}
    extra_properties = set(node.get("properties") or {}) - {"name", "generateName"}
    if extra_keys or extra_properties:
        yield f"{path}: metadata may only restrict name and generateName, found {sorted(extra_keys | extra_properties)}"
