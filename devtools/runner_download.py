"""How the node-side runner (devtools.runner) runs a model-download Job pod for real.

A download pod's container is `ome-operator download ...` (the operator's image, entry point
`ome-operator`). Here it runs as the package's own entry point in the runner's venv, with:

- **volumes mapped into a per-node directory** of the cluster's state dir: a hostPath `/raid/x` of
  a pod on node N is `<cluster>/nodes/N/root/raid/x` (node_host_path), created for
  `DirectoryOrCreate` and required for `Directory`, as the kubelet does; an emptyDir is
  `<pod workdir>/volumes/<name>`; the API-access volume (the projected ServiceAccount token the
  API server adds) is not mounted, since the process gets its token through KUBECONFIG. Other
  volume kinds are refused (the pod does not start, and the runner's log says why).
- **container paths rewritten by prefix**: every command-line word and every environment value
  that is a mount path, or lies under one, is rewritten to the mapped directory (longest mount
  first; `--flag=/path` too). This is the one translation: the downloader itself runs unchanged
  and never learns it is on a stand-in node. The termination message goes to
  `TERMINATION_MESSAGE_PATH` (which the downloader honours) in the pod's workdir, and the runner
  copies it into the container's terminated state, as the kubelet does with `/dev/termination-log`.
- **the pod's ServiceAccount**: a kubeconfig holding only a TokenRequest token bound to the pod
  (as the router pods get), so the progress ConfigMap is patched with the Job's own, narrow rights.
- **the hub**: nothing here may leave the machine, so the local cluster's nodes reach exactly one
  hub, the cluster's own (devtools.hub, started by the runner). A pod's `HF_ENDPOINT` is honoured
  when it is a loopback http(s) URL (an operator started with `--hf-endpoint` pointing at a local
  hub); anything else, including no `HF_ENDPOINT` (the public hub), is replaced by the cluster's hub.
- **secrets** (`valueFrom.secretKeyRef`) read from the API server, as the kubelet does; a missing
  Secret or key keeps the pod from starting (CreateContainerConfigError).

- **the nodes' model roots**: on a real cluster the admin provides the operator's model roots on
  every GPU node (the pods mount them as hostPath type `Directory`); every local node comes with the
  chart's defaults (ensure_node_model_roots). A `subPath` is created when missing, as the kubelet
  does, and a hostPath mounted with a subPath at `<path>/<subPath>` also maps `<path>` itself, so
  the downloader's `--confine-root <path>` names the node's root.

Init containers are not run: the only one the operator renders creates the model's directory and
chowns it for the non-root download user (the downloader's own `--confine-root` check repeats the
creation and the symlink refusals), which has no meaning here: every process runs as the runner's user.
"""

from __future__ import annotations

import base64
import ipaddress
import posixpath
import sys
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.router import container_env
from ome_operator.render.engine_args import expand_k8s
from ome_operator.render.roots import DEFAULT_MODEL_ROOTS

Obj = dict[str, Any]
ENTRY_POINT = "ome-operator"
TERMINATION_LOG = "termination-log"
NO_HUB = "http://127.0.0.1:1"  # refused at once: a download pod with no hub fails, never goes off-machine


class MountError(RuntimeError):
    """The pod cannot start on this node (the kubelet would report FailedMount)."""


def is_download_container(container: Mapping[str, Any]) -> bool:
    """`ome-operator download ...`, given as args to the image's entry point or as a command."""
    command = [str(c) for c in container.get("command") or []]
    args = [str(a) for a in container.get("args") or []]
    words = [*command, *args]
    if command and posixpath.basename(command[0]) == ENTRY_POINT:
        return len(words) > 1 and words[1] == "download"
    return not command and bool(args) and args[0] == "download"


def node_root(cluster_dir: Path, node: str) -> Path:
    """The directory that plays node `node`'s root filesystem."""
    if not node or "/" in node or node in (".", ".."):
        raise MountError(f"node name {node!r} cannot name a directory")
    return cluster_dir / "nodes" / node / "root"


def node_host_path(cluster_dir: Path, node: str, host_path: str) -> Path:
    """Where hostPath `host_path` of node `node` lives in the cluster's state dir."""
    normal = posixpath.normpath(host_path)
    if not host_path.startswith("/") or normal != host_path.rstrip("/") or ".." in normal.split("/"):
        raise MountError(f"hostPath {host_path!r} is not a normalized absolute path")
    return node_root(cluster_dir, node) / normal.lstrip("/")


def ensure_node_model_roots(cluster_dir: Path, node: str) -> None:
    """The chart's default model roots exist on every local node, as an admin provides them."""
    for root in DEFAULT_MODEL_ROOTS:
        node_host_path(cluster_dir, node, root).mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class Mount:
    container_path: str
    local: Path


def resolve_mounts(
    pod: Mapping[str, Any], container: Mapping[str, Any], cluster_dir: Path, workdir: Path
) -> list[Mount]:
    """The container's volume mounts as local directories, created as the kubelet would."""
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    node = str(pod["spec"].get("nodeName") or "")
    ensure_node_model_roots(cluster_dir, node)
    mounts = []
    for vm in container.get("volumeMounts") or []:
        volume = volumes.get(vm["name"])
        if volume is None:
            raise MountError(f"volume {vm['name']!r} is mounted but not defined")
        if "hostPath" in volume:
            spec = volume["hostPath"]
            local = node_host_path(cluster_dir, node, str(spec["path"]))
            kind = spec.get("type") or ""
            if kind == "DirectoryOrCreate":
                local.mkdir(parents=True, exist_ok=True)
            elif kind == "Directory" and not local.is_dir():
                raise MountError(f"hostPath {spec['path']} is not a directory on node {node} ({local})")
            elif not local.exists() and kind == "":
                local.mkdir(parents=True, exist_ok=True)  # "" means no check; a directory is what mounts need
        elif "emptyDir" in volume:
            local = workdir / "volumes" / vm["name"]
            local.mkdir(parents=True, exist_ok=True)
        elif _is_api_access(volume):
            continue  # the ServiceAccount token volume: the pod's API access is its KUBECONFIG instead
        else:
            kinds = sorted(k for k in volume if k != "name")
            raise MountError(f"volume {vm['name']!r} ({', '.join(kinds)}) is not supported by the local runner")
        sub = str(vm.get("subPath") or "")
        container_path = posixpath.normpath(str(vm["mountPath"]))
        if sub:
            if posixpath.isabs(sub) or ".." in sub.split("/"):
                raise MountError(f"subPath {sub!r} of volume {vm['name']!r} leaves the volume")
            volume_root = local
            local = local / sub
            local.mkdir(parents=True, exist_ok=True)  # the kubelet creates a missing subPath
            host_path = str((volume.get("hostPath") or {}).get("path") or "")
            if host_path and container_path == posixpath.join(host_path, sub):
                mounts.append(Mount(posixpath.normpath(host_path), volume_root))
        mounts.append(Mount(container_path, local))
    # Longest first: /raid/models/x must win over /raid for paths under both.
    return sorted(mounts, key=lambda m: len(m.container_path), reverse=True)


def _is_api_access(volume: Mapping[str, Any]) -> bool:
    sources = (volume.get("projected") or {}).get("sources") or []
    return any("serviceAccountToken" in src for src in sources)


def rewrite_path(word: str, mounts: Sequence[Mount]) -> str:
    """`word` with a leading container path (or `--flag=` + one) replaced by its local directory."""
    flag, eq, value = word.partition("=")
    if eq and flag.startswith("-"):
        return f"{flag}={rewrite_path(value, mounts)}"
    for m in mounts:
        if word == m.container_path:
            return str(m.local)
        if word.startswith(m.container_path.rstrip("/") + "/"):
            return str(m.local / word[len(m.container_path.rstrip("/")) + 1 :])
    return word


def resolve_hub(pod_endpoint: str | None, cluster_hub: str | None) -> str:
    """The hub a download pod reaches: its own when on loopback, else the cluster's (see module doc)."""
    if pod_endpoint:
        parsed = urllib.parse.urlsplit(pod_endpoint)
        try:
            loopback = parsed.scheme in ("http", "https") and ipaddress.ip_address(parsed.hostname or "").is_loopback
        except ValueError:
            loopback = parsed.hostname == "localhost"
        if loopback:
            return pod_endpoint
    return cluster_hub or NO_HUB


def secret_env(container: Mapping[str, Any], read_secret: Callable[[str], Obj | None]) -> dict[str, str]:
    """Environment entries from `secretKeyRef`s; raises when a required Secret or key is missing."""
    env: dict[str, str] = {}
    for entry in container.get("env") or []:
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
        if not ref:
            continue
        secret = read_secret(str(ref["name"]))
        data = (secret or {}).get("data") or {}
        if ref["key"] not in data:
            if ref.get("optional"):
                continue
            missing = f'secret "{ref["name"]}" not found' if secret is None else f"key {ref['key']!r} not in it"
            raise MountError(f"CreateContainerConfigError: {missing}")
        env[entry["name"]] = base64.b64decode(data[ref["key"]]).decode()
    return env


def download_launch(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    cluster_dir: Path,
    workdir: Path,
    kubeconfig: Path,
    cluster_hub: str | None,
    read_secret: Callable[[str], Obj | None],
) -> tuple[list[str], dict[str, str]]:
    """argv and environment of the download container's process on this stand-in node."""
    mounts = resolve_mounts(pod, container, cluster_dir, workdir)
    literal = container_env(pod, container)
    env = {**literal, **secret_env(container, read_secret)}
    env = {k: rewrite_path(v, mounts) for k, v in env.items()}
    words = [expand_k8s(str(a), literal) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
    if words and posixpath.basename(words[0]) == ENTRY_POINT:
        words = words[1:]
    argv = [str(Path(sys.executable).parent / ENTRY_POINT), *(rewrite_path(w, mounts) for w in words)]
    tmp = next((m.local for m in mounts if m.container_path == "/tmp"), workdir / "tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "PATH": "/usr/bin:/bin",
            "HOME": str(workdir),
            "TMPDIR": str(tmp),
            "KUBECONFIG": str(kubeconfig),
            "TERMINATION_MESSAGE_PATH": str(termination_path(workdir, str(container["name"]))),
            "HF_ENDPOINT": resolve_hub(literal.get("HF_ENDPOINT"), cluster_hub),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return argv, env


def termination_path(workdir: Path, container: str) -> Path:
    return workdir / f"{container}.{TERMINATION_LOG}"
