"""The watch-backed cache on a real control plane: an idle operator is quiet, and a restarted API
server (every watch dropped) loses no change made while the streams were down.

Both read the API server's audit log. The cluster's audit policy records only writes, so the
module first restarts the API server with a policy that also records the operator's reads (a
no-op once devtools records them itself). The tests share one operator and OME's Kimi K2 files,
and remove them at the end so the GPUs are free for the modules that follow.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from bench.apiserver import audits_reads_of, describe, requests_by, response_code, restart_apiserver
from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.operator import OPERATOR_USER, OperatorProcess, apply_crds, reference_files, write_operator_kubeconfig

from .operator_env import condition, kjson, running_operator

pytestmark = pytest.mark.integration
NS = ISVC = "kimi-k2-instruct"
IDLE_SECONDS = 60
# kopf's peering heartbeat (only with --peering; the test operator runs standalone) is allowed too.
PEERING = "clusterkopfpeerings"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture(scope="module")
def operator(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    if cluster.audit_log is None:
        pytest.fail("these tests read the API server's audit log; this cluster has none")
    apply_crds(cluster)
    if not audits_reads_of(cluster, OPERATOR_USER):
        restart_apiserver(cluster, audit_user=OPERATOR_USER)
    directory = tmp_path_factory.mktemp("cache")
    kubeconfig = write_operator_kubeconfig(cluster, directory / "kubeconfig")
    files = reference_files()
    with running_operator(kubeconfig, directory / "operator.log") as op:
        try:
            for path in files:
                cluster.kubectl("apply", "-f", str(path))
            yield op
        finally:
            # While the operator runs: its sweep removes the model's node labels at once.
            cluster.kubectl("delete", "-f", str(files.isvc), "--ignore-not-found", "--wait=false")
            cluster.kubectl("delete", "-f", str(files.runtime), "-f", str(files.model), "--ignore-not-found")


def wait_ready(cluster: ClusterHandle, timeout: float = 240) -> dict[str, Any]:  # 16 real downloads first
    def probe() -> dict[str, Any] | None:
        obj: dict[str, Any] = kjson(cluster, "get", "inferenceservice", ISVC, "-n", NS)
        done = (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
        return obj if done and condition(obj, "Ready").get("status") == "True" else None

    return wait_for(probe, timeout=timeout, what="InferenceService Ready")


def not_watches(events: list[dict[str, Any]]) -> list[str]:
    return [
        describe(e)
        for e in events
        if e.get("verb") != "watch" and (e.get("objectRef") or {}).get("resource") != PEERING
    ]


def test_an_idle_ready_service_costs_only_watches(cluster: ClusterHandle, operator: OperatorProcess) -> None:
    wait_ready(cluster)
    # Workload status updates settle a few seconds after Ready; then every resync pass (20 s) must
    # be answered from the cache.
    wait_for(
        lambda: not not_watches(requests_by(cluster, OPERATOR_USER, since=_ago(5))),
        timeout=90,
        interval=1,
        what="the operator to go quiet",
    )
    start = now()
    time.sleep(IDLE_SECONDS)
    events = requests_by(cluster, OPERATOR_USER, since=start, until=now())
    assert not not_watches(events), f"requests other than watches in {IDLE_SECONDS} s idle: {not_watches(events)}"
    _, metrics = operator.get("/metrics")
    passes = [line for line in metrics.splitlines() if line.startswith('ome_reconcile_total{kind="InferenceService"}')]
    assert passes and float(passes[0].split()[-1]) >= 3, "the resync passes ran (and sent nothing)"


def test_a_dropped_watch_resumes_without_missing_a_change(cluster: ClusterHandle, operator: OperatorProcess) -> None:
    wait_ready(cluster)
    service = kjson(cluster, "get", "service", f"{ISVC}-engine", "-n", NS)
    router = kjson(cluster, "get", "deployment", f"{ISVC}-router", "-n", NS)
    restarted = now()
    restart_apiserver(cluster)
    # At once, while the operator's streams are still reconnecting: a child deleted and a child
    # edited. Neither may be missed, and neither may need a relist to be seen.
    cluster.kubectl("delete", "service", f"{ISVC}-engine", "-n", NS, "--wait=false")
    cluster.kubectl("scale", "deployment", f"{ISVC}-router", "-n", NS, "--replicas=3")

    def restored() -> bool:
        svc = cluster.kubectl("get", "service", f"{ISVC}-engine", "-n", NS, "-o", "json", check=False)
        if svc.returncode != 0:
            return False
        dep = kjson(cluster, "get", "deployment", f"{ISVC}-router", "-n", NS)
        new_uid = kjson(cluster, "get", "service", f"{ISVC}-engine", "-n", NS)["metadata"]["uid"]
        return bool(new_uid != service["metadata"]["uid"] and dep["spec"]["replicas"] == router["spec"]["replicas"])

    wait_for(restored, timeout=60, interval=0.5, what="the deleted Service recreated and the scaled router reset")
    wait_ready(cluster)
    # A restarted API server's watch cache begins at the current revision, so the version a stream
    # had reached is gone (410) and the cache lists once, diffing the list against what it held
    # (that is how the deletion above is seen); then it watches again from the list's version.
    after = requests_by(cluster, OPERATOR_USER, since=restarted)
    for resource in ("services", "deployments"):
        mine = [e for e in after if (e.get("objectRef") or {}).get("resource") == resource]
        watches = [e for e in mine if e.get("verb") == "watch"]
        # A list the restarting server refused (403 until its authorizer has loaded the roles, 503
        # while it starts) delivered nothing and is retried: only a list that was answered relists.
        lists = [e for e in mine if e.get("verb") == "list" and _answered(e)]
        assert watches, f"the {resource} stream was re-established"
        assert all("resourceVersion=" in e.get("requestURI", "") for e in watches), [e["requestURI"] for e in watches]
        assert len(lists) <= 1, f"at most one relist of {resource}, not a relist loop: {[describe(e) for e in lists]}"


def _answered(event: dict[str, Any]) -> bool:
    return 200 <= (response_code(event) or 0) < 300


def _ago(seconds: float) -> str:
    return datetime.fromtimestamp(time.time() - seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
