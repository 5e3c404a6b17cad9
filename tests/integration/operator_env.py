"""Shared set-up for tests that run the operator: CRDs, an operator identity of its own, the process.

The operator gets its own ServiceAccount (bound to cluster-admin here; the chart's least-privilege
role is proven by the chart tests) so the audit log tells its writes from the test's.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.operator import OperatorProcess

REPO = Path(__file__).resolve().parents[2]
SHARED_REFERENCE = REPO.parent / "shared" / "reference" / "ome"
GOLDEN_REFERENCE = REPO / "tests" / "golden" / "kimi-k2-reference" / "input"
OPERATOR_NAMESPACE = "ome"
OPERATOR_ACCOUNT = "ome-operator-test"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}"


def reference_files() -> dict[str, Path]:
    """OME's three Kimi K2 files, unchanged (the golden copy is byte-identical, checked by a test)."""
    if SHARED_REFERENCE.is_dir():
        base = SHARED_REFERENCE / "config"
        return {
            "model": base / "models/moonshotai/Kimi-K2-Instruct.yaml",
            "runtime": base / "runtimes/srt/kimi-k2-pd-rt.yaml",
            "isvc": base / "samples/isvc/moonshotai/kimi-k2-pd.yaml",
        }
    return {
        "model": GOLDEN_REFERENCE / "Kimi-K2-Instruct.yaml",
        "runtime": GOLDEN_REFERENCE / "kimi-k2-pd-rt.yaml",
        "isvc": GOLDEN_REFERENCE / "kimi-k2-pd.yaml",
    }


def kjson(cluster: ClusterHandle, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def apply_crds(cluster: ClusterHandle) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for crd in ("inferenceservices", "clusterbasemodels", "basemodels", "clusterservingruntimes", "servingruntimes"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}.ome.io", "--timeout=60s")


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


@contextlib.contextmanager
def running_operator(kubeconfig: Path, log_path: Path, *args: str) -> Iterator[OperatorProcess]:
    op = OperatorProcess(kubeconfig, log_path, "--resync-seconds", "20", *args).start()
    try:
        op.wait_ready()
        yield op
    finally:
        op.stop()


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


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
