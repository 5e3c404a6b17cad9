"""Pod-level types shared by runtimes and InferenceServices.

OME inlines a full core PodSpec into engine, decoder, router, leader and worker. We declare the pod
fields the operator reads or merges and let the CRD keep any other PodSpec field as written
(`x-kubernetes-preserve-unknown-fields` on the component), which keeps each CRD small.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from .base import OmeModel, Quantity, Unstructured, desc


class EnvVar(OmeModel):
    """A container environment variable (core/v1 EnvVar)."""

    name: str = desc("Name of the variable.")
    value: str | None = desc("Literal value; `$(VAR)` references are expanded by Kubernetes.", default=None)
    value_from: Unstructured | None = desc(
        "Source of the value (fieldRef, secretKeyRef, configMapKeyRef, resourceFieldRef).", default=None
    )


class ContainerPort(OmeModel):
    """A container port (core/v1 ContainerPort)."""

    container_port: int = desc("Port number the container listens on.", ge=1, le=65535)
    name: str | None = desc("IANA_SVC_NAME-style name of the port.", default=None)
    protocol: str | None = desc("TCP, UDP or SCTP; defaults to TCP.", default=None)
    host_port: int | None = desc("Port to expose on the host.", default=None)
    host_ip: str | None = Field(default=None, alias="hostIP", description="Host IP to bind the host port to.")


class ResourceRequirements(OmeModel):
    """Compute resources of a container (core/v1 ResourceRequirements)."""

    requests: dict[str, Quantity] | None = desc("Minimum resources, e.g. nvidia.com/gpu: 8.", default=None)
    limits: dict[str, Quantity] | None = desc("Maximum resources, e.g. nvidia.com/gpu: 8.", default=None)
    claims: list[Unstructured] | None = desc("Dynamic resource claims used by the container.", default=None)


class Container(OmeModel):
    """A container (core/v1 Container); OME calls the main serving container the runner."""

    name: str | None = desc("Name of the container; the runner defaults to ome-container.", default=None)
    image: str | None = desc("Container image.", default=None)
    command: list[str] | None = desc("Entrypoint; `$(VAR)` references are expanded by Kubernetes.", default=None)
    args: list[str] | None = desc("Arguments; runtime and InferenceService args are concatenated.", default=None)
    env: list[EnvVar] | None = desc("Environment variables, merged by name.", default=None)
    env_from: list[Unstructured] | None = desc("Sources of environment variables.", default=None)
    ports: list[ContainerPort] | None = desc("Ports the container listens on.", default=None)
    resources: ResourceRequirements | None = desc("Compute resources.", default=None)
    volume_mounts: list[Unstructured] | None = desc("Volumes mounted into the container.", default=None)
    security_context: Unstructured | None = desc("Container security context.", default=None)
    readiness_probe: Unstructured | None = desc("Readiness probe.", default=None)
    liveness_probe: Unstructured | None = desc("Liveness probe.", default=None)
    startup_probe: Unstructured | None = desc("Startup probe.", default=None)
    working_dir: str | None = desc("Working directory.", default=None)
    image_pull_policy: str | None = desc("Always, IfNotPresent or Never.", default=None)


class PodFields(OmeModel):
    """The core/v1 PodSpec fields the operator reads or merges; other PodSpec fields are kept as written."""

    containers: list[Container] | None = desc("Containers of the pod (legacy; prefer runner).", default=None)
    init_containers: list[Container] | None = desc("Init containers of the pod.", default=None)
    volumes: list[Unstructured] | None = desc("Volumes of the pod, merged by name.", default=None)
    node_selector: dict[str, str] | None = desc("Node labels the pod must match; merged by key.", default=None)
    affinity: Unstructured | None = desc("Scheduling affinity.", default=None)
    tolerations: list[Unstructured] | None = desc("Tolerations of the pod.", default=None)
    host_network: bool | None = desc("Use the host's network namespace.", default=None)
    host_ipc: bool | None = Field(default=None, alias="hostIPC", description="Use the host's IPC namespace.")
    host_pid: bool | None = Field(default=None, alias="hostPID", description="Use the host's PID namespace.")
    dns_policy: str | None = desc("DNS policy, e.g. ClusterFirstWithHostNet with hostNetwork.", default=None)
    enable_service_links: bool | None = desc("Inject Service environment variables.", default=None)
    service_account_name: str | None = desc("ServiceAccount the pod runs as.", default=None)
    image_pull_secrets: list[Unstructured] | None = desc("Secrets used to pull images.", default=None)
    scheduler_name: str | None = desc("Scheduler that places the pod.", default=None)
    priority_class_name: str | None = desc("PriorityClass of the pod.", default=None)
    security_context: Unstructured | None = desc("Pod security context.", default=None)
    termination_grace_period_seconds: int | None = desc("Grace period on termination.", default=None)
    topology_spread_constraints: list[Unstructured] | None = desc("Topology spread constraints.", default=None)
    runtime_class_name: str | None = desc("RuntimeClass of the pod.", default=None)

    def pod_fields(self) -> dict[str, Any]:
        """Only the PodSpec part of this object, as written (camelCase), for merging into a pod."""
        data = self.to_dict()
        return {k: v for k, v in data.items() if k not in NON_POD_KEYS}


# Keys of component specs that are not PodSpec fields (dropped when building the pod).
NON_POD_KEYS = frozenset(
    {
        "runner",
        "leader",
        "worker",
        "size",
        "config",
        "minReplicas",
        "maxReplicas",
        "scaleTarget",
        "scaleMetric",
        "containerConcurrency",
        "timeoutSeconds",
        "canaryTrafficPercent",
        "labels",
        "annotations",
        "minAvailable",
        "maxUnavailable",
        "deploymentStrategy",
        "kedaConfig",
        "acceleratorOverride",
    }
)
