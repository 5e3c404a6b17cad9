"""Which nodes must hold a model, and the node labels that say a verified copy is there."""

from __future__ import annotations

from typing import Any

from ome_operator.api.model import AnyModel
from ome_operator.kube.client import Kube
from ome_operator.render.context import GPU_RESOURCE

from .status import FieldError

Obj = dict[str, Any]


def _match_expression(labels: dict[str, str], expr: Obj) -> bool:
    key, op, values = expr.get("key", ""), expr.get("operator", "In"), expr.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt") and key in labels and values:
        try:
            have, want = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def check_node_affinity(affinity: object) -> None:
    """The required node affinity's shape (the CRD keeps it open): FieldError naming what is wrong."""
    path = "spec.storage.nodeAffinity"
    if affinity is None:
        return
    if not isinstance(affinity, dict):
        raise FieldError(path, f"must be an object, not {type(affinity).__name__}")
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return
    path += ".requiredDuringSchedulingIgnoredDuringExecution"
    terms = required.get("nodeSelectorTerms") if isinstance(required, dict) else None
    if not isinstance(required, dict) or not isinstance(terms, list | type(None)):
        raise FieldError(path, "must be an object with a nodeSelectorTerms list")
    for i, term in enumerate(terms or []):
        expressions = term.get("matchExpressions") if isinstance(term, dict) else None
        if not isinstance(term, dict) or not isinstance(expressions, list | type(None)):
            raise FieldError(
                f"{path}.nodeSelectorTerms[{i}]", f"must be an object with matchExpressions, not {term!r:.60}"
            )
        for j, expr in enumerate(expressions or []):
            if not isinstance(expr, dict) or not isinstance(expr.get("values") or [], list):
                raise FieldError(
                    f"{path}.nodeSelectorTerms[{i}].matchExpressions[{j}]",
                    f"must be an object with key, operator and a values list, not {expr!r:.60}",
                )


def node_matches(model: AnyModel, node: Obj) -> bool:
    """storage.nodeSelector (all labels) and the required nodeAffinity terms (any term, all expressions)."""
    labels = node["metadata"].get("labels") or {}
    storage = model.spec.storage
    if storage is None:
        return False  # nothing to download, so no node holds a copy (the status says why)
    if storage.node_selector is None and storage.node_affinity is None:
        capacity = (node.get("status") or {}).get("capacity") or {}
        return int(str(capacity.get(GPU_RESOURCE, "0")) or 0) > 0
    if storage.node_selector and any(labels.get(k) != v for k, v in storage.node_selector.items()):
        return False
    required = (storage.node_affinity or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    terms = required.get("nodeSelectorTerms") or []
    if terms:
        return any(all(_match_expression(labels, e) for e in term.get("matchExpressions") or []) for term in terms)
    return True


def resolve_target_nodes(kube: Kube, model: AnyModel) -> tuple[list[str], list[Obj]]:
    if model.spec.storage is not None:
        check_node_affinity(model.spec.storage.node_affinity)
    nodes = kube.list("Node")
    return sorted(n["metadata"]["name"] for n in nodes if node_matches(model, n)), nodes


def apply_node_labels(kube: Kube, nodes: list[Obj], label: str, wanted: dict[str, str | None]) -> list[str]:
    """Set or remove the model label on nodes, writing only where it differs; returns changed nodes."""
    changed = []
    for node in nodes:
        name = node["metadata"]["name"]
        if name not in wanted:
            continue
        value = wanted[name]
        if (node["metadata"].get("labels") or {}).get(label) == value:
            continue
        kube.merge_patch("Node", name, None, {"metadata": {"labels": {label: value}}})
        changed.append(name)
    return changed
