"""One cluster, one API front, one operator (restartable) for the whole campaign.

The operator talks to the API server only through the front (its kubeconfig points there, with
its own ServiceAccount token); the campaign itself, playing the user, talks to the API server
directly, so the front's counters are the operator's requests and writes alone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from devtools.apifront import ApiFront
from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.operator import OperatorProcess, apply_crds, reference_files, write_operator_kubeconfig

NS = "kimi-k2-instruct"
ISVC = "kimi-k2-instruct"
MODEL = "kimi-k2-instruct"
RUNTIME = "srt-kimi-k2-pd"
SELECTOR = f"ome.io/inferenceservice={ISVC}"
RESYNC_SECONDS = 20
PATHS = {
    **dict.fromkeys(("pods", "services", "serviceaccounts", "configmaps", "nodes", "namespaces", "events"), "v1"),
    **dict.fromkeys(("statefulsets", "deployments", "replicasets"), "apps/v1"),
    "jobs": "batch/v1",
    **dict.fromkeys(("roles", "rolebindings"), "rbac.authorization.k8s.io/v1"),
    **dict.fromkeys(
        ("inferenceservices", "clusterbasemodels", "basemodels", "clusterservingruntimes", "servingruntimes"),
        "ome.io/v1beta1",
    ),
}
# A flow has converged once its goal holds and the operator has made no write for this long.
QUIET_SECONDS = 3.0


class ChaosEnv:
    def __init__(self, cluster: ClusterHandle, workdir: Path) -> None:
        self.cluster = cluster
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        apply_crds(cluster)
        token_kc = write_operator_kubeconfig(cluster, workdir / "operator-direct.kubeconfig")
        self.token: str = yaml.safe_load(token_kc.read_text())["users"][0]["user"]["token"]
        self.front = ApiFront(cluster.kubeconfig).start()
        self.kubeconfig = self.front.write_kubeconfig(workdir / "operator.kubeconfig", token=self.token)
        self.op: OperatorProcess | None = None
        # Fronts of other replicas (C5): their writes count towards "quiet" too.
        self.other_fronts: list[ApiFront] = []
        self.starts = 0
        self.files = reference_files()
        self.api: Any = cluster.api_client()

    # -- the operator -----------------------------------------------------------------------------
    def start_operator(self, *extra: str, wait: bool = True) -> OperatorProcess:
        self.starts += 1
        log = self.workdir / "logs" / f"operator-{self.starts:04d}.log"
        op = OperatorProcess(self.kubeconfig, log, "--resync-seconds", str(RESYNC_SECONDS), *extra).start()
        self.op = op
        if wait:
            op.wait_ready(timeout=90)
        return op

    def pid(self) -> int:
        assert self.op is not None and self.op.proc is not None
        return self.op.proc.pid

    def alive(self) -> bool:
        return self.op is not None and self.op.proc is not None and self.op.proc.poll() is None

    def ensure_operator(self) -> OperatorProcess:
        if not self.alive():
            return self.start_operator()
        assert self.op is not None
        return self.op

    def stop_operator(self) -> None:
        if self.op is not None:
            self.op.stop()

    def kill_operator(self) -> None:
        """SIGKILL: no shutdown of its own, as when its pod is removed with the node or the release."""
        if self.op is not None:
            self.op.kill()

    def close(self) -> None:
        self.stop_operator()
        self.front.stop()
        self.api.close()

    # -- the cluster, as the user sees it ---------------------------------------------------------
    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        return self.cluster.kubectl(*args, stdin=stdin, check=check, timeout=120).stdout

    def kjson(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def items(
        self, kind: str, namespace: str | None = None, selector: str | None = None, name: str | None = None
    ) -> list[dict[str, Any]]:
        """A list straight from the API server (admin credentials, not through the front); [] when
        the kind or namespace is not there. Cheaper than kubectl, which the campaign calls a lot."""
        group = PATHS[kind]
        base = f"/api/{group}" if group == "v1" else f"/apis/{group}"
        path = f"{base}/namespaces/{namespace}/{kind}" if namespace else f"{base}/{kind}"
        query = []
        if selector:
            query.append(("labelSelector", selector))
        if name:
            query.append(("fieldSelector", f"metadata.name={name}"))
        method, url, headers, body, post = self.api.param_serialize(
            "GET", path, query_params=query, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
        )
        response = self.api.call_api(method, url, header_params=headers, body=body, post_params=post)
        data: bytes = response.read() or b""
        if response.status == 404:
            return []
        if not 200 <= response.status <= 299:
            raise RuntimeError(f"GET {path}: {response.status} {data[:300]!r}")
        return list(json.loads(data).get("items") or [])

    def isvc(self) -> dict[str, Any] | None:
        found = self.items("inferenceservices", NS, name=ISVC)
        return found[0] if found else None

    def writes(self) -> int:
        return self.front.writes + sum(f.writes for f in self.other_fronts)

    def log_text(self) -> str:
        if self.op is None or not self.op.log_path.exists():
            return ""
        return self.op.log_path.read_text(errors="replace")

    def wait_quiet(self, goal: Any, timeout: float, what: str) -> float:
        """Wait until `goal()` holds and the operator has been quiet; seconds it took."""
        t0 = time.monotonic()
        state = {"writes": -1, "since": time.monotonic()}

        def probe() -> bool:
            writes = self.writes()
            if writes != state["writes"]:
                state["writes"], state["since"] = writes, time.monotonic()
                return False
            if time.monotonic() - state["since"] < QUIET_SECONDS:
                return False
            if not goal():
                state["since"] = time.monotonic() - QUIET_SECONDS + 0.5  # re-check soon
                return False
            return True

        wait_for(probe, timeout=timeout, interval=0.3, what=what)
        # The quiet window itself is not convergence time.
        return max(0.0, time.monotonic() - t0 - QUIET_SECONDS)


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def isvc_settled(obj: dict[str, Any] | None) -> bool:
    """Status observed the current generation (whatever Ready says)."""
    if not obj:
        return False
    return bool((obj.get("status") or {}).get("observedGeneration") == obj["metadata"].get("generation"))


def isvc_ready(obj: dict[str, Any] | None) -> bool:
    return isvc_settled(obj) and condition(obj, "Ready").get("status") == "True"
