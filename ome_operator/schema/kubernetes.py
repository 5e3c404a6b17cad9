"""The Kubernetes definitions the API embeds, vendored from the pinned release's OpenAPI v3 documents.

The API models name the Kubernetes type a field holds with `K8s("io.k8s.api.core.v1.Affinity")`
(ome_operator/api/base.py); the CRD generator inlines that definition and the offline loader
validates against it. Both read `ome_operator/schema/kubernetes-definitions.json`, which
`python -m ome_operator.schema --vendor-kubernetes` writes from
`k8s.io/kubernetes@<KUBERNETES_VERSION>/api/openapi-spec/v3/` in the Go module cache (the control
plane build downloads that module; without it: `GOFLAGS=-modcacherw go mod download
k8s.io/kubernetes@v1.37.2`). tests/test_schema.py fails when the file differs from a fresh vendoring.

Only definitions reachable from the ones the API names are kept, normalized for a CRD:
- descriptions, strategic-merge-patch keys and unions are dropped: they cost bytes in every CRD
  and a custom resource has no strategic merge patch;
- `default` is kept only where a CRD needs it: on a list-map key that is not required (a
  container port's `protocol`), because the API server refuses such a list-map key without one;
- a reference is `{"$ref": "<definition name>"}`; `allOf: [{$ref}]`, OpenAPI v3's way of putting a
  description beside a reference, becomes the plain reference;
- IntOrString and Quantity are `x-kubernetes-int-or-string`, the only structural spelling
  (Quantity also accepts a YAML float upstream; a CRD cannot, so `cpu: 0.5` must be `"500m"`, as
  with controller-gen's CRDs, OME's included);
- the ObjectMeta of an ephemeral volume's claim template is an object of labels and annotations,
  the only metadata the pod API accepts there, instead of a full ObjectMeta.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ome_operator.api import KINDS
from ome_operator.api.base import K8S_MARKER, KUBERNETES_DEFINITIONS_FILE, kubernetes_definitions

from .openapi import SchemaError

Schema = dict[str, Any]

KUBERNETES_VERSION = "v1.37.2"
MODULE = f"k8s.io/kubernetes@{KUBERNETES_VERSION}"
SPEC_DIR = Path("api/openapi-spec/v3")
# The OpenAPI documents holding the definitions the API names: core/v1 and apps/v1 (a
# component's deploymentStrategy); each also carries the apimachinery types its kinds use.
SOURCES = ("api__v1_openapi.json", "apis__apps__v1_openapi.json")
VENDOR_COMMAND = "python -m ome_operator.schema --vendor-kubernetes"

_REF_PREFIX = "#/components/schemas/"
_INT_OR_STRING = {"x-kubernetes-int-or-string": True}
_INT_OR_STRING_TYPES = (
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
    "io.k8s.apimachinery.pkg.api.resource.Quantity",
)
_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
EMBEDDED_OBJECT_META: Schema = {"type": "object", "properties": {"labels": _STRING_MAP, "annotations": _STRING_MAP}}
_DROPPED = frozenset(
    {"description", "x-kubernetes-patch-strategy", "x-kubernetes-patch-merge-key", "x-kubernetes-unions", "default"}
)


def vendored_path() -> Path:
    return Path(__file__).resolve().parent / KUBERNETES_DEFINITIONS_FILE


def module_cache_candidates() -> Iterator[Path]:
    """Where the Go module cache may be: the control plane build's own cache first."""
    for variable in ("GOMODCACHE_OVERRIDE", "GOMODCACHE"):
        if os.environ.get(variable):
            yield Path(os.environ[variable])
    yield Path(os.environ.get("OME_CACHE", Path.home() / ".cache" / "ome-operator")) / "go" / "mod"
    try:
        out = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return
    if out.returncode == 0 and out.stdout.strip():
        yield Path(out.stdout.strip())


def find_source() -> Path | None:
    """The pinned release's OpenAPI v3 directory in a Go module cache, or None when it is not downloaded."""
    for cache in module_cache_candidates():
        spec = cache / MODULE / SPEC_DIR
        if all((spec / name).is_file() for name in SOURCES):
            return spec
    return None


def referenced_definitions() -> set[str]:
    """Every Kubernetes definition the API models name with K8s(...)."""
    names: set[str] = set()
    for resource in KINDS.values():
        _collect_markers(resource.model_json_schema(by_alias=True, mode="validation"), names)
    return names


def _collect_markers(node: Any, names: set[str]) -> None:
    if isinstance(node, dict):
        marker = node.get(K8S_MARKER)
        if isinstance(marker, dict):
            names.add(str(marker["definition"]))
        for value in node.values():
            _collect_markers(value, names)
    elif isinstance(node, list):
        for value in node:
            _collect_markers(value, names)


def vendor(spec_dir: Path, roots: Iterable[str]) -> dict[str, Any]:
    """The vendored document: the normalized closure of `roots` over the upstream definitions."""
    upstream: dict[str, Schema] = {}
    for name in SOURCES:
        document = json.loads((spec_dir / name).read_text())
        upstream.update(document["components"]["schemas"])
    closure = _closure(upstream, sorted(roots))
    needs_default = _list_map_keys_without_required(upstream, closure)
    definitions = {name: _normalize(upstream[name], name, needs_default) for name in sorted(closure)}
    return {
        "kubernetesVersion": KUBERNETES_VERSION,
        "source": f"{MODULE}/{SPEC_DIR}/{{{','.join(SOURCES)}}}",
        "regenerate": VENDOR_COMMAND,
        "definitions": definitions,
    }


def render_vendored(document: dict[str, Any]) -> str:
    # One definition per line: readable diffs on a Kubernetes upgrade without a 10k-line file.
    lines = [
        f"  {json.dumps(name)}: {json.dumps(body, sort_keys=True, separators=(',', ':'))}"
        for name, body in sorted(document["definitions"].items())
    ]
    head = {k: v for k, v in document.items() if k != "definitions"}
    header = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in head.items())
    return "{\n" + header + ',\n  "definitions": {\n' + ",\n".join("  " + line for line in lines) + "\n  }\n}\n"


def write_vendored(spec_dir: Path) -> Path:
    path = vendored_path()
    path.write_text(render_vendored(vendor(spec_dir, referenced_definitions())))
    kubernetes_definitions.cache_clear()  # the CRDs generated next must see the new file
    return path


def vendoring_drift(spec_dir: Path) -> list[str]:
    """Why the committed file differs from a fresh vendoring (empty when it does not)."""
    path = vendored_path()
    fresh = render_vendored(vendor(spec_dir, referenced_definitions()))
    if not path.exists():
        return [f"{path.name}: missing"]
    if path.read_text() != fresh:
        return [f"{path.name}: differs from {MODULE} and the definitions the API names"]
    return []


def _ref_name(node: Schema) -> str | None:
    ref = node.get("$ref")
    if ref is None and len(node.get("allOf") or []) == 1:
        ref = node["allOf"][0].get("$ref")
    return str(ref).removeprefix(_REF_PREFIX) if ref else None


def _closure(upstream: dict[str, Schema], roots: list[str]) -> set[str]:
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        if name not in upstream:
            raise SchemaError(f"{name}: not a definition of {MODULE} ({', '.join(SOURCES)})")
        seen.add(name)
        if name in _INT_OR_STRING_TYPES:
            continue
        pending.extend(ref for ref in _refs(upstream[name]) if ref != _OBJECT_META)
    return seen


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        name = _ref_name(node)
        if name is not None:
            yield name
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _list_map_keys_without_required(upstream: dict[str, Schema], closure: set[str]) -> set[tuple[str, str]]:
    """(definition, property) pairs that are list-map keys of some list but not required in their item."""
    pairs: set[tuple[str, str]] = set()

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("x-kubernetes-list-type") == "map":
                item = _ref_name(node.get("items") or {})
                if item is not None:
                    required = set(upstream[item].get("required", []))
                    pairs.update((item, key) for key in node["x-kubernetes-list-map-keys"] if key not in required)
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    for name in closure:
        visit(upstream[name])
    return pairs


def _normalize(definition: Schema, name: str, needs_default: set[tuple[str, str]]) -> Schema:
    if name in _INT_OR_STRING_TYPES:
        return dict(_INT_OR_STRING)
    out: Schema = _normalize_node(definition)
    for prop, child in (definition.get("properties") or {}).items():
        if (name, prop) in needs_default and "default" in child:
            out["properties"][prop]["default"] = child["default"]
    return out


def _normalize_node(node: Any) -> Any:
    if isinstance(node, list):
        return [_normalize_node(value) for value in node]
    if not isinstance(node, dict):
        return node
    ref = _ref_name(node)
    if ref is not None:
        return EMBEDDED_OBJECT_META if ref == _OBJECT_META else {"$ref": ref}
    out: Schema = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "properties":
            out[key] = {prop: _normalize_node(child) for prop, child in value.items()}
        elif key in ("oneOf", "anyOf", "allOf", "not"):
            raise SchemaError(f"unexpected {key} in a Kubernetes definition: {node}")
        else:
            out[key] = _normalize_node(value)
    return out
