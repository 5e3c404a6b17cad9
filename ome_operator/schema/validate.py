"""Check an object against a generated CRD schema the way the API server would, without one.

Two questions, answered in one walk: would the API server reject the object (type, enum, bounds,
required fields), and would it silently drop part of it? Pruning is the quiet failure mode of a
CRD: a field outside `properties`, under an object without `x-kubernetes-preserve-unknown-fields`,
disappears on apply, and so do nulls of fields that are not nullable. OME YAML must apply unchanged,
so the tests treat every pruned path as a failure.

CEL rules are not evaluated here (see tests/test_schema.py, which runs them with a CEL evaluator).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .openapi import INT_OR_STRING, PRESERVE_UNKNOWN, Schema

# Fields of the envelope that the API server handles itself, whatever the CRD schema says.
_SERVER_OWNED_ROOT_FIELDS = frozenset({"apiVersion", "kind", "metadata"})


@dataclass
class Conformance:
    """Problems found for one object: `errors` would be rejected, `pruned` would be dropped."""

    errors: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.pruned


def check_object(document: dict[str, Any], schema: Schema) -> Conformance:
    """Validate and simulate pruning of one whole object against its CRD's openAPIV3Schema."""
    result = Conformance()
    for key, value in document.items():
        if key in _SERVER_OWNED_ROOT_FIELDS:
            if key != "metadata" and not isinstance(value, str):
                result.errors.append(f"{key}: must be a string")
            continue
        properties = schema.get("properties", {})
        if key in properties:
            _check(value, properties[key], key, result)
        else:
            result.pruned.append(key)
    for key in schema.get("required", []):
        if key not in document:
            result.errors.append(f"{key}: required")
    return result


def _check(value: Any, schema: Schema, path: str, result: Conformance) -> None:
    if value is None:
        if not schema.get("nullable"):
            result.pruned.append(f"{path} (null)")
        return
    type_error = _type_error(value, schema)
    if type_error:
        result.errors.append(f"{path}: {type_error}")
        return
    result.errors.extend(f"{path}: {problem}" for problem in _value_problems(value, schema))
    if isinstance(value, dict) and not schema.get(INT_OR_STRING):
        _check_object(value, schema, path, result)
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            _check(item, schema["items"], f"{path}[{index}]", result)


def _check_object(value: dict[str, Any], schema: Schema, path: str, result: Conformance) -> None:
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    for key, child in value.items():
        child_path = f"{path}.{key}"
        if key in properties:
            _check(child, properties[key], child_path, result)
        elif isinstance(extra, dict):
            _check(child, extra, child_path, result)
        elif not schema.get(PRESERVE_UNKNOWN):
            result.pruned.append(child_path)
    for key in schema.get("required", []):
        if key not in value:
            result.errors.append(f"{path}.{key}: required")


def _type_error(value: Any, schema: Schema) -> str | None:
    if schema.get(INT_OR_STRING):
        ok = isinstance(value, int | str) and not isinstance(value, bool)
        return None if ok else f"must be an integer or a string, got {_json_type(value)}"
    expected = schema.get("type")
    if expected is None or _json_type(value) == expected:
        return None
    if expected == "number" and _json_type(value) == "integer":
        return None
    return f"must be {expected}, got {_json_type(value)}"


def _value_problems(value: Any, schema: Schema) -> Iterator[str]:
    if "enum" in schema and value not in schema["enum"]:
        yield f"must be one of {schema['enum']}, got {value!r}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            yield f"must be >= {schema['minimum']}, got {value}"
        if "maximum" in schema and value > schema["maximum"]:
            yield f"must be <= {schema['maximum']}, got {value}"
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            yield f"must be at most {schema['maxLength']} characters"
        if "minLength" in schema and len(value) < schema["minLength"]:
            yield f"must be at least {schema['minLength']} characters"
        if "pattern" in schema and not re.search(schema["pattern"], value):
            yield f"must match {schema['pattern']}"
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            yield f"must have at most {schema['maxItems']} items"
        if "minItems" in schema and len(value) < schema["minItems"]:
            yield f"must have at least {schema['minItems']} items"


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
