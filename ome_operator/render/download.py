"""A model's download: one Job per target node, writing below the node's model root, plus progress plumbing.

Each Job is pinned to its node (node affinity on metadata.name, as DaemonSets do), runs
`ome-operator download` from the operator's own image as a non-root user, reads the hub token only
(and object-store credentials) only through secretKeyRef, and publishes progress to one ConfigMap that its ServiceAccount alone may
update (a Role limited by resourceNames).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ome_operator.api.model import PROGRESS_EXPECTED_KEY, AnyModel, ClusterBaseModel, StorageSpec
from ome_operator.api.storage_uri import (
    LocalUri,
    ObjectStoreUri,
    PvcUri,
    StorageUriError,
    is_in_place,
    parse_storage_uri,
)

from . import names
from .context import PLACEHOLDER_UID, Settings, model_path
from .merge import Obj
from .roots import (
    HostDir,
    check_cluster_overlap,
    check_host_path,
    find_host_dir,
    is_normalized_absolute,
    resolve_host_path,
)

COMPONENT = "model-download"
DOWNLOAD_USER = 65532
# `ome-operator download` exits 3 when retrying cannot help (bad URI, no access, refused format).
EXIT_PERMANENT = 3
PVC_MOUNT = "/mnt/pvc"
# The download Jobs of one model serve each other the files they have verified (downloader/peer.py),
# so the hub sends each file once for the whole fleet; the same default as `--peer-port`.
PEER_PORT = 8477
ATTEMPT_ANNOTATION = "ome.io/download-attempt"
REUSE_MOUNT = "/mnt/reuse"  # downloadPolicy ReuseIfExists: another model's copy on the node, read-only


@dataclass(frozen=True)
class ModelContext:
    model: AnyModel
    settings: Settings

    @property
    def cluster_scoped(self) -> bool:
        return isinstance(self.model, ClusterBaseModel)

    @property
    def namespace(self) -> str:
        """Cluster models download from the operator's namespace; BaseModels from their own."""
        return self.settings.operator_namespace if self.cluster_scoped else (self.model.namespace or "default")

    @property
    def storage(self) -> StorageSpec:
        """The model's storage; render_model only builds a context for a model that has one."""
        storage = self.model.spec.storage
        if storage is None:
            raise ValueError(f"{self.model.name}: no spec.storage (check_model_storage reports it)")
        return storage

    @property
    def resources_name(self) -> str:
        return names.download_resources_name(self.model.name, None if self.cluster_scoped else self.model.namespace)

    def labels(self) -> dict[str, str]:
        scope = "cluster" if self.cluster_scoped else (self.model.namespace or "default")
        return {
            **names.standard_labels(self.model.name, COMPONENT),
            names.LABEL_MODEL: names.label_value(f"{scope}.{self.model.name}"),
        }

    def metadata(self, name: str, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": {**self.labels(), **(extra_labels or {})},
            "ownerReferences": [
                {
                    "apiVersion": self.model.api_version,
                    "kind": self.model.crd.kind,
                    "name": self.model.name,
                    "uid": self.model.metadata.uid or PLACEHOLDER_UID,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }


def render_download_access(mctx: ModelContext, nodes: Sequence[str]) -> list[Obj]:
    """The progress ConfigMap (naming the nodes given a Job, so their peers wait for them) and the
    identity allowed to update only it."""
    name = mctx.resources_name
    expected = json.dumps(sorted(nodes), separators=(",", ":"))
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": mctx.metadata(name),
            "data": {PROGRESS_EXPECTED_KEY: expected},
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": mctx.metadata(name)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": mctx.metadata(name),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [name],
                    "verbs": ["get", "patch", "update"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": mctx.metadata(name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": mctx.namespace}],
        },
    ]


# Per object-store scheme: (env var, Secret data key) the Job maps from `storage.key`. Refs are
# optional so that a missing Secret or key reaches the downloader, which reports it by name (a
# required ref would leave the pod in CreateContainerConfigError, where no Job condition says why).
STORE_CREDENTIALS: dict[str, tuple[tuple[str, str], ...]] = {
    "s3": (("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"), ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
           ("AWS_SESSION_TOKEN", "AWS_SESSION_TOKEN")),
    "gs": (("GOOGLE_OAUTH_ACCESS_TOKEN", "token"),),
    "az": (("AZURE_STORAGE_KEY", "AZURE_STORAGE_KEY"), ("AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_SAS_TOKEN")),
}  # fmt: skip
STORE_CREDENTIALS["oci"] = STORE_CREDENTIALS["s3"]  # OCI's Customer Secret Keys, through its S3 API


def render_store_env(mctx: ModelContext, uri: ObjectStoreUri) -> list[Obj]:
    """Endpoint and region as values, the Secret's name as a value, credentials by secretKeyRef only."""
    storage = mctx.storage
    params = storage.parameters or {}
    env: list[Obj] = []
    if params.get("endpoint"):
        env.append({"name": "OME_STORAGE_ENDPOINT", "value": params["endpoint"]})
    if params.get("region"):
        env.append({"name": "OME_STORAGE_REGION", "value": params["region"]})
    if not storage.key:
        return env
    env.append({"name": "OME_STORAGE_SECRET", "value": f"{mctx.namespace}/{storage.key}"})
    for name, data_key in STORE_CREDENTIALS[uri.scheme]:
        ref = {"name": storage.key, "key": data_key, "optional": True}
        env.append({"name": name, "valueFrom": {"secretKeyRef": ref}})
    return env


def _token_env(mctx: ModelContext) -> list[Obj]:
    storage = mctx.storage
    if not storage.key:
        return []
    data_key = (storage.parameters or {}).get("secretKey", "token")
    return [
        {
            "name": "HF_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": storage.key, "key": data_key}},
        }
    ]


def download_source(mctx: ModelContext) -> str:
    """What a Job copies, as one string: a change of any part must name a new Job."""
    return f"{mctx.storage.storage_uri}|{model_path(mctx.model, mctx.settings)}"


def render_prepare_container(image: str, host: HostDir) -> Obj:
    """Creates the model's directory below the root and hands it (only it) to the download user.

    The kubelet creates nothing; this walks down from the root without following a symlink
    (downloader/confine.py), creating missing directories as root-owned 0755 and chowning only the
    last one. Root with CAP_CHOWN alone: a root-owned model root is writable by its owner without
    CAP_DAC_OVERRIDE.
    """
    return {
        "name": "prepare-dest",
        "image": image,
        "command": ["python3", "-m", "ome_operator.downloader.confine"],
        "args": ["--root", host.root, "--path", host.path, "--owner", f"{DOWNLOAD_USER}:{DOWNLOAD_USER}"],
        "volumeMounts": [{"name": "models", "mountPath": host.root}],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": {
            "runAsNonRoot": False,
            "runAsUser": 0,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
        },
    }


def download_job_name(mctx: ModelContext, node: str, attempt: int = 1, reuse_from: str | None = None) -> str:
    """Attempt k > 1 (a Job recreated after using up its retries) and a Job reusing another model's
    copy (its pod template differs) get names of their own."""
    source = download_source(mctx) + (f"#attempt-{attempt}" if attempt > 1 else "")
    source += f"|reuse={reuse_from}" if reuse_from else ""
    return names.download_job_name(mctx.model.name, node, source)


def reuse_source_of(job: Obj) -> str | None:
    """The host path a rendered download Job reuses files from, if any."""
    for volume in (((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("volumes") or []:
        if volume.get("name") == "reuse" and volume.get("hostPath"):
            return str(volume["hostPath"]["path"])
    return None


def render_download_job(mctx: ModelContext, node: str, attempt: int = 1, reuse_from: str | None = None) -> Obj:
    settings = mctx.settings
    storage = mctx.storage
    uri = parse_storage_uri(storage.storage_uri)
    claim = uri.claim if isinstance(uri, PvcUri) else None
    # A claim is mounted whole and validated at its sub path; local:// weights where they are.
    dest = PVC_MOUNT if claim else str(uri.path) if isinstance(uri, LocalUri) else model_path(mctx.model, settings)
    # local:// and pvc:// weights are validated where they are: mounted read-only, never written.
    in_place = is_in_place(uri)
    args = [
        "download",
        storage.storage_uri,
        "--dest",
        dest,
        "--workers",
        str(settings.download_workers),
        "--node-name",
        node,
        "--progress-configmap",
        f"{mctx.namespace}/{mctx.resources_name}",
    ]
    if mctx.model.spec.allow_pickle:
        args.append("--allow-pickle")
    if reuse_from:
        args += ["--reuse-from", REUSE_MOUNT]
    env: list[Obj] = []
    if not in_place:
        # The peer server listens on, and is advertised at, the pod's own IP.
        env.append({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
        args.extend(["--peer-port", str(PEER_PORT)])
    if settings.hf_endpoint:
        env.append({"name": "HF_ENDPOINT", "value": settings.hf_endpoint})
    env.extend(render_store_env(mctx, uri) if isinstance(uri, ObjectStoreUri) else _token_env(mctx))
    node_labels = {names.LABEL_NODE: names.short_hash(node, 10)}
    restricted = {
        "runAsNonRoot": True,
        "runAsUser": DOWNLOAD_USER,
        "runAsGroup": DOWNLOAD_USER,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    container: Obj = {
        "name": "download",
        "image": settings.image,
        "args": args,
        **({"env": env} if env else {}),
        **({"ports": [{"name": "peer", "containerPort": PEER_PORT, "protocol": "TCP"}]} if not in_place else {}),
        "volumeMounts": [
            {"name": "models", "mountPath": dest, **({"readOnly": True} if in_place else {})},
            {"name": "tmp", "mountPath": "/tmp"},
            *([{"name": "reuse", "mountPath": REUSE_MOUNT, "readOnly": True}] if reuse_from else []),
        ],
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "4Gi"}},
        "securityContext": restricted,
        "terminationMessagePolicy": "File",
    }
    init: list[Obj] = []
    if claim:
        models_volume: Obj = {"name": "models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
    else:
        # The node's model root is the volume, the model's directory its subPath: the kubelet
        # resolves a subPath without following a symlink out of the volume, which a hostPath of
        # the model's own path would follow. The root must exist (the admin's part: a kubelet
        # creating it would make it root's with mode 0755, and silently so on a typo).
        host = find_host_dir(resolve_host_path(mctx.model, dest) or dest, settings.model_roots)
        models_volume = {"name": "models", "hostPath": {"path": host.root, "type": "Directory"}}
        container["volumeMounts"][0]["subPath"] = host.sub_path
        if not in_place:
            container["args"].extend(["--confine-root", host.root])
            init.append(render_prepare_container(settings.image, host))
    pod_spec: Obj = {
        "restartPolicy": "Never",
        "serviceAccountName": mctx.resources_name,
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
                    ]
                }
            }
        },
        # GPU nodes are commonly tainted; the copy must land on exactly the nodes that will serve it.
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        **({"initContainers": init} if init else {}),
        "containers": [container],
        "volumes": [
            models_volume,
            {"name": "tmp", "emptyDir": {}},
            *([{"name": "reuse", "hostPath": {"path": reuse_from, "type": "Directory"}}] if reuse_from else []),
        ],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            **mctx.metadata(download_job_name(mctx, node, attempt, reuse_from), node_labels),
            "annotations": {"ome.io/node": node, **({ATTEMPT_ANNOTATION: str(attempt)} if attempt > 1 else {})},
        },
        "spec": {
            "backoffLimit": settings.download_backoff_limit,
            # Retries back off exponentially (Job controller); a permanent failure is not retried.
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {"containerName": "download", "operator": "In", "values": [EXIT_PERMANENT]},
                    }
                ]
            },
            "template": {"metadata": {"labels": {**mctx.labels(), **node_labels}}, "spec": pod_spec},
        },
    }


def check_model_storage(model: AnyModel, settings: Settings, others: Sequence[AnyModel] = ()) -> str | None:
    """Why the model's storage cannot be placed on nodes ("field: reason"), or None; `others`
    are the models it must not overlap (check_model_path)."""
    storage = model.spec.storage
    if storage is None:
        return "spec.storage: not set, so there are no weights to place on nodes; set spec.storage.storageUri"
    try:
        parse_storage_uri(storage.storage_uri)
    except StorageUriError as exc:
        return f"spec.storage.storageUri: {exc}"
    path = storage.path
    if path is not None and (not is_normalized_absolute(path) or posixpath.normpath(path) != path):
        return f"spec.storage.path: {path!r} must be a normalized absolute path (no '..', '.', '//' or trailing '/')"
    return check_model_path(model, settings, others)


def check_model_path(model: AnyModel, settings: Settings, others: Sequence[AnyModel] = ()) -> str | None:
    """Why the model's directory on the nodes is not allowed ("field: reason"), or None; claims have
    none. A BaseModel is also checked against the ClusterBaseModels among `others`."""
    host = resolve_host_path(model, model_path(model, settings))
    if host is None:
        return None
    refused = check_host_path(model, host, settings.model_roots, settings.namespace_model_dir)
    if refused is not None or isinstance(model, ClusterBaseModel):
        return refused
    cluster_dirs = {}
    for other in others:
        if isinstance(other, ClusterBaseModel):
            other_host = resolve_host_path(other, model_path(other, settings))
            # A cluster model refused itself (e.g. the root as its path) claims no directory.
            roots, namespace_dir = settings.model_roots, settings.namespace_model_dir
            if other_host is not None and check_host_path(other, other_host, roots, namespace_dir) is None:
                cluster_dirs[other.name] = other_host
    return check_cluster_overlap(model, host, cluster_dirs)


def render_model(
    model: AnyModel,
    nodes: list[str],
    settings: Settings,
    attempts: dict[str, int] | None = None,
    reuse: dict[str, str] | None = None,
) -> list[Obj]:
    """Everything a model needs on the cluster: progress access, then one Job per target node
    (`attempts`: the attempt each node's Job is at, 1 when not given; `reuse`: node -> another
    model's directory there to take identical files from, for downloadPolicy ReuseIfExists).

    A model whose storage cannot be used (check_model_storage) gets nothing.
    """
    if check_model_storage(model, settings) is not None:
        return []
    mctx = ModelContext(model, settings)
    jobs = [
        render_download_job(mctx, node, (attempts or {}).get(node, 1), (reuse or {}).get(node))
        for node in sorted(nodes)
    ]
    return [*render_download_access(mctx, nodes), *jobs]
