"""The operator's rights as the chart must grant them: the allowlists every RBAC test checks.

A right is (apiGroup, resource, verb, resourceName), "" meaning any name. Changing what the chart
grants means changing these sets, in review. Cluster-wide installs grant CLUSTER_ONLY,
CLUSTER_PEERING and NAMESPACED in one ClusterRole; with watchNamespaces the ClusterRole keeps
CLUSTER_ONLY and NAMESPACE_LISTING, and Roles grant the rest only where it is used
(namespaced_allowlist).
"""

from __future__ import annotations

Right = tuple[str, str, str, str]
WRITE = ("list", "watch", "create", "patch", "delete")


def rights(group: str, resources: tuple[str, ...], verbs: tuple[str, ...], name: str = "") -> frozenset[Right]:
    return frozenset((group, resource, verb, name) for resource in resources for verb in verbs)


# What exists only cluster-wide: kopf's CRD watch, the cluster-scoped ome.io kinds, nodes.
CLUSTER_ONLY = (
    rights("apiextensions.k8s.io", ("customresourcedefinitions",), ("list", "watch"))
    | rights("ome.io", ("clusterbasemodels",), ("get", "list", "watch", "patch"))
    | rights("ome.io", ("clusterbasemodels/status",), ("update", "patch"))
    | rights("ome.io", ("clusterservingruntimes",), ("list", "watch"))
    | rights("", ("nodes",), ("list", "watch", "patch"))
)
NAMESPACE_LISTING = rights("", ("namespaces",), ("list", "watch"))
EVENTS = rights("", ("events",), ("create",))
# Children (server-side apply, watch, prune), and configmaps get/update held to grant them to the
# download Jobs' Roles.
CHILDREN = (
    rights("", ("services", "serviceaccounts", "configmaps"), WRITE)
    | rights("apps", ("statefulsets", "deployments"), WRITE)
    | rights("batch", ("jobs",), WRITE)
    | rights("rbac.authorization.k8s.io", ("roles", "rolebindings"), WRITE)
    | rights("", ("configmaps",), ("get", "update"))
)
# Everything reconciliation does in a namespace it serves.
NAMESPACED = (
    EVENTS
    | rights("ome.io", ("inferenceservices", "basemodels"), ("get", "list", "watch", "patch"))
    | rights("ome.io", ("inferenceservices/status", "basemodels/status"), ("update", "patch"))
    | rights("ome.io", ("servingruntimes",), ("list", "watch"))
    | rights("", ("pods",), ("get", "list", "watch", "delete"))
    | rights("", ("pods/log",), ("get",))
    | CHILDREN
)
# The operator's namespace when it is not watched: ClusterBaseModel downloads only.
DOWNLOADS = EVENTS | rights("", ("pods",), ("list", "watch")) | CHILDREN


def cluster_peering(name: str) -> frozenset[Right]:
    return rights("kopf.dev", ("clusterkopfpeerings",), ("list", "watch")) | rights(
        "kopf.dev", ("clusterkopfpeerings",), ("get", "patch"), name
    )


def namespace_peering(name: str) -> frozenset[Right]:
    return rights("kopf.dev", ("kopfpeerings",), ("list", "watch")) | rights(
        "kopf.dev", ("kopfpeerings",), ("get", "patch"), name
    )


def cluster_allowlist(peering: str | None) -> frozenset[Right]:
    """The ClusterRole of a cluster-wide install."""
    return CLUSTER_ONLY | NAMESPACED | (cluster_peering(peering) if peering else frozenset())


def namespaced_allowlist(
    watched: list[str], operator_namespace: str, peering: str | None
) -> tuple[frozenset[Right], dict[str, frozenset[Right]]]:
    """A watchNamespaces install: the ClusterRole's rights and each namespace's Role."""
    served = NAMESPACED | (namespace_peering(peering) if peering else frozenset())
    roles = {namespace: served for namespace in watched}
    roles.setdefault(operator_namespace, DOWNLOADS)
    # Events about cluster-scoped objects (ClusterBaseModels) go to "default".
    roles.setdefault("default", EVENTS)
    return CLUSTER_ONLY | NAMESPACE_LISTING, roles
