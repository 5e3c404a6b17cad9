"""Check an object against a generated CRD schema the way the API server would, without one.

Two questions, answered in one walk: would the API server reject the object (type, enum, bounds,
required fields), and would it silently drop part of it? Pruning is the quiet failure mode of a
CRD: a field outside `properties`, under an object without `x-kubernetes-preserve-unknown-fields`,
is dropped (or, with strict field validation, refused), and so is a null of a field that is not
nullable. OME YAML must apply unchanged, so the tests treat every pruned path as a failure.

The walk is the offline loader's own (ome_operator.api.base.openapi_problems), here on the
inlined CRD schema. CEL rules are not evaluated (tests/test_schema.py runs them with a CEL evaluator).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ome_operator.api.base import NULL_VALUE, UNKNOWN_FIELD, Loc, openapi_problems

from .openapi import Schema

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
    for key in _SERVER_OWNED_ROOT_FIELDS - {"metadata"}:
        if key in document and not isinstance(document[key], str):
            result.errors.append(f"{key}: must be a string")
    body = {k: v for k, v in document.items() if k not in _SERVER_OWNED_ROOT_FIELDS}
    envelope = {**schema, "properties": {k: v for k, v in schema["properties"].items() if k != "metadata"}}
    for finding in openapi_problems(body, envelope, report_nulls=True):
        path = dotted(finding.loc)
        if finding.reason == UNKNOWN_FIELD:
            result.pruned.append(path)
        elif finding.reason == NULL_VALUE:
            result.pruned.append(f"{path} (null)")
        else:
            result.errors.append(f"{path}: {finding.reason}")
    return result


def dotted(loc: Loc) -> str:
    """A location as the API server writes it: spec.engine.tolerations[0].key."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path
