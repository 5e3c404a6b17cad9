"""The seed walkthrough, served: `kubectl port-forward` + `curl /generate` answered through the real
router in PD mode, with OME's three Kimi K2 files applied unchanged.

The local cluster's runner (devtools.runner) starts the real sglang-router for the router pod and a
stand-in SGLang server (devtools.standin_engine) for each of the 16 engine pods, bound to the pods'
loopback IPs; kwok's kubelet server carries `kubectl port-forward` and `kubectl logs`. The tests run
in file order and share one operator and one InferenceService.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.operator import OperatorProcess, apply_crds, reference_files, write_operator_kubeconfig
from devtools.walkthrough import PortForward, get, port_8080, post, run_curl, served_by, standin_pids

from .operator_env import condition, kjson, running_operator

pytestmark = pytest.mark.integration
NS = ISVC = "kimi-k2-instruct"
PREFILL_LEADER, DECODE_LEADER = f"{ISVC}-engine-0-0", f"{ISVC}-decoder-0-0"


def isvc(cluster: ClusterHandle) -> dict[str, Any]:
    return dict(kjson(cluster, "get", "inferenceservice", ISVC, "-n", NS))


def ready_status(cluster: ClusterHandle) -> str:
    return condition(isvc(cluster), "Ready").get("status", "")


@pytest.fixture(scope="module")
def operator(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    apply_crds(cluster)
    kubeconfig = write_operator_kubeconfig(cluster, tmp_path_factory.mktemp("operator") / "kubeconfig")
    with running_operator(kubeconfig, tmp_path_factory.mktemp("operator-log") / "operator.log") as op:
        yield op


@pytest.fixture(scope="module")
def kimi(cluster: ClusterHandle, operator: OperatorProcess) -> Iterator[None]:
    files = reference_files()
    t0 = time.monotonic()
    for path in files:
        cluster.kubectl("apply", "-f", str(path))
    wait_for(lambda: ready_status(cluster) == "True", timeout=300, interval=1, what="Kimi K2 Ready")
    print(f"\nOME's Kimi K2 files Ready (leaders answering /health) in {time.monotonic() - t0:.1f} s")
    try:
        yield
    finally:
        cluster.kubectl("delete", "-f", str(files.isvc), "--ignore-not-found", "--wait=false")
        cluster.kubectl("delete", "-f", str(files.runtime), "-f", str(files.model), "--ignore-not-found")


@pytest.fixture(scope="module")
def forward(cluster: ClusterHandle, kimi: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PortForward]:
    with port_8080():
        pf = PortForward(cluster.kubeconfig, tmp_path_factory.mktemp("port-forward") / "port-forward.log").start()
        try:
            yield pf
        finally:
            pf.stop()


def pod_ip(cluster: ClusterHandle, name: str) -> str:
    return str(kjson(cluster, "get", "pod", name, "-n", NS)["status"]["podIP"])


def test_seed_commands_answer_through_the_router(cluster: ClusterHandle, forward: PortForward) -> None:
    body = run_curl(cluster.kubeconfig)
    print(f"\n$ curl ... (the seed's command)\n{body}")
    reply = json.loads(body)
    text, meta = reply["text"], reply["meta_info"]
    assert text.strip(), reply
    assert len(text.split()) == meta["completion_tokens"] > 0
    assert meta["finish_reason"]["type"] == "length" and meta["id"]
    assert "stand-in SGLang engine, not a model" in text
    info = meta["stand_in"]
    assert info["decode_pod"] == DECODE_LEADER and info["prefill_pod"] == PREFILL_LEADER, info
    room = info["bootstrap_room"]
    assert isinstance(room, int)
    print(f"served by {served_by(reply)}")
    # Both sides say so in their own logs, read the way a user would.
    decode_log = cluster.kubectl("logs", "-n", NS, DECODE_LEADER).stdout
    prefill_log = cluster.kubectl("logs", "-n", NS, PREFILL_LEADER).stdout
    assert f"'bootstrap_room': {room}, 'prefill_pod': '{PREFILL_LEADER}'" in decode_log
    assert (
        f"'bootstrap_room': {room}, 'prefill_pod': '{PREFILL_LEADER}', 'decode_pod': '{DECODE_LEADER}'" in prefill_log
    )
    router_log = cluster.kubectl("logs", "-n", NS, f"deployment/{ISVC}-router").stdout
    assert "PrefillDecode" in router_log, router_log[-2000:]
    # The same body from Python, for the status code curl -s does not print.
    status, raw = post("/generate", json.loads(json.dumps({"text": "The future of AI is", "max_new_tokens": 50})))
    assert status == 200, raw
    # SGLang reads max_new_tokens from sampling_params; the router forwards that.
    status, raw = post("/generate", {"text": "The future of AI is", "sampling_params": {"max_new_tokens": 50}})
    assert status == 200 and len(json.loads(raw)["text"].split()) == 50, raw


def test_chat_streaming_through_the_same_port_forward(cluster: ClusterHandle, forward: PortForward) -> None:
    import urllib.request

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
        assert response.headers["Content-Type"].startswith("text/event-stream")
        lines = [line.decode().strip() for line in response if line.strip()]
    assert lines[-1] == "data: [DONE]", lines[-3:]
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all(line.startswith("data: ") for line in lines)
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert len(content.split()) == 12, content
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    print(f"\nstreamed {len(chunks)} chunks: {content!r}")


def test_twenty_concurrent_requests_and_exactly_two_workers(cluster: ClusterHandle, forward: PortForward) -> None:
    def one(i: int) -> tuple[int, int]:
        status, raw = post("/generate", {"text": f"request {i}", "sampling_params": {"max_new_tokens": 20}})
        return status, len(json.loads(raw)["text"].split()) if status == 200 else -1

    t0 = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    print(f"\n20 concurrent requests in {time.monotonic() - t0:.2f} s: {results}")
    assert results == [(200, 20)] * 20
    status, raw = get("/workers")
    assert status == 200, raw
    urls = sorted(w["url"] for w in json.loads(raw)["workers"])
    expected = sorted(f"http://{pod_ip(cluster, p)}:30000" for p in (PREFILL_LEADER, DECODE_LEADER))
    assert urls == expected, raw


def _watch_pod(cluster: ClusterHandle, name: str, seen: list[dict[str, Any]], stop: threading.Event) -> None:
    from kubernetes import client, watch

    with cluster.api_client() as api:
        core = client.CoreV1Api(api)
        while not stop.is_set():
            for event in watch.Watch().stream(
                core.list_namespaced_pod, NS, field_selector=f"metadata.name={name}", timeout_seconds=5
            ):
                seen.append(api.sanitize_for_serialization(event["object"]))
                if stop.is_set():
                    break


def test_killed_decode_worker_restarts_its_group_once(cluster: ClusterHandle, forward: PortForward) -> None:
    victim = f"{ISVC}-decoder-0-worker-3"
    before = kjson(cluster, "get", "pod", victim, "-n", NS)
    pids = standin_pids(cluster.kubeconfig.parent, NS, victim)
    assert len(pids) == 1, pids
    seen: list[dict[str, Any]] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_pod, args=(cluster, victim, seen, stop), daemon=True)
    watcher.start()
    time.sleep(1)
    since = time.time()
    t0 = time.monotonic()
    os.kill(pids[0], signal.SIGKILL)
    wait_for(lambda: ready_status(cluster) == "False", timeout=60, interval=0.2, what="Ready=False after the kill")
    t_unready = time.monotonic() - t0
    wait_for(lambda: ready_status(cluster) == "True", timeout=240, interval=0.5, what="Ready=True again")
    t_ready = time.monotonic() - t0

    def good_reply() -> bool:
        status, raw = post("/generate", {"text": "again", "sampling_params": {"max_new_tokens": 5}}, timeout=10)
        return status == 200 and len(json.loads(raw)["text"].split()) == 5

    wait_for(good_reply, timeout=120, interval=0.5, what="a good reply after the group restart")
    t_reply = time.monotonic() - t0
    stop.set()
    print(
        f"\nkill -> Ready=False {t_unready:.1f} s, -> Ready=True {t_ready:.1f} s, -> first good reply {t_reply:.1f} s"
    )

    # Its container restarted as under a kubelet, before the group was recreated.
    mine = [p for p in seen if p["metadata"]["uid"] == before["metadata"]["uid"]]
    restarted = [
        cs
        for p in mine
        for cs in p["status"].get("containerStatuses") or []
        if cs.get("restartCount", 0) >= 1 and (cs.get("lastState") or {}).get("terminated", {}).get("exitCode") == 137
    ]
    assert restarted, [p["status"].get("containerStatuses") for p in mine[-3:]]
    print(f"victim's container status after the kill: {restarted[0]}")
    after = kjson(cluster, "get", "pods", "-n", NS, "-l", f"ome.io/inferenceservice={ISVC},component=decoder")["items"]
    assert len(after) == 12 and before["metadata"]["uid"] not in {p["metadata"]["uid"] for p in after}
    events = kjson(cluster, "get", "events", "-n", NS, "--field-selector", "reason=GroupRestart")["items"]
    recent = [
        e
        for e in events
        if "recreating decoder group 0" in e["message"]
        and time.mktime(time.strptime((e.get("lastTimestamp") or e["eventTime"])[:19], "%Y-%m-%dT%H:%M:%S"))
        - time.timezone
        >= since - 1
    ]
    assert len(recent) == 1 and recent[0].get("count", 1) == 1, [e["message"] for e in recent]
    assert f"pod {victim} failed (Error, exit code 137" in recent[0]["message"], recent[0]["message"]
