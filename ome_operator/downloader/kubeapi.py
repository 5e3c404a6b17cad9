"""Publishing progress to the Job's own ConfigMap, with the least privilege that allows it.

The operator creates the ConfigMap before the Job and binds the Job's ServiceAccount to a Role
with `resourceNames: [<that ConfigMap>]` and verbs get/update/patch: the Job can write exactly one
object and read nothing else. One ConfigMap serves all of a model's Jobs: each merge-patches only
its own key, `data[<node name>]` (or `data.progress` without --node-name), so the Jobs of 16
nodes never overwrite each other and need no read-modify-write. Credentials come from the pod's ServiceAccount (re-read on every request: bound
tokens rotate) or from a kubeconfig (`--kubeconfig` or `KUBECONFIG`), for running outside a pod.
Progress is advisory: every failure here is logged once and otherwise ignored.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import ssl
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from ome_operator.downloader.report import Redactor

LOG = logging.getLogger("ome_operator.downloader")

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
REQUEST_TIMEOUT_S = 5.0


@dataclass
class KubeTarget:
    server: str
    verify: ssl.SSLContext | bool
    token: str | None = None
    token_file: Path | None = None

    def bearer(self) -> str | None:
        if self.token_file is not None:
            return self.token_file.read_text().strip()
        return self.token


def in_cluster_target(sa_dir: Path = SERVICE_ACCOUNT_DIR) -> KubeTarget | None:
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port or not (sa_dir / "token").exists():
        return None
    if ":" in host:
        host = f"[{host}]"
    ca = sa_dir / "ca.crt"
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca)) if ca.exists() else True
    return KubeTarget(server=f"https://{host}:{port}", verify=verify, token_file=sa_dir / "token")


def kubeconfig_target(path: Path) -> KubeTarget:
    config = yaml.safe_load(path.read_text()) or {}

    def named(section: str, name: str) -> dict[str, Any]:
        for item in config.get(section) or []:
            if item.get("name") == name:
                return dict(item.get(section[:-1]) or {})
        raise ValueError(f"kubeconfig {path}: no {section[:-1]} named {name!r}")

    context = named("contexts", config.get("current-context", ""))
    cluster = named("clusters", context.get("cluster", ""))
    user = named("users", context.get("user", "")) if context.get("user") else {}
    server = str(cluster["server"]).rstrip("/")
    verify: ssl.SSLContext | bool = True
    if server.startswith("https://"):
        if cluster.get("insecure-skip-tls-verify"):
            verify = False
        else:
            ctx = ssl.create_default_context()
            if cluster.get("certificate-authority-data"):
                ctx.load_verify_locations(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
            elif cluster.get("certificate-authority"):
                ctx.load_verify_locations(cafile=_relative_to(path, cluster["certificate-authority"]))
            _load_client_cert(ctx, path, user)
            verify = ctx
    token_file = Path(_relative_to(path, user["tokenFile"])) if user.get("tokenFile") else None
    return KubeTarget(server=server, verify=verify, token=user.get("token"), token_file=token_file)


def _relative_to(kubeconfig: Path, file: str) -> str:
    return str((kubeconfig.parent / file).resolve())


def _load_client_cert(ctx: ssl.SSLContext, kubeconfig: Path, user: dict[str, Any]) -> None:
    if user.get("client-certificate-data") and user.get("client-key-data"):
        # ssl only loads certificates from files: write them to a private temp dir, then drop it.
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
            key.touch(mode=0o600)
            key.write_bytes(base64.b64decode(user["client-key-data"]))
            ctx.load_cert_chain(str(cert), str(key))
    elif user.get("client-certificate") and user.get("client-key"):
        ctx.load_cert_chain(
            _relative_to(kubeconfig, user["client-certificate"]), _relative_to(kubeconfig, user["client-key"])
        )


def resolve_target(kubeconfig: str | None) -> KubeTarget | None:
    """An explicit kubeconfig (flag, then KUBECONFIG) wins over the pod's ServiceAccount, as with kubectl."""
    explicit = kubeconfig or os.environ.get("KUBECONFIG")
    if explicit:
        return kubeconfig_target(Path(explicit.split(os.pathsep)[0]))
    return in_cluster_target()


def parse_configmap_ref(ref: str) -> tuple[str, str]:
    namespace, slash, name = ref.partition("/")
    if not slash or not namespace or not name or "/" in name:
        raise ValueError(f"--progress-configmap {ref!r}: expected NAMESPACE/NAME")
    return namespace, name


class ConfigMapPublisher:
    """Merge-patches this node's key of one ConfigMap with the progress snapshot (JSON)."""

    def __init__(self, target: KubeTarget, namespace: str, name: str, node: str | None, redactor: Redactor) -> None:
        self._target = target
        self._url = (
            f"{target.server}/api/v1/namespaces/{urllib.parse.quote(namespace)}/configmaps/{urllib.parse.quote(name)}"
        )
        self._ref = f"{namespace}/{name}"
        self._node = node
        self._redactor = redactor
        self._client = httpx.Client(verify=target.verify, timeout=REQUEST_TIMEOUT_S)
        self._warned: set[int | str] = set()
        self.key = node or "progress"

    def publish(self, snapshot: dict[str, Any], final: bool) -> None:
        snap = dict(snapshot, node=self._node) if self._node else dict(snapshot)
        self._patch({"data": {self.key: self._redactor.json(snap)}})
        if final:
            self._client.close()

    def _patch(self, body: dict[str, Any]) -> None:
        headers = {"content-type": "application/merge-patch+json", "accept": "application/json"}
        try:
            bearer = self._target.bearer()
            if bearer:
                headers["authorization"] = f"Bearer {bearer}"
            response = self._client.patch(self._url, content=json.dumps(body).encode(), headers=headers)
        except (httpx.HTTPError, OSError) as exc:
            self._warn_once(type(exc).__name__, f"cannot reach the API server: {type(exc).__name__}")
            return
        if response.status_code == 404:
            self._warn_once(404, "does not exist; the operator creates it before the Job, so progress is not shown")
        elif response.status_code in (401, 403):
            self._warn_once(response.status_code, f"HTTP {response.status_code}: the ServiceAccount may not patch it")
        elif response.status_code >= 300:
            self._warn_once(response.status_code, f"HTTP {response.status_code}")

    def _warn_once(self, key: int | str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            LOG.warning("progress ConfigMap %s: %s", self._ref, message)
