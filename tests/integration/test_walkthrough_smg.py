"""The seed walkthrough with our catalog's Kimi K2 files: the router is the current SGLang gateway,
`smg launch` (PyPI smg 1.13.0), run by the local cluster's runner with the command line the
operator rendered from config/runtimes/srt/kimi-k2-pd-rt.yaml.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.operator import OperatorProcess, apply_crds, write_operator_kubeconfig
from devtools.walkthrough import BODY, PortForward, get, port_8080, post, run_curl, served_by

from .operator_env import condition, kjson, running_operator

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
CATALOG = (
    REPO / "config/models/moonshotai/Kimi-K2-Instruct.yaml",
    REPO / "config/runtimes/srt/kimi-k2-pd-rt.yaml",
    REPO / "config/samples/isvc/moonshotai/kimi-k2-pd.yaml",
)
NS = ISVC = "kimi-k2-instruct"
PREFILL_LEADER, DECODE_LEADER = f"{ISVC}-engine-0-0", f"{ISVC}-decoder-0-0"


def gpu_pods(cluster: ClusterHandle) -> list[str]:
    return [
        p["metadata"]["name"]
        for p in kjson(cluster, "get", "pods", "-A", "-l", "component in (engine,decoder)")["items"]
    ]


@pytest.fixture(scope="module")
def catalog(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    apply_crds(cluster)
    kubeconfig = write_operator_kubeconfig(cluster, tmp_path_factory.mktemp("operator") / "kubeconfig")
    with running_operator(kubeconfig, tmp_path_factory.mktemp("operator-log") / "operator.log") as op:
        wait_for(lambda: not gpu_pods(cluster), timeout=180, interval=1, what="no other engine pods (all GPUs needed)")
        t0 = time.monotonic()
        for path in CATALOG:
            cluster.kubectl("apply", "-f", str(path))

        def ready() -> bool:
            obj = kjson(cluster, "get", "inferenceservice", ISVC, "-n", NS)
            return condition(obj, "Ready").get("status") == "True"

        wait_for(ready, timeout=300, interval=1, what="the catalog's Kimi K2 Ready")
        print(f"\ncatalog Kimi K2 (router: smg) Ready in {time.monotonic() - t0:.1f} s")
        try:
            yield op
        finally:
            cluster.kubectl("delete", "-f", str(CATALOG[2]), "--ignore-not-found", "--wait=false")
            wait_for(lambda: not gpu_pods(cluster), timeout=180, interval=1, what="the catalog deployment's pods gone")
            cluster.kubectl("delete", "-f", str(CATALOG[1]), "-f", str(CATALOG[0]), "--ignore-not-found")


@pytest.fixture(scope="module")
def forward(
    cluster: ClusterHandle, catalog: OperatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    with port_8080():
        pf = PortForward(cluster.kubeconfig, tmp_path_factory.mktemp("port-forward") / "port-forward.log").start()
        try:
            yield
        finally:
            pf.stop()


def test_router_pod_runs_smg(cluster: ClusterHandle, forward: None) -> None:
    pod = kjson(cluster, "get", "pods", "-n", NS, "-l", "component=router")["items"][0]
    command = pod["spec"]["containers"][0]["command"]
    assert command[:2] == ["smg", "launch"], command
    log = cluster.kubectl("logs", "-n", NS, pod["metadata"]["name"]).stdout
    assert "PrefillDecode" in log, log[-2000:]
    print(f"\nrouter log (first lines):\n{chr(10).join(log.splitlines()[:3])}")


def test_seed_commands_answer_through_smg(cluster: ClusterHandle, forward: None) -> None:
    """smg 1.13.0 turns on its multi-model (IGW) mode whenever service discovery is on, and then
    refuses a /generate body that names no model, which the seed's does not: its verbatim curl gets
    smg's own error. The same body naming the model that smg discovered is served through PD."""
    body = run_curl(cluster.kubeconfig)
    print(f"\n$ curl ... (the seed's command, verbatim)\n{body}")
    assert json.loads(body)["error"]["code"] == "missing_model", body
    status, raw = get("/v1/models")
    assert status == 200, raw
    models = [m["id"] for m in json.loads(raw)["data"]]
    print(f"smg's /v1/models: {models}")
    assert models, raw
    status, raw = post("/generate", {**BODY, "model": models[0]})
    assert status == 200, raw
    reply = json.loads(raw)
    print(f'with "model": {models[0]!r}: {raw.decode()[:400]}...')
    text, info = reply["text"], reply["meta_info"]["stand_in"]
    assert text.strip() and len(text.split()) == reply["meta_info"]["completion_tokens"] > 0
    assert info["decode_pod"] == DECODE_LEADER and info["prefill_pod"] == PREFILL_LEADER, info
    assert info["sglang_flags"] == "0.5.23", info  # the catalog's image names SGLang 0.5.23
    room = info["bootstrap_room"]
    assert isinstance(room, int)
    print(f"served by {served_by(reply)}")
    prefill_log = cluster.kubectl("logs", "-n", NS, PREFILL_LEADER).stdout
    assert (
        f"'bootstrap_room': {room}, 'prefill_pod': '{PREFILL_LEADER}', 'decode_pod': '{DECODE_LEADER}'" in prefill_log
    )
    status, raw = post("/generate", {"text": "Hi", "model": models[0], "sampling_params": {"max_new_tokens": 50}})
    assert status == 200 and len(json.loads(raw)["text"].split()) == 50, raw


def test_chat_streaming_through_smg(cluster: ClusterHandle, forward: None) -> None:
    request = urllib.request.Request(
        "http://localhost:8080/v1/chat/completions",
        data=json.dumps(
            {
                "model": "moonshotai/Kimi-K2-Instruct",
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 12,
                "stream": True,
            }
        ).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200
        lines = [line.decode().strip() for line in response if line.strip()]
    assert lines[-1] == "data: [DONE]", lines[-3:]
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert len(content.split()) == 12, content
    print(f"\nstreamed {len(chunks)} chunks through smg: {content!r}")
