"""Where on a node's disk model weights may be: the model roots the cluster admin allowed.

A model's weights on a node are a hostPath, and a hostPath is a hole in every other boundary: a
pod that mounts `/etc` read-write owns the node. So the operator writes and mounts only below the
roots the admin set (`--model-root`, the chart's `modelStorage.roots`), and a namespaced BaseModel
only below its namespace's directory under a root (`--namespace-model-dir`, default `{namespace}`,
so `<root>/<namespace>/...`). Admission refuses what needs no settings (a path that is not
normalized and absolute, see api/model.py); this module refuses the rest, and what it refuses gets
a condition naming the field and nothing on the cluster.

Mounts are built from the root, not from the model's path: a pod mounts the root with the model's
directory as `subPath`, which the kubelet resolves without following a symlink out of the volume.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from ome_operator.api.model import DOT_SEGMENT_PATTERN, STORAGE_PATH_PATTERN, AnyModel, ClusterBaseModel
from ome_operator.api.storage_uri import LocalUri, PvcUri, StorageUriError, parse_storage_uri

DEFAULT_MODEL_ROOTS = ("/raid/models", "/mnt/models")
DEFAULT_NAMESPACE_DIR = "{namespace}"
# Default directory of ClusterBaseModels under the first root: '_' cannot start a namespace name,
# so no namespace's own directory is ever this one.
CLUSTER_DIR = "_cluster"


def is_normalized_absolute(path: str) -> bool:
    """The admission rule, in Python: '/a/b', not '/', '//a', '/a/', '/a/../b' or '/a/./b'."""
    return re.search(STORAGE_PATH_PATTERN, path) is not None and re.search(DOT_SEGMENT_PATTERN, path) is None


def validate_model_roots(roots: tuple[str, ...], namespace_dir: str) -> None:
    """Refuse settings that would confine nothing (ValueError: the operator does not start)."""
    if not roots:
        raise ValueError("at least one --model-root is needed")
    for root in roots:
        if not is_normalized_absolute(root):
            raise ValueError(f"--model-root {root!r} must be a normalized absolute path other than '/'")
    for a in roots:
        for b in roots:
            if a != b and b.startswith(a + "/"):
                raise ValueError(f"--model-root {b!r} lies inside --model-root {a!r}; give only {a!r}")
    if namespace_dir:
        sample = namespace_dir.replace("{namespace}", "ns")
        if "{" in sample or "}" in sample or not is_normalized_absolute("/" + sample):
            raise ValueError(
                f"--namespace-model-dir {namespace_dir!r} must be a relative path such as '{{namespace}}' "
                "or 'tenants/{namespace}' (no '..', no leading or trailing '/'), or empty"
            )


@dataclass(frozen=True)
class HostDir:
    """A directory on the node, as an allowed root and the path below it."""

    root: str
    path: str

    @property
    def sub_path(self) -> str:
        return self.path[len(self.root) + 1 :]


def resolve_allowed_dirs(model: AnyModel, roots: tuple[str, ...], namespace_dir: str) -> list[str]:
    """The directories a model's host path must be strictly under, one per root."""
    if isinstance(model, ClusterBaseModel) or not namespace_dir:
        return list(roots)
    own = namespace_dir.replace("{namespace}", model.namespace or "default")
    return [f"{root}/{own}" for root in roots]


def default_model_path(model: AnyModel, roots: tuple[str, ...], namespace_dir: str) -> str:
    """Where a model without storage.path goes: its own directory under the first allowed one."""
    if isinstance(model, ClusterBaseModel):
        return f"{roots[0]}/{CLUSTER_DIR}/{model.name}"
    base = resolve_allowed_dirs(model, roots, namespace_dir or "{namespace}")[0]
    return f"{base}/{model.name}"


def resolve_host_path(model: AnyModel, model_path: str) -> str | None:
    """The directory on the node holding the weights: the local:// path, the model's path for a
    download, None for a claim (pvc:// weights are not on the node's disk) or an unusable URI."""
    storage = model.spec.storage
    if storage is None:
        return None
    try:
        uri = parse_storage_uri(storage.storage_uri)
    except StorageUriError:
        return None
    if isinstance(uri, PvcUri):
        return None
    if isinstance(uri, LocalUri):
        return str(uri.path)
    return model_path


def check_host_path(model: AnyModel, host_path: str, roots: tuple[str, ...], namespace_dir: str) -> str | None:
    """Why a model may not use this directory of the node ("field: reason"), or None."""
    storage = model.spec.storage
    local = storage is not None and storage.storage_uri.lower().startswith("local://")
    field = "spec.storage.storageUri" if local else "spec.storage.path"
    if not is_normalized_absolute(host_path) or posixpath.normpath(host_path) != host_path:
        return f"{field}: {host_path!r} must be a normalized absolute path (no '..', '.', '//' or trailing '/')"
    allowed = resolve_allowed_dirs(model, roots, namespace_dir)
    if any(host_path.startswith(base + "/") for base in allowed):
        return None
    where = " or ".join(f"{base}/" for base in allowed)
    whose = "" if isinstance(model, ClusterBaseModel) else f" (the directories of namespace {model.namespace})"
    return (
        f"{field}: {host_path!r} is outside the allowed model roots: it must be a directory strictly under "
        f"{where}{whose}; the cluster admin sets the roots (modelStorage in the operator's chart)"
    )


def check_cluster_overlap(model: AnyModel, host_path: str, cluster_dirs: dict[str, str]) -> str | None:
    """A BaseModel may not write where a ClusterBaseModel's weights are, nor above or below them:
    a namespace's directory can hold a cluster model's (OME's /raid/models/<vendor>/... under a
    namespace named like the vendor), and that model is served to every namespace."""
    if isinstance(model, ClusterBaseModel):
        return None
    for name, other in sorted(cluster_dirs.items()):
        if host_path == other or other.startswith(host_path + "/") or host_path.startswith(other + "/"):
            storage = model.spec.storage
            local = storage is not None and storage.storage_uri.lower().startswith("local://")
            field = "spec.storage.storageUri" if local else "spec.storage.path"
            return (
                f"{field}: {host_path!r} overlaps {other!r}, the directory of ClusterBaseModel {name}; a "
                "BaseModel may not use a cluster-wide model's directory: choose another one"
            )
    return None


def find_host_dir(host_path: str, roots: tuple[str, ...]) -> HostDir:
    """The root a checked host path is under (check_host_path first: this one trusts its input)."""
    for root in roots:
        if host_path.startswith(root + "/"):
            return HostDir(root, host_path)
    raise ValueError(f"{host_path!r} is not under any model root {roots}")


def add_model_root_arguments(parser: argparse.ArgumentParser) -> None:
    """`--model-root` and `--namespace-model-dir`, for `run` and the offline `render`/`plan` alike."""
    env_roots = [r for r in os.environ.get("OME_MODEL_ROOTS", "").split(",") if r]
    parser.add_argument(
        "--model-root",
        action="append",
        default=None,
        metavar="DIR",
        help="host directory model weights may be written to and mounted from (repeatable; env "
        f"OME_MODEL_ROOTS, comma-separated; default: {' and '.join(DEFAULT_MODEL_ROOTS)})",
    )
    parser.add_argument(
        "--namespace-model-dir",
        default=os.environ.get("OME_NAMESPACE_MODEL_DIR", DEFAULT_NAMESPACE_DIR),
        metavar="TEMPLATE",
        help="directory under a root that a namespace's BaseModels are confined to; '{namespace}' is "
        "replaced, empty confines them to the roots only (env OME_NAMESPACE_MODEL_DIR; default: {namespace})",
    )
    parser.set_defaults(env_model_roots=env_roots)


def resolve_model_root_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The Settings fields of the flags above, validated (ValueError names the flag)."""
    roots = tuple(args.model_root or getattr(args, "env_model_roots", None) or DEFAULT_MODEL_ROOTS)
    validate_model_roots(roots, args.namespace_model_dir)
    return {"model_roots": roots, "namespace_model_dir": args.namespace_model_dir}
