"""CustomResourceDefinition objects for the ome.io/v1beta1 kinds, built from the API models.

The schema comes from `openapi.py` (CEL rules included: each model's `rules` sit on its own schema
node); everything else (names, scope, printer columns, status subresource) comes from each kind's
`crd: CrdInfo`. Nothing here is hand-written per kind, so adding a field or a rule to
`ome_operator/api` is the only change a new CRD needs.
"""

from __future__ import annotations

from typing import Any

from ome_operator.api import GROUP, KINDS, VERSION
from ome_operator.api.base import CrdInfo, PrinterColumn, Resource

from .openapi import SchemaError, openapi_schema
from .structural import structural_problems

CRD_API_VERSION = "apiextensions.k8s.io/v1"
# Every CRD inlines Kubernetes' PodSpec once per pod template it describes, as OME's do. What
# bounds its size is what the API server accepts: it stores a CRD as JSON in one etcd request,
# which etcd caps at 1.5 MiB by default (--max-request-bytes; kube-apiserver's own 3 MiB request
# limit is higher). Measured on kube-apiserver v1.37.2: a 1.39 MB CRD is stored, 1.63 MB gets
# "etcdserver: request is too large". managedFields stay small (the schema is one atomic field),
# so the margin below covers them, status and Helm's annotation. Sizes are compact JSON, the form
# kubectl and helm send.
ETCD_MAX_REQUEST_BYTES = 1536 * 1024
MAX_CRD_BYTES = ETCD_MAX_REQUEST_BYTES - 64 * 1024
# kubectl's client-side apply stores the object in this annotation; all annotations share the cap.
CLIENT_SIDE_APPLY_LIMIT = 256 * 1024
PRINTER_COLUMN_TYPES = frozenset({"integer", "number", "string", "boolean", "date"})


def crd_name(info: CrdInfo) -> str:
    return f"{info.plural}.{GROUP}"


def resources() -> list[type[Resource]]:
    """The kinds with a CRD, in the API's declaration order (models before runtimes before services)."""
    return list(KINDS.values())


def custom_resource_definition(resource: type[Resource]) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind; raises SchemaError when the result would be rejected."""
    info = resource.crd
    if info.extra:
        raise SchemaError(f"{info.kind}: CrdInfo.extra is not supported by the CRD generator: {sorted(info.extra)}")
    schema = openapi_schema(resource)
    problems = structural_problems(schema)
    if problems:
        raise SchemaError(f"{info.kind}: schema is not structural:\n  " + "\n  ".join(problems))
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": schema},
    }
    columns = [_printer_column(column, info) for column in info.printer_columns]
    if columns:
        version["additionalPrinterColumns"] = columns
    if info.status_subresource:
        if "status" not in schema["properties"]:
            raise SchemaError(f"{info.kind}: status subresource requested but the model has no status field")
        version["subresources"] = {"status": {}}
    names: dict[str, Any] = {
        "kind": info.kind,
        "listKind": f"{info.kind}List",
        "plural": info.plural,
        "singular": info.kind.lower(),
    }
    if info.short_names:
        names["shortNames"] = list(info.short_names)
    if info.categories:
        names["categories"] = list(info.categories)
    return {
        "apiVersion": CRD_API_VERSION,
        "kind": "CustomResourceDefinition",
        "metadata": {"name": crd_name(info)},
        "spec": {
            "group": GROUP,
            "names": names,
            "scope": _scope(info),
            "versions": [version],
        },
    }


def _printer_column(column: PrinterColumn, info: CrdInfo) -> dict[str, Any]:
    if column.type not in PRINTER_COLUMN_TYPES:
        raise SchemaError(f"{info.kind}: printer column {column.name} has type {column.type!r}")
    if not column.json_path.startswith("."):
        raise SchemaError(f"{info.kind}: printer column {column.name} jsonPath must start with '.'")
    out: dict[str, Any] = {"name": column.name, "type": column.type, "jsonPath": column.json_path}
    if column.description:
        out["description"] = column.description
    if column.priority:
        out["priority"] = column.priority
    return out


def _scope(info: CrdInfo) -> str:
    if info.scope not in ("Namespaced", "Cluster"):
        raise SchemaError(f"{info.kind}: scope must be Namespaced or Cluster, not {info.scope!r}")
    return info.scope
