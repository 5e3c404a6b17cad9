"""Names and labels of everything the operator creates: deterministic, DNS-safe, length-bounded."""

from __future__ import annotations

import hashlib
import re

MANAGED_BY = "ome-operator"

# OME's labels, which runtimes' router selectors rely on.
LABEL_ISVC = "ome.io/inferenceservice"
LABEL_COMPONENT = "component"
LABEL_LWS_WORKER_INDEX = "leaderworkerset.sigs.k8s.io/worker-index"
# Ours: which group and role a pod belongs to, so a group can be found and recreated as a whole.
LABEL_GROUP = "ome.io/group"
LABEL_ROLE = "ome.io/role"
LABEL_MODEL = "ome.io/model"
LABEL_NODE = "ome.io/node"
# Set by the StatefulSet controller on every pod (Kubernetes >= 1.28).
LABEL_POD_INDEX = "apps.kubernetes.io/pod-index"

MODEL_LABEL_PREFIX = "models.ome.io/"
MAX_NAME = 63
# A StatefulSet adds a controller-revision-hash label `<name>-<hash>` that must fit in 63 characters.
MAX_STATEFULSET_NAME = 52


def short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def bounded_name(name: str, limit: int = MAX_NAME) -> str:
    """`name` if it fits, else a prefix plus a hash of the whole name, so distinct names stay distinct."""
    if len(name) <= limit:
        return name
    digest = short_hash(name)
    prefix = name[: limit - len(digest) - 1].rstrip("-.")
    return f"{prefix}-{digest}"


_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def label_value(text: str) -> str:
    """`text` as a label value: at most 63 characters of [A-Za-z0-9._-], alphanumeric at both ends.

    Characters a label may not hold become '-', and an over-long value keeps a hash of the whole,
    so two different long names never share a label value.
    """
    cleaned = _LABEL_VALUE_BAD.sub("-", text).strip("-._")
    if cleaned != text:
        cleaned = f"{cleaned}-{short_hash(text)}".strip("-._") if cleaned else short_hash(text)
    return bounded_name(cleaned, MAX_NAME).strip("-._")


def component_name(isvc: str, component: str) -> str:
    return bounded_name(f"{isvc}-{component}")


def group_name(isvc: str, component: str, group: int) -> str:
    """The leader StatefulSet and the group's headless Service; workers add `-worker`."""
    return bounded_name(f"{isvc}-{component}-{group}", MAX_STATEFULSET_NAME - len("-worker"))


def worker_name(isvc: str, component: str, group: int) -> str:
    return f"{group_name(isvc, component, group)}-worker"


def router_account_name(isvc: str) -> str:
    return component_name(isvc, "router")


def model_ready_label(model_name: str, namespace: str | None) -> str:
    """The node label that says a verified copy of the model is on the node (OME's key format).

    ClusterBaseModel: `models.ome.io/clusterbasemodel.<name>`; BaseModel: `models.ome.io/<ns>.basemodel.<name>`.
    The name part of a label key is at most 63 characters; longer ones keep a hash of the full name.
    """
    middle = "clusterbasemodel" if namespace is None else f"{namespace}.basemodel"
    return MODEL_LABEL_PREFIX + bounded_name(f"{middle}.{model_name}")


def download_job_name(model_name: str, node: str, source: str = "") -> str:
    """One Job per (model, node, source): node names can be long FQDNs, so both are hashed.

    `source` is what the Job copies (URI, revision, path): a Job's pod template is immutable, so an
    edit of the model's storage must name a new Job, which replaces the old one instead of patching it.
    """
    suffix = short_hash(node, 10) + (f"-{short_hash(source, 6)}" if source else "")
    return bounded_name(f"{model_name}-dl-{suffix}")


def download_resources_name(model_name: str, namespace: str | None) -> str:
    """ConfigMap (progress), ServiceAccount, Role and RoleBinding of a model's download Jobs."""
    scope = "cluster" if namespace is None else namespace
    return bounded_name(f"{model_name}-{scope}-download")


def standard_labels(instance: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "ome",
        "app.kubernetes.io/instance": label_value(instance),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def isvc_labels(isvc: str, component: str) -> dict[str, str]:
    """Labels on every child of an InferenceService component (OME's plus the standard ones)."""
    return {**standard_labels(isvc, component), LABEL_ISVC: isvc, LABEL_COMPONENT: component}
