"""Where each kind lives in the API, so requests need no discovery round-trips."""

from __future__ import annotations

from dataclasses import dataclass

from ome_operator.api import GROUP, VERSION


@dataclass(frozen=True)
class ResourceInfo:
    api_version: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
            if subresource is not None:
                base += f"/{subresource}"
        return base


KINDS: dict[str, ResourceInfo] = {
    "Namespace": ResourceInfo("v1", "namespaces", False),
    "Node": ResourceInfo("v1", "nodes", False),
    "Pod": ResourceInfo("v1", "pods", True),
    "Service": ResourceInfo("v1", "services", True),
    "ServiceAccount": ResourceInfo("v1", "serviceaccounts", True),
    "ConfigMap": ResourceInfo("v1", "configmaps", True),
    "Event": ResourceInfo("v1", "events", True),
    "Deployment": ResourceInfo("apps/v1", "deployments", True),
    "StatefulSet": ResourceInfo("apps/v1", "statefulsets", True),
    "Job": ResourceInfo("batch/v1", "jobs", True),
    "Role": ResourceInfo("rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ResourceInfo("rbac.authorization.k8s.io/v1", "rolebindings", True),
    "ClusterBaseModel": ResourceInfo(f"{GROUP}/{VERSION}", "clusterbasemodels", False),
    "BaseModel": ResourceInfo(f"{GROUP}/{VERSION}", "basemodels", True),
    "ClusterServingRuntime": ResourceInfo(f"{GROUP}/{VERSION}", "clusterservingruntimes", False),
    "ServingRuntime": ResourceInfo(f"{GROUP}/{VERSION}", "servingruntimes", True),
    "InferenceService": ResourceInfo(f"{GROUP}/{VERSION}", "inferenceservices", True),
}

# Kinds an InferenceService owns, in the order they are applied (identities before workloads).
ISVC_CHILD_KINDS = ("ServiceAccount", "Role", "RoleBinding", "Service", "StatefulSet", "Deployment")
# Kinds a model owns.
MODEL_CHILD_KINDS = ("ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Job")
