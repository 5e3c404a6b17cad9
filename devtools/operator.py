"""Running `ome-operator run` as a local process for tests, the demo and benchmarks.

The operator gets its own ServiceAccount (bound to cluster-admin here; the chart's least-privilege
role is proven by the chart tests) so the audit log tells its writes from anyone else's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

import yaml

from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.procs import free_port

REPO = Path(__file__).resolve().parents[1]
OPERATOR_NAMESPACE = "ome"
OPERATOR_ACCOUNT = "ome-operator-test"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}"


class ReferenceFiles(NamedTuple):
    model: Path
    runtime: Path
    isvc: Path


def reference_files() -> ReferenceFiles:
    """OME's three Kimi K2 files, unchanged: the byte-identical copies kept in the repository (a clone
    has them; tests compare them with OME's originals where those are at hand)."""
    golden = REPO / "tests" / "golden" / "kimi-k2-reference" / "input"
    return ReferenceFiles(golden / "Kimi-K2-Instruct.yaml", golden / "kimi-k2-pd-rt.yaml", golden / "kimi-k2-pd.yaml")


class OperatorProcess:
    """One operator process; `kill()` is SIGKILL (no cleanup), `stop()` is a graceful SIGTERM."""

    def __init__(self, kubeconfig: Path, log_path: Path, *extra_args: str) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OperatorProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "ome-operator"),
                "run",
                "--kubeconfig",
                str(self.kubeconfig),
                "--health-listen",
                f"127.0.0.1:{self.port}",
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        return self

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.health_url + path, timeout=2) as response:
                return response.status, response.read().decode()
        except OSError:
            return 0, ""

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}; log: {self.log_path}")
            if self.get("/readyz")[0] == 200:
                return
            time.sleep(0.2)
        raise TimeoutError(f"operator not ready after {timeout} s; log: {self.log_path}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    def rss_kib(self) -> int:
        if self.proc is None:
            return 0
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


def apply_crds(cluster: ClusterHandle) -> None:
    # The API server compiles every CEL rule of the five CRDs on apply: minutes on a saturated machine.
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"), timeout=180)
    for crd in ("inferenceservices", "clusterbasemodels", "basemodels", "clusterservingruntimes", "servingruntimes"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}.ome.io", "--timeout=120s", timeout=150)


def write_operator_kubeconfig(cluster: ClusterHandle, path: Path) -> Path:
    """A kubeconfig carrying only a token of the operator's own ServiceAccount."""
    manifests = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": OPERATOR_ACCOUNT, "namespace": OPERATOR_NAMESPACE},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": OPERATOR_ACCOUNT},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_ACCOUNT, "namespace": OPERATOR_NAMESPACE}],
        },
    ]
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(manifests))
    token = wait_for(
        lambda: cluster.kubectl(
            "create", "token", OPERATOR_ACCOUNT, "-n", OPERATOR_NAMESPACE, "--duration=2h", check=False
        ).stdout.strip(),
        timeout=30,
        what="a token for the operator ServiceAccount",
    )
    server, ca = cluster.server()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "operator"}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def operator_writes(cluster: ClusterHandle, since: str) -> list[str]:
    """Write requests made by the operator's identity since an RFC 3339 time (from the audit log)."""
    writes = []
    for event in cluster.audit_events():
        if event.get("stage") != "ResponseComplete" or event.get("user", {}).get("username") != OPERATOR_USER:
            continue
        if event.get("requestReceivedTimestamp", "") < since:
            continue
        if event.get("verb") in ("create", "update", "patch", "delete", "deletecollection"):
            ref = event.get("objectRef", {})
            writes.append(f"{event['verb']} {ref.get('resource')}/{ref.get('subresource', '')} {ref.get('name')}")
    return writes
