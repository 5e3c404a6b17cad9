"""The real SGLang router (PyPI `sglang-router`) as a local process that discovers pods of the local
control plane, with the credentials it would have inside its pod.

How its Kubernetes discovery authenticates (checked on sglang-router 0.3.2, a Rust extension built on
kube-rs 1.1): `kube::Config::infer()`, i.e. the kubeconfig named by KUBECONFIG (or ~/.kube/config)
first, and only without one the in-cluster files (KUBERNETES_SERVICE_HOST/PORT plus
/var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt}). So a kubeconfig holding nothing but a
ServiceAccount token and the cluster CA gives it exactly its in-pod identity, without writing under
/var/run. `RouterProcess` starts it with a scrubbed environment so no other credential (an admin
~/.kube/config, in-cluster variables, a proxy) can leak in.

The command line comes from the router pod the operator created: its `$(VAR)` references are expanded
the way the kubelet does (env `fieldRef`s resolved against the pod), then only the listen addresses
and the timeouts are changed so the process stays on loopback and never waits for minutes.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devtools.procs import free_port
from ome_operator.render.engine_args import expand_k8s

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
# A router that registers a worker loads that model's tokenizer, from the Hugging Face hub when the
# model path is not a local directory (here it never is). The hub endpoint goes to a loopback port
# where nothing listens, so that attempt fails at once without leaving the machine.
OFFLINE_HUB = {"HF_ENDPOINT": "http://127.0.0.1:1", "HF_HUB_OFFLINE": "1"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# One line per pod the discovery watcher accepts (sglang-router 0.3.x, src/service_discovery.rs).
_ADDING_POD = re.compile(r"Adding pod: (?P<name>\S+) \| type: (?P<type>[^|]+?) \| url: (?P<url>\S+)")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://(?P<host>\[[^\]]+\]|[^/\s:\"',)}]+)")
_LABEL = re.compile(r'(\w+)="([^"]*)"')
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")


# ------------------------------------------------------------------------------------------------
# Credentials
# ------------------------------------------------------------------------------------------------


def request_token(api: Any, namespace: str, service_account: str, pod: Mapping[str, Any], seconds: int = 600) -> str:
    """A TokenRequest (POST .../serviceaccounts/NAME/token) bound to `pod`, like the projected token the
    kubelet mounts into that pod: it stops working when the pod goes away."""
    from kubernetes import client

    body = client.AuthenticationV1TokenRequest.from_dict(
        {
            "spec": {
                "audiences": [],
                "expirationSeconds": seconds,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": pod["metadata"]["name"],
                    "uid": pod["metadata"]["uid"],
                },
            }
        }
    )
    core: Any = client.CoreV1Api(api)
    response = core.create_namespaced_service_account_token(service_account, namespace, body)
    token: str = response.status.token
    return token


def write_token_kubeconfig(path: Path, server: str, ca: Path, token: str, namespace: str) -> Path:
    """A kubeconfig with the cluster CA and one bearer token: no client certificate, nothing else."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "token", "user": {"token": token}}],
        "contexts": [{"name": "token", "context": {"cluster": "local", "user": "token", "namespace": namespace}}],
        "current-context": "token",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------


def _field_ref(pod: Mapping[str, Any], field_path: str) -> str | None:
    meta = pod.get("metadata") or {}
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", field_path)
    if m:
        value = (meta.get(m.group(1)) or {}).get(m.group(2))
        return None if value is None else str(value)
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": (pod.get("spec") or {}).get("nodeName"),
        "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName"),
        "status.podIP": (pod.get("status") or {}).get("podIP"),
        "status.hostIP": (pod.get("status") or {}).get("hostIP"),
    }
    value = simple.get(field_path)
    return None if value is None else str(value)


def container_env(pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: literal values (expanded against the
    entries before them) and `fieldRef`s read from the pod. Other sources are left out."""
    env: dict[str, str] = {}
    for entry in container.get("env") or []:
        if entry.get("value") is not None:
            env[entry["name"]] = expand_k8s(str(entry["value"]), env)
            continue
        field_path = ((entry.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if field_path:
            value = _field_ref(pod, field_path)
            if value is not None:
                env[entry["name"]] = value
    return env


def pod_command(pod: Mapping[str, Any], container_name: str = "router") -> list[str]:
    """The container's command + args with `$(VAR)` expanded, exactly what its process would get."""
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    container = containers[container_name]
    env = container_env(pod, container)
    argv = [*(container.get("command") or []), *(container.get("args") or [])]
    return [expand_k8s(str(a), env) for a in argv]


def set_flag(argv: Sequence[str], flag: str, value: str) -> list[str]:
    """Replace the value of `flag` (given as separate words) or append it."""
    out = list(argv)
    hits = [i for i, a in enumerate(out) if a == flag]
    if len(hits) > 1:
        raise ValueError(f"{flag} given {len(hits)} times in {out}")
    if hits:
        out[hits[0] + 1] = value
    else:
        out += [flag, value]
    return out


def local_router_argv(rendered: Sequence[str], port: int, metrics_port: int, **flags: str) -> list[str]:
    """The rendered router command, run by this interpreter, listening on 127.0.0.1 only, with short
    worker timeouts (pod IPs here are loopback addresses where no engine listens, and the rendered
    --worker-startup-timeout-secs would keep registration retrying for 20 minutes)."""
    words = list(rendered)
    module = words.index("-m") + 1
    if words[module] != "sglang_router.launch_router":
        raise ValueError(f"not a router command: {words}")
    argv = [sys.executable, "-m", *words[module:]]
    settings = {
        "--host": "127.0.0.1",
        "--port": str(port),
        # Its metrics listener would otherwise bind 0.0.0.0:29000.
        "--prometheus-host": "127.0.0.1",
        "--prometheus-port": str(metrics_port),
        "--worker-startup-timeout-secs": "5",
        "--worker-startup-check-interval": "1",
        "--health-check-timeout-secs": "1",
        # debug logs every address the router dials, which the loopback check reads.
        "--log-level": "debug",
        **{f"--{k.replace('_', '-')}": v for k, v in flags.items()},
    }
    for flag, value in settings.items():
        argv = set_flag(argv, flag, value)
    return argv


# ------------------------------------------------------------------------------------------------
# The process
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiscoveredPod:
    name: str
    role: str  # "prefill", "decode" or "regular"
    url: str


class RouterProcess:
    """One `sglang_router.launch_router` process (the Rust router runs inside it, same pid)."""

    def __init__(self, rendered: Sequence[str], kubeconfig: Path, workdir: Path, **flags: str) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.argv = local_router_argv(rendered, self.port, self.metrics_port, **flags)
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.log_path = workdir / "router.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RouterProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Only what the process needs: no admin kubeconfig via HOME, no KUBERNETES_SERVICE_* that
        # would enable the in-cluster fallback, no proxy variables kube-rs would honour.
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),
            "KUBECONFIG": str(self.kubeconfig),
            **OFFLINE_HUB,
        }
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        return self

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("router not started")
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # Its own session (start_new_session): the group is this process and anything it spawned.
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def get(self, path: str, metrics: bool = False) -> tuple[int, str]:
        port = self.metrics_port if metrics else self.port
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except OSError:
            return 0, ""

    def log(self) -> str:
        return _ANSI.sub("", self.log_path.read_text(errors="replace")) if self.log_path.exists() else ""

    def discovered(self) -> list[DiscoveredPod]:
        """Every pod the discovery watcher accepted, in log order."""
        found = []
        for m in _ADDING_POD.finditer(self.log()):
            role = m.group("type").strip()
            role = role.removeprefix("Some(").removesuffix(")").lower() if role != "None" else "regular"
            found.append(DiscoveredPod(m.group("name"), role, m.group("url")))
        return found

    def registration_done(self, url: str) -> bool:
        """Whether the AddWorker job of a discovered URL has finished, successfully or not."""
        return (
            re.search(rf"(?:Completed|Failed) job: type=AddWorker, worker={re.escape(url)}\b", self.log()) is not None
        )

    def metric(self, name: str, **labels: str) -> float | None:
        """A sample from the router's own Prometheus endpoint, None when it is not exported (yet)."""
        status, text = self.get("/metrics", metrics=True)
        if status != 200:
            return None
        for line in text.splitlines():
            m = re.fullmatch(rf"{re.escape(name)}(?:\{{(?P<labels>[^}}]*)\}})? (?P<value>\S+)", line)
            if m and dict(_LABEL.findall(m.group("labels") or "")) == labels:
                return float(m.group("value"))
        return None

    def non_loopback_mentions(self) -> list[str]:
        """Hosts of URLs and IPv4 literals in the log that are not inside 127.0.0.0/8 (hostnames
        count as not loopback: they could resolve anywhere)."""
        text = self.log()
        bad = []
        for m in _URL.finditer(text):
            if not _is_loopback(m.group("host").strip("[]")):
                bad.append(m.group(0))
        bad += [ip for ip in _IPV4.findall(text) if not _is_loopback(ip)]
        return sorted(set(bad))

    def sockets(self) -> list[tuple[str, str, str]]:
        """(local, remote, state) of this process's TCP sockets right now."""
        return process_tcp_sockets(self.pid)


def _die_with_parent() -> None:
    import ctypes

    # A killed test run must not leave a router watching the cluster; stop() handles the normal case.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host) in LOOPBACK or ipaddress.ip_address(host) == ipaddress.ip_address("::1")
    except ValueError:
        return False


# ------------------------------------------------------------------------------------------------
# Which addresses a process listens on and talks to (from /proc; no psutil needed)
# ------------------------------------------------------------------------------------------------

_TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN"}


def _decode_addr(hex_addr: str) -> str:
    host_hex, port_hex = hex_addr.split(":")
    raw = bytes.fromhex(host_hex)
    if len(raw) == 4:
        host = str(ipaddress.IPv4Address(raw[::-1]))
    else:
        # /proc stores IPv6 as four host-order 32-bit words.
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        v6 = ipaddress.IPv6Address(words)
        host = str(v6.ipv4_mapped or v6)
    return f"{host}:{int(port_hex, 16)}"


def process_tcp_sockets(pid: int) -> list[tuple[str, str, str]]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed between listing and reading
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            if cols[9] in inodes:
                out.append((_decode_addr(cols[1]), _decode_addr(cols[2]), _TCP_STATES.get(cols[3], cols[3])))
    return out


def address_is_loopback(addr: str) -> bool:
    """`host:port` from `process_tcp_sockets`; a wildcard (0.0.0.0, ::) is not loopback."""
    return _is_loopback(addr.rsplit(":", 1)[0])
