"""Pod-level types shared by runtimes and InferenceServices.

OME inlines a full core PodSpec into engine, decoder, router, leader and worker (its own copy, with
`containers` optional), and a core Container as each runner. These are typed views of the vendored
Kubernetes definitions (base.K8sObject): the fields declared here are what the operator reads or
merges, every other PodSpec or Container field is checked against the definition and kept as
written, and the CRD declares them all.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field

from .base import CORE, K8s, K8sObject, desc

POD_SPEC = CORE + "PodSpec"
CONTAINER = CORE + "Container"

# Kubernetes values the operator passes through without reading them.
NodeAffinity = Annotated[dict[str, Any], K8s(CORE + "NodeAffinity")]
DeploymentStrategy = Annotated[dict[str, Any], K8s("io.k8s.api.apps.v1.DeploymentStrategy")]


class EnvVar(K8sObject):
    """A container environment variable (core/v1 EnvVar)."""

    k8s: ClassVar[K8s] = K8s(CORE + "EnvVar")

    name: str | None = desc("Name of the variable.", default=None)
    value: str | None = desc("Literal value; `$(VAR)` references are expanded by Kubernetes.", default=None)
    value_from: dict[str, Any] | None = desc(
        "Source of the value (fieldRef, secretKeyRef, configMapKeyRef, resourceFieldRef).", default=None
    )


class ContainerPort(K8sObject):
    """A container port (core/v1 ContainerPort)."""

    k8s: ClassVar[K8s] = K8s(CORE + "ContainerPort")

    container_port: int | None = desc("Port number the container listens on.", default=None)
    name: str | None = desc("IANA_SVC_NAME-style name of the port.", default=None)
    protocol: str | None = desc("TCP, UDP or SCTP; defaults to TCP.", default=None)
    host_port: int | None = desc("Port to expose on the host.", default=None)
    host_ip: str | None = Field(default=None, alias="hostIP", description="Host IP to bind the host port to.")


class ResourceRequirements(K8sObject):
    """Compute resources of a container (core/v1 ResourceRequirements)."""

    k8s: ClassVar[K8s] = K8s(CORE + "ResourceRequirements")

    requests: dict[str, int | str] | None = desc("Minimum resources, e.g. nvidia.com/gpu: 8.", default=None)
    limits: dict[str, int | str] | None = desc("Maximum resources, e.g. nvidia.com/gpu: 8.", default=None)
    claims: list[dict[str, Any]] | None = desc("Dynamic resource claims used by the container.", default=None)


class Container(K8sObject):
    """A container (core/v1 Container)."""

    k8s: ClassVar[K8s] = K8s(CONTAINER)

    name: str | None = desc("Name of the container.", default=None)
    image: str | None = desc("Container image.", default=None)
    command: list[str] | None = desc("Entrypoint; `$(VAR)` references are expanded by Kubernetes.", default=None)
    args: list[str] | None = desc("Arguments; runtime and InferenceService args are concatenated.", default=None)
    env: list[EnvVar] | None = desc("Environment variables, merged by name.", default=None)
    ports: list[ContainerPort] | None = desc("Ports the container listens on.", default=None)
    resources: ResourceRequirements | None = desc("Compute resources.", default=None)
    env_from: list[dict[str, Any]] | None = desc("Sources of environment variables.", default=None)
    volume_mounts: list[dict[str, Any]] | None = desc("Volumes mounted into the container.", default=None)
    security_context: dict[str, Any] | None = desc("Container security context.", default=None)
    readiness_probe: dict[str, Any] | None = desc("Readiness probe.", default=None)
    liveness_probe: dict[str, Any] | None = desc("Liveness probe.", default=None)
    startup_probe: dict[str, Any] | None = desc("Startup probe.", default=None)
    working_dir: str | None = desc("Working directory.", default=None)
    image_pull_policy: str | None = desc("Always, IfNotPresent or Never.", default=None)


class Runner(Container):
    """OME's runner: the serving container of a component's pods; its name defaults to ome-container."""

    k8s: ClassVar[K8s] = K8s(CONTAINER, optional=("name",))


class PodFields(K8sObject):
    """A core/v1 PodSpec as OME embeds it: `containers` optional (the runner supplies the main one)."""

    k8s: ClassVar[K8s] = K8s(POD_SPEC, optional=("containers",))

    containers: list[Container] | None = desc("Containers of the pod (legacy; prefer runner).", default=None)
    init_containers: list[Container] | None = desc("Init containers of the pod.", default=None)
    volumes: list[dict[str, Any]] | None = desc("Volumes of the pod, merged by name.", default=None)
    node_selector: dict[str, str] | None = desc("Node labels the pod must match; merged by key.", default=None)
    affinity: dict[str, Any] | None = desc("Scheduling affinity.", default=None)
    tolerations: list[dict[str, Any]] | None = desc("Tolerations of the pod.", default=None)
    host_network: bool | None = desc("Use the host's network namespace.", default=None)
    host_ipc: bool | None = Field(default=None, alias="hostIPC", description="Use the host's IPC namespace.")
    host_pid: bool | None = Field(default=None, alias="hostPID", description="Use the host's PID namespace.")
    dns_policy: str | None = desc("DNS policy, e.g. ClusterFirstWithHostNet with hostNetwork.", default=None)
    enable_service_links: bool | None = desc("Inject Service environment variables.", default=None)
    service_account_name: str | None = desc("ServiceAccount the pod runs as.", default=None)
    image_pull_secrets: list[dict[str, Any]] | None = desc("Secrets used to pull images.", default=None)
    scheduler_name: str | None = desc("Scheduler that places the pod.", default=None)
    priority_class_name: str | None = desc("PriorityClass of the pod.", default=None)
    security_context: dict[str, Any] | None = desc("Pod security context.", default=None)
    termination_grace_period_seconds: int | None = desc("Grace period on termination.", default=None)
    topology_spread_constraints: list[dict[str, Any]] | None = desc("Topology spread constraints.", default=None)
    runtime_class_name: str | None = desc("RuntimeClass of the pod.", default=None)

    def pod_fields(self) -> dict[str, Any]:
        """Only the PodSpec part of this object, as written (camelCase), for merging into a pod."""
        data = self.to_dict()
        return {k: v for k, v in data.items() if k not in NON_POD_KEYS}


# Keys of component specs that are not PodSpec fields (dropped when building the pod); a test
# checks this is exactly the fields the component types add to the PodSpec.
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
        "model",
        "workerSpec",
        "tensorParallelSize",
        "pipelineParallelSize",
    }
)
