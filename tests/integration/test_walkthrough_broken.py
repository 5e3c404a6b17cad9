"""A runtime whose group wiring is wrong never serves, and the InferenceService says which part.

Broken copies of OME's Kimi K2 runtime, made here: the prefill group told it has 8 nodes while it
has 4 (`--nnodes`), or the decode group pointed at a leader address no headless Service publishes
(the leaders' Service instead of the group's). On the local cluster the stand-in engines rendezvous
for real (devtools.standin_engine), so such a group never assembles and its leader's /health, behind
the readiness probe the operator adds, never passes.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.operator import OperatorProcess, apply_crds, reference_files, write_operator_kubeconfig

from .operator_env import condition, kjson, running_operator

pytestmark = pytest.mark.integration
ISVC = "kimi-k2-instruct"
OBSERVE_SECONDS = 30


@pytest.fixture(scope="module")
def operator(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    apply_crds(cluster)
    kubeconfig = write_operator_kubeconfig(cluster, tmp_path_factory.mktemp("operator") / "kubeconfig")
    with running_operator(kubeconfig, tmp_path_factory.mktemp("operator-log") / "operator.log") as op:
        yield op


def _replace_arg(command: list[str], flag: str, value: str) -> list[str]:
    i = command.index(flag)
    return [*command[: i + 1], value, *command[i + 2 :]]


def broken_runtime(variant: str, namespace: str) -> tuple[dict[str, Any], str, str]:
    """A copy of OME's runtime with one thing wrong; returns it, the broken and the intact component."""
    runtime = yaml.safe_load(reference_files().runtime.read_text())
    runtime["metadata"]["name"] = f"srt-kimi-k2-pd-broken-{variant}"
    spec = runtime["spec"]
    if variant == "group-size":
        for role in ("leader", "worker"):
            runner = spec["engineConfig"][role]["runner"]
            # 8 divides --tp-size 32, so each rank starts; ranks 4..7 never come.
            runner["command"] = _replace_arg(runner["command"], "--nnodes", "8")
        return runtime, "engine", "decoder"
    wrong = f"{ISVC}-decoder-0-0.{ISVC}-decoder.{namespace}:5757"  # the leaders' Service, not headless
    for role in ("leader", "worker"):
        runner = spec["decoderConfig"][role]["runner"]
        runner["command"] = _replace_arg(runner["command"], "--dist-init-addr", wrong)
    return runtime, "decoder", "engine"


def gpu_pods(cluster: ClusterHandle) -> list[str]:
    pods = kjson(cluster, "get", "pods", "-A", "-l", "component in (engine,decoder)")["items"]
    return [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods]


@pytest.mark.parametrize("variant", ["group-size", "leader-address"])
def test_broken_group_never_becomes_healthy(
    cluster: ClusterHandle, operator: OperatorProcess, variant: str, tmp_path: Path
) -> None:
    # Every GPU is needed: wait for other tests' deployments to be gone.
    wait_for(lambda: not gpu_pods(cluster), timeout=180, interval=1, what="no other engine pods")
    namespace = f"broken-{variant}"
    runtime, broken, intact = broken_runtime(variant, namespace)
    docs = list(yaml.safe_load_all(reference_files().isvc.read_text()))
    isvc = copy.deepcopy(next(d for d in docs if d["kind"] == "InferenceService"))
    isvc["metadata"]["namespace"] = namespace
    isvc["spec"]["runtime"]["name"] = runtime["metadata"]["name"]
    files = tmp_path / "broken.yaml"
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    files.write_text(yaml.safe_dump_all([ns, runtime, isvc]))
    cluster.kubectl("apply", "-f", str(reference_files().model))
    cluster.kubectl("apply", "-f", str(files))
    try:
        conditions = {"engine": "EngineReady", "decoder": "DecoderReady"}

        def get() -> dict[str, Any]:
            return dict(kjson(cluster, "get", "inferenceservice", ISVC, "-n", namespace))

        wait_for(
            lambda: condition(get(), conditions[intact]).get("status") == "True",
            timeout=240,
            interval=1,
            what=f"the intact {intact} to be ready",
        )
        t0 = time.monotonic()
        while time.monotonic() - t0 < OBSERVE_SECONDS:
            obj = get()
            assert condition(obj, conditions[broken]).get("status") != "True", condition(obj, conditions[broken])
            assert condition(obj, "Ready").get("status") != "True", condition(obj, "Ready")
            time.sleep(1)
        ready, part = condition(obj, "Ready"), condition(obj, conditions[broken])
        print(f"\n{variant}: after {OBSERVE_SECONDS} s\n  Ready: {ready}\n  {conditions[broken]}: {part}")
        assert conditions[broken] in ready.get("message", ""), ready
        leader = f"{ISVC}-{broken}-0-0"
        log = wait_for(
            lambda: cluster.kubectl("logs", "-n", namespace, leader, check=False).stdout,
            timeout=30,
            what=f"the log of {leader}",
        )
        print(f"  last lines of {leader}:\n    " + "\n    ".join(log.strip().splitlines()[-3:]))
        assert "stand-in" in log
    finally:
        cluster.kubectl("delete", "-f", str(files), "--ignore-not-found", "--wait=false")
        wait_for(lambda: not gpu_pods(cluster), timeout=180, interval=1, what="the broken deployment's pods gone")
        cluster.kubectl("delete", "-f", str(reference_files().model), "--ignore-not-found")
