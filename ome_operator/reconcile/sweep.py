"""The node-label sweep: what a model deletion leaves behind is removed without a finalizer.

A model's label on a node (`models.ome.io/clusterbasemodel.<name>`, `models.ome.io/<ns>.basemodel.<name>`)
says a verified copy is there. A finalizer that removed it on deletion would make deletion wait
for the operator (and hang forever once it is uninstalled); instead every label of the model-label
form that belongs to no existing model is removed, after each model deletion, at start-up and on
every resync. With the operator limited to some namespaces, only cluster-model labels and labels
of those namespaces are ours to judge.
"""

from __future__ import annotations

from ome_operator.kube.client import Kube
from ome_operator.render import names

from .nodes import apply_node_labels


def compute_model_labels(kube: Kube, namespaces: list[str]) -> set[str]:
    """The node labels of every model that exists (read from the cache)."""
    labels = {names.model_ready_label(m["metadata"]["name"], None) for m in kube.list("ClusterBaseModel")}
    scopes: list[str | None] = [*namespaces] or [None]
    for namespace in scopes:
        for model in kube.list("BaseModel", namespace):
            labels.add(names.model_ready_label(model["metadata"]["name"], model["metadata"]["namespace"]))
    return labels


def judged(label: str, namespaces: list[str]) -> bool:
    """Whether a label key is of the model-label form and of a scope this operator sees."""
    if not label.startswith(names.MODEL_LABEL_PREFIX):
        return False
    rest = label[len(names.MODEL_LABEL_PREFIX) :]
    if rest.startswith("clusterbasemodel."):
        return True
    if ".basemodel." not in rest:
        return False
    return not namespaces or any(rest.startswith(f"{ns}.basemodel.") for ns in namespaces)


def sweep_model_labels(kube: Kube, namespaces: list[str]) -> list[str]:
    """Remove the labels of models that no longer exist; returns `node/label` for each removal."""
    existing = compute_model_labels(kube, namespaces)
    removed = []
    nodes = kube.list("Node")
    stale = {
        label
        for node in nodes
        for label in (node["metadata"].get("labels") or {})
        if judged(label, namespaces) and label not in existing
    }
    for label in sorted(stale):
        holders = [n for n in nodes if label in (n["metadata"].get("labels") or {})]
        for name in apply_node_labels(kube, holders, label, {n["metadata"]["name"]: None for n in holders}):
            removed.append(f"{name}/{label}")
    return removed
