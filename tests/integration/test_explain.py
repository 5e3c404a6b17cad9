"""`ome-operator explain` against the operator on the local cluster, run as users run it (the console
script, an admin kubeconfig): a missing object (exit 2), a model name with a typo (exit 1, the advice
and the near name), OME's Kimi K2 files Ready (exit 0, the condition tree), a kwok pod's log (kwok
serves none: the reason, no traceback) and an engine that cannot be scheduled (exit 1, the pending
pods and the scheduler's Events).

Tests run in file order and share one operator. The module deletes what it created, the
InferenceService first and while the operator runs (it holds the finalizers), so later modules find
the cluster as this one found it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.operator import OperatorProcess, apply_crds, reference_files, write_operator_kubeconfig
from ome_operator.explain.observe import observe_log
from ome_operator.kube.client import Kube

from .operator_env import condition, kjson, running_operator

pytestmark = pytest.mark.integration
NS = ISVC = MODEL = "kimi-k2-instruct"
ORDER = {"InferenceService": 0, "Namespace": 2}  # everything else in between


def explain(cluster: ClusterHandle, *args: str, env_kubeconfig: bool = False) -> subprocess.CompletedProcess[str]:
    """The installed console script; the kubeconfig by flag, or by KUBECONFIG as `run` also takes it."""
    flags = [] if env_kubeconfig else ["--kubeconfig", str(cluster.kubeconfig)]
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)} if env_kubeconfig else dict(os.environ)
    cmd = [str(Path(sys.executable).parent / "ome-operator"), "explain", *flags, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=False)
    # -rP shows this for passing tests: the README draft quotes it.
    print(f"$ ome-operator explain {' '.join(args)}\n{proc.stdout}{proc.stderr}(exit {proc.returncode})")
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def get_or_none(cluster: ClusterHandle, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
    scope = ["-n", namespace] if namespace else []
    proc = cluster.kubectl("get", kind, name, *scope, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


@pytest.fixture(scope="module")
def operator(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    apply_crds(cluster)
    work = tmp_path_factory.mktemp("explain")
    with running_operator(write_operator_kubeconfig(cluster, work / "kubeconfig"), work / "operator.log") as op:
        yield op


@pytest.fixture(scope="module")
def kimi(cluster: ClusterHandle, operator: OperatorProcess) -> Iterator[None]:
    """OME's three Kimi K2 files, unchanged, until Ready; afterwards only what this module created is deleted."""
    objects = [
        (doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])
        for path in reference_files()
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]

    def settled() -> bool:  # an earlier module's deletion must finish before applying over it
        found = [get_or_none(cluster, kind, name, ns) for kind, ns, name in objects]
        return not any(obj and obj["metadata"].get("deletionTimestamp") for obj in found)

    wait_for(settled, timeout=90, interval=1, what="Kimi K2 objects of an earlier test to finish deleting")
    created = [(kind, ns, name) for kind, ns, name in objects if get_or_none(cluster, kind, name, ns) is None]
    try:
        for path in reference_files():
            cluster.kubectl("apply", "-f", str(path))
        wait_ready(cluster)
        yield
    finally:
        for kind, ns, name in sorted(created, key=lambda o: ORDER.get(o[0], 1)):
            scope = ["-n", ns] if ns else []
            cluster.kubectl("delete", kind, name, *scope, "--ignore-not-found", "--timeout=90s", check=False)


def wait_ready(cluster: ClusterHandle) -> None:
    def ready() -> bool:
        obj = get_or_none(cluster, "inferenceservice", ISVC, NS) or {"metadata": {}}
        current = (obj.get("status") or {}).get("observedGeneration") == obj["metadata"].get("generation")
        return current and condition(obj, "Ready").get("status") == "True"

    wait_for(ready, timeout=240, interval=0.5, what=f"InferenceService {ISVC} Ready")


def test_missing_object_exits_2(cluster: ClusterHandle, operator: OperatorProcess) -> None:
    proc = explain(cluster, "-n", "default", "no-such-isvc")
    assert proc.returncode == 2
    assert proc.stderr == "error: InferenceService no-such-isvc not found in namespace default\n"
    proc = explain(cluster, "cbm", "no-such-model", env_kubeconfig=True)
    assert proc.returncode == 2
    assert proc.stderr == "error: ClusterBaseModel no-such-model not found\n"


def test_model_not_found_exits_1_with_the_advice(cluster: ClusterHandle, kimi: None) -> None:
    with cluster.temp_namespace("explain") as ns:
        manifest = f"""
apiVersion: ome.io/v1beta1
kind: InferenceService
metadata: {{name: typo, namespace: {ns}}}
spec:
  model: {{name: kimi-k2-instrukt}}
  runtime: {{name: srt-kimi-k2-pd}}
  engine: {{minReplicas: 1}}
"""
        cluster.kubectl("apply", "-f", "-", stdin=manifest)
        wait_for(
            lambda: (
                condition(kjson(cluster, "get", "isvc", "typo", "-n", ns), "ModelReady").get("reason")
                == "ModelNotFound"
            ),
            timeout=30,
            what="ModelReady=False ModelNotFound",
        )
        proc = explain(cluster, "-n", ns, "typo")
    assert proc.returncode == 1, proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[0] == f"InferenceService {ns}/typo: not Ready: ModelReady=False (ModelNotFound)"
    marked = [line for line in lines if line.lstrip().startswith("->")]
    assert len(marked) == 1 and "ModelReady" in marked[0] and "ModelNotFound" in marked[0], marked
    assert "no BaseModel kimi-k2-instrukt" in marked[0]
    assert lines[-2].startswith("Next: create the model, or fix spec.model.name")
    assert lines[-1].strip() == f"did you mean ClusterBaseModel {MODEL}?"


def test_kimi_ready_exits_0_with_the_tree(cluster: ClusterHandle, kimi: None) -> None:
    proc = explain(cluster, "-n", NS, ISVC)
    assert proc.returncode == 0, proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[0] == f"InferenceService {NS}/{ISVC}: Ready"
    for type_ in ("Ready", "  ModelReady", "  RuntimeResolved", "  EngineReady", "  DecoderReady", "  RouterReady"):
        assert any(line[5:].startswith(type_ + " ") and " True " in line for line in lines), (type_, lines)
    assert (
        "  ready: engine 4/4 pods in 1/1 groups, decoder 12/12 pods in 1/1 groups, router 1/1 pods; 128 GPUs" in lines
    )
    assert f"  url: http://{ISVC}.{NS}.svc.cluster.local" in lines
    assert not any(line.lstrip().startswith("->") for line in lines)

    proc = explain(cluster, "clusterbasemodel", MODEL)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.startswith(f"ClusterBaseModel {MODEL}: Ready\n  state Ready, 16/16 nodes ready, progress 100%")
    assert "download Jobs in namespace ome: 16 Succeeded" in proc.stdout


def test_logs_unavailable_on_kwok_say_why(cluster: ClusterHandle, kimi: None) -> None:
    """kwok plays the kubelet and serves no container logs: the read says why instead of raising."""
    leader = kjson(cluster, "get", "pod", f"{ISVC}-engine-0-0", "-n", NS)
    with cluster.api_client() as api:
        tail = observe_log(Kube(api), leader)
    assert tail is not None and tail.container == "ome-container" and not tail.previous
    print(f"log of {leader['metadata']['name']}: {tail}")
    assert tail.lines or tail.unavailable


def test_unschedulable_engine_shows_pods_and_scheduler_events(cluster: ClusterHandle, kimi: None) -> None:
    patch = '{"spec":{"engine":{"minReplicas":%d,"maxReplicas":%d}}}'
    cluster.kubectl("patch", "isvc", ISVC, "-n", NS, "--type=merge", "-p", patch % (2, 2))
    try:

        def pending_with_events() -> bool:
            cond = condition(kjson(cluster, "get", "isvc", ISVC, "-n", NS), "EngineReady")
            events = kjson(cluster, "get", "events", "-n", NS, "--field-selector", "reason=FailedScheduling")
            return cond.get("reason") == "Unschedulable" and bool(events["items"])

        wait_for(pending_with_events, timeout=60, what="EngineReady=False Unschedulable and FailedScheduling Events")
        proc = explain(cluster, f"isvc/{ISVC}", "-n", NS)
    finally:
        cluster.kubectl("patch", "isvc", ISVC, "-n", NS, "--type=merge", "-p", patch % (1, 1))
    assert proc.returncode == 1, proc.stdout
    out = proc.stdout
    assert out.startswith(f"InferenceService {NS}/{ISVC}: not Ready: EngineReady=False (Unschedulable)\n"), out
    assert "engine: 4/8 pods ready" in out
    assert f"pod {ISVC}-engine-1-0 (no node): Pending" in out
    assert "not scheduled: 0/16 nodes are available" in out and "Insufficient nvidia.com/gpu" in out
    assert "Warning  FailedScheduling" in out
    assert "(3 more pods in the same state)" in out
    assert "Next: the pods wait for capacity" in out
    wait_ready(cluster)
    assert explain(cluster, "-n", NS, ISVC).returncode == 0
