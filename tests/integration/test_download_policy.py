"""Download Jobs beyond one run, on the real control plane with real downloads:
- a Job whose pod dies (its process killed: a retryable failure) and that has no retries left is
  recreated as attempt 2 after the exponential delay, with a DownloadRetryScheduled condition first;
- with one download slot per node, a model no InferenceService serves waits while a served model's
  download runs on the node, and starts when it is done;
- downloadPolicy ReuseIfExists takes identical files from another model's copy on the node (hard
  links, each verified; no byte from the hub), and AlwaysDownload fetches them again.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.operator import OperatorProcess, apply_crds, write_operator_kubeconfig
from devtools.runner_download import node_host_path

from .operator_env import condition, kjson, running_operator
from .test_status_conditions import apply

pytestmark = pytest.mark.integration
NODE = "h200-011"


def model(name: str, path: str) -> dict[str, Any]:
    return {
        "apiVersion": "ome.io/v1beta1",
        "kind": "ClusterBaseModel",
        "metadata": {"name": name},
        "spec": {
            "storage": {
                "storageUri": "hf://moonshotai/Kimi-K2-Instruct",
                "path": path,
                "nodeSelector": {"kubernetes.io/hostname": NODE},
            }
        },
    }


@pytest.fixture(scope="module")
def operator(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    apply_crds(cluster)
    cluster.kubectl("create", "namespace", "ome", check=False)
    work = tmp_path_factory.mktemp("download-policy")
    kubeconfig = write_operator_kubeconfig(cluster, work / "kubeconfig")
    flags = ("--download-backoff-limit", "0", "--download-retry-delay", "3", "--download-slots-per-node", "1")
    with running_operator(kubeconfig, work / "operator.log", "--resync-seconds", "2", *flags) as op:
        yield op


def download_pids(dest: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"download" in args and any(a.endswith(dest.encode()) for a in args):
            found.append(int(entry.name))
    return found


def jobs_of(cluster: ClusterHandle, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kjson(cluster, "get", "jobs", "-n", "ome", "-l", f"ome.io/model=cluster.{name}")[
        "items"
    ]
    return items


def test_a_job_out_of_retries_is_recreated_after_a_delay(cluster: ClusterHandle, operator: object) -> None:
    dest = "/raid/models/test-policy/retry"
    apply(cluster, model("policy-retry", dest))
    try:
        # The node's process dies before it is done, as on a node crash: exit 137, not permanent.
        pids = wait_for(lambda: download_pids(dest), timeout=90, interval=0.02, what="the download process")
        os.kill(pids[0], signal.SIGKILL)

        def scheduled() -> dict[str, Any] | None:
            cond = condition(kjson(cluster, "get", "clusterbasemodel", "policy-retry"), "Downloaded")
            return cond if cond.get("reason") == "DownloadRetryScheduled" else None

        cond = wait_for(scheduled, timeout=60, what="Downloaded=False DownloadRetryScheduled")
        assert NODE in cond["message"] and "as attempt 2" in cond["message"], cond

        def ready() -> dict[str, Any] | None:
            obj = kjson(cluster, "get", "clusterbasemodel", "policy-retry")
            return obj if (obj.get("status") or {}).get("state") == "Ready" else None

        wait_for(ready, timeout=120, what="the model Ready after attempt 2")
        jobs = jobs_of(cluster, "policy-retry")
        assert [j["metadata"]["annotations"].get("ome.io/download-attempt") for j in jobs] == ["2"]
        assert jobs[0]["status"].get("succeeded") == 1
    finally:
        cluster.kubectl("delete", "clusterbasemodel", "policy-retry", "--ignore-not-found", "--timeout=60s")


def test_a_served_models_download_goes_first_on_a_busy_node(cluster: ClusterHandle, operator: object) -> None:
    isvc = {
        "apiVersion": "ome.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "wants-served", "namespace": "ome"},
        "spec": {
            "model": {"name": "policy-served"},
            "runtime": {"name": "no-such-runtime"},
            "engine": {"minReplicas": 1},
        },
    }
    apply(cluster, isvc, model("policy-served", "/raid/models/test-policy/served"))
    try:
        wait_for(lambda: jobs_of(cluster, "policy-served"), timeout=60, what="the served model's Job")
        apply(cluster, model("policy-idle", "/raid/models/test-policy/idle"))

        def queued() -> dict[str, Any] | None:
            obj = kjson(cluster, "get", "clusterbasemodel", "policy-idle")
            cond = condition(obj, "Downloaded")
            return cond if "queued" in cond.get("message", "") else None

        cond = wait_for(queued, timeout=60, interval=0.2, what="the idle model queued behind the served one")
        assert "at most 1 at once" in cond["message"], cond
        assert not jobs_of(cluster, "policy-idle")
        t_idle_queued = time.monotonic()

        def both_ready() -> bool:
            states = [
                (kjson(cluster, "get", "clusterbasemodel", n).get("status") or {}).get("state")
                for n in ("policy-served", "policy-idle")
            ]
            return states == ["Ready", "Ready"]

        wait_for(both_ready, timeout=180, what="both models Ready, one after the other")
        served = jobs_of(cluster, "policy-served")[0]["status"]["completionTime"]
        idle = jobs_of(cluster, "policy-idle")[0]
        assert idle["metadata"]["creationTimestamp"] >= served, (served, idle["metadata"]["creationTimestamp"])
        print(f"\nidle model queued, then started {time.monotonic() - t_idle_queued:.0f} s later")
    finally:
        cluster.kubectl("delete", "inferenceservice", "wants-served", "-n", "ome", "--ignore-not-found")
        for name in ("policy-served", "policy-idle"):
            cluster.kubectl("delete", "clusterbasemodel", name, "--ignore-not-found", "--timeout=60s")


def summary_of(cluster: ClusterHandle, name: str) -> dict[str, Any]:
    pods = kjson(cluster, "get", "pods", "-n", "ome", "-l", f"ome.io/model=cluster.{name}")["items"]
    done = [p for p in pods if p["status"].get("phase") == "Succeeded"]
    assert len(done) == 1, [p["status"].get("phase") for p in pods]
    found: dict[str, Any] = json.loads(done[0]["status"]["containerStatuses"][0]["state"]["terminated"]["message"])
    return found


def test_reuse_if_exists_takes_identical_files_from_another_models_copy(
    cluster: ClusterHandle, operator: object
) -> None:
    first, second, third = "policy-first", "policy-reuse", "policy-always"
    run = f"{os.getpid()}-{int(time.time())}"  # fresh directories: a reused cluster keeps its node files
    paths = {n: f"/raid/models/test-policy/{run}/{n}" for n in (first, second, third)}
    apply(cluster, model(first, paths[first]))
    try:

        def ready(name: str) -> Any:
            return lambda: (kjson(cluster, "get", "clusterbasemodel", name).get("status") or {}).get("state") == "Ready"

        wait_for(ready(first), timeout=120, what="the first copy Ready")
        reusing = model(second, paths[second])
        reusing["spec"]["storage"]["downloadPolicy"] = "ReuseIfExists"
        always = model(third, paths[third])
        always["spec"]["storage"]["downloadPolicy"] = "AlwaysDownload"
        apply(cluster, reusing, always)
        wait_for(ready(second), timeout=120, what="the reusing model Ready")
        wait_for(ready(third), timeout=120, what="the AlwaysDownload model Ready")

        root = cluster.kubeconfig.parent
        reused = summary_of(cluster, second)
        # /mnt/reuse in the pod; on this stand-in node, the first model's directory (runner's mapping).
        assert reused["reusedFrom"] == str(node_host_path(root, NODE, paths[first]))
        assert reused["filesSeeded"] == reused["files"], reused
        assert reused["bytesTransferred"] == 0, reused  # every byte came from the node, none from the hub
        assert reused["bytesHashed"] == reused["bytes"], reused  # and every byte was verified
        fetched = summary_of(cluster, third)
        assert "reusedFrom" not in fetched and fetched["bytesTransferred"] == fetched["bytes"], fetched
        a = node_host_path(root, NODE, paths[first]) / "config.json"
        b = node_host_path(root, NODE, paths[second]) / "config.json"
        c = node_host_path(root, NODE, paths[third]) / "config.json"
        assert a.stat().st_ino == b.stat().st_ino != c.stat().st_ino  # shared, not a second copy
        job = jobs_of(cluster, second)[0]["spec"]["template"]["spec"]
        reuse_volume = next(v for v in job["volumes"] if v["name"] == "reuse")
        assert reuse_volume["hostPath"] == {"path": paths[first], "type": "Directory"}
        mount = next(m for m in job["containers"][0]["volumeMounts"] if m["name"] == "reuse")
        assert mount["readOnly"] is True
    finally:
        for name in (third, second, first):
            cluster.kubectl("delete", "clusterbasemodel", name, "--ignore-not-found", "--timeout=60s")
