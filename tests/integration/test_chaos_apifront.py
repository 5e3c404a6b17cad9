"""Each fault of devtools.apifront.ApiFront against the real local kube-apiserver."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.apifront import ApiFront
from devtools.cluster import kubectl_path
from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.operator import OPERATOR_USER, write_operator_kubeconfig

pytestmark = pytest.mark.integration


@pytest.fixture
def front(cluster: ClusterHandle) -> Iterator[ApiFront]:
    with ApiFront(cluster.kubeconfig) as f:
        yield f


def conn(front: ApiFront, timeout: float = 10) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", front.port, timeout=timeout)


def request(
    front: ApiFront, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 10
) -> tuple[int, dict[str, str], bytes]:
    c = conn(front, timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        c.request(method, path, body=data, headers={"Content-Type": "application/json"})
        resp = c.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        c.close()


def configmap(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}}


def cm_exists(cluster: ClusterHandle, name: str) -> bool:
    return cluster.kubectl("get", "configmap", name, "-n", "default", check=False).returncode == 0


def test_forwards_and_counts(cluster: ClusterHandle, front: ApiFront, tmp_path: Path) -> None:
    kubeconfig = front.write_kubeconfig(tmp_path / "kc")
    name = f"front-{uuid.uuid4().hex[:6]}"
    out = subprocess.run(
        [str(kubectl_path()), f"--kubeconfig={kubeconfig}", "create", "configmap", name, "-n", "default"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert name in out.stdout
    assert cm_exists(cluster, name)
    assert front.writes == 1
    assert front.requests >= 1
    entries = front.log()
    assert [e["method"] for e in entries if e["write"]] == ["POST"]
    assert all(e["status"] in (200, 201) for e in entries)
    assert front.peak_rate() >= 1
    assert front.rate(window=60) > 0


def whoami(kubeconfig: Path) -> str:
    """The username the apiserver sees, through the Python client the operator uses."""
    from kubernetes import client, config

    new_client: Any = config.new_client_from_config
    with new_client(config_file=str(kubeconfig)) as api:
        auth: Any = client.AuthenticationV1Api(api)
        review = auth.create_self_subject_review({"metadata": {}})
        return str(review.status.user_info.username)


def test_client_token_is_passed_through(cluster: ClusterHandle, front: ApiFront, tmp_path: Path) -> None:
    op_kc = write_operator_kubeconfig(cluster, tmp_path / "op-kc")
    token = yaml.safe_load(op_kc.read_text())["users"][0]["user"]["token"]
    assert whoami(front.write_kubeconfig(tmp_path / "kc", token=token)) == OPERATOR_USER
    assert whoami(front.write_kubeconfig(tmp_path / "kc2")) == "admin"  # the upstream kubeconfig's identity


def test_kill_after_write_k(cluster: ClusterHandle, front: ApiFront) -> None:
    victim = subprocess.Popen(["sleep", "120"])
    try:
        request(front, "POST", "/api/v1/namespaces/default/configmaps", configmap(f"pre-{uuid.uuid4().hex[:6]}"))
        front.kill_after_write(2, lambda: victim.pid)  # counts from now: the write above is not one of them
        names = [f"kill-{uuid.uuid4().hex[:6]}" for _ in range(2)]
        assert request(front, "POST", "/api/v1/namespaces/default/configmaps", configmap(names[0]))[0] == 201
        assert victim.poll() is None
        request(front, "GET", "/api/v1/namespaces/default/configmaps")  # reads do not count
        assert victim.poll() is None
        assert request(front, "POST", "/api/v1/namespaces/default/configmaps", configmap(names[1]))[0] == 201
        assert victim.wait(timeout=5) == -9
        assert all(cm_exists(cluster, n) for n in names)
    finally:
        victim.kill()
        victim.wait()


def test_drop_response_of_write_k(cluster: ClusterHandle, front: ApiFront) -> None:
    front.drop_response_of_write(1)
    name = f"drop-{uuid.uuid4().hex[:6]}"
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        request(front, "POST", "/api/v1/namespaces/default/configmaps", configmap(name))
    assert cm_exists(cluster, name)  # applied, though the client never heard so
    assert [e.get("dropped") for e in front.log() if e["write"]] == [True]
    # Once only: the next write is answered.
    assert request(front, "POST", "/api/v1/namespaces/default/configmaps", configmap(name + "-b"))[0] == 201


def test_cut_watches(front: ApiFront) -> None:
    c = conn(front, timeout=30)
    c.request("GET", "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=60")
    resp = c.getresponse()
    assert resp.status == 200
    resp.read1(1)  # the initial ADDED events arrive
    plain = request(front, "GET", "/api/v1/namespaces")
    assert plain[0] == 200
    t0 = time.monotonic()
    front.cut_watches()
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        while resp.read1(65536):
            pass
        raise ConnectionResetError("stream ended")  # a clean end counts as cut too
    assert time.monotonic() - t0 < 5
    assert [e["watch"] for e in front.log()] == [True, False]
    c.close()


def test_refuse_then_recover(front: ApiFront) -> None:
    c = conn(front)
    c.request("GET", "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=60")
    watch = c.getresponse()
    front.refuse(2)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", front.port), timeout=2).close()
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        while watch.read1(65536):
            pass
        raise ConnectionResetError("stream ended")
    status = wait_for(lambda: _status_or_none(front), timeout=10, what="the front to accept again")
    assert status == 200
    front.refuse(None)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", front.port), timeout=2).close()
    front.clear()
    assert request(front, "GET", "/api/v1/namespaces")[0] == 200


def _status_or_none(front: ApiFront) -> int | None:
    try:
        return request(front, "GET", "/api/v1/namespaces", timeout=2)[0]
    except OSError:
        return None


def test_blackhole(front: ApiFront) -> None:
    front.blackhole(None)
    with pytest.raises(TimeoutError):
        request(front, "GET", "/api/v1/namespaces", timeout=1)
    before = front.requests
    front.clear()
    assert front.requests == before  # nothing was forwarded while black-holed
    front.blackhole(1.5)
    t0 = time.monotonic()
    assert request(front, "GET", "/api/v1/namespaces", timeout=10)[0] == 200  # held, then answered
    assert time.monotonic() - t0 >= 1.4


def test_blackhole_stalls_open_watch(cluster: ClusterHandle, front: ApiFront) -> None:
    rv = json.loads(request(front, "GET", "/api/v1/namespaces/default/configmaps")[2])["metadata"]["resourceVersion"]
    c = conn(front, timeout=1)
    c.request("GET", f"/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=60&resourceVersion={rv}")
    watch = c.getresponse()
    assert watch.status == 200
    front.blackhole(None)
    cluster.kubectl("create", "configmap", f"bh-{uuid.uuid4().hex[:6]}", "-n", "default")
    with pytest.raises(TimeoutError):
        while True:
            watch.read1(65536)
    front.clear()
    c.close()


def test_errors_with_retry_after(front: ApiFront) -> None:
    front.errors(429, retry_after=3)
    status, headers, body = request(front, "GET", "/api/v1/namespaces")
    assert (status, headers["retry-after"]) == (429, "3")
    assert json.loads(body)["code"] == 429
    assert front.requests == 0  # answered by the front, not forwarded
    front.errors(503, fraction=0.5, seconds=30)
    statuses = {request(front, "GET", "/api/v1/namespaces")[0] for _ in range(40)}
    assert statuses == {200, 503}
    front.errors(500, seconds=0.5)
    assert request(front, "GET", "/api/v1/namespaces")[0] == 500
    time.sleep(0.6)
    assert request(front, "GET", "/api/v1/namespaces")[0] == 200


def test_delay(front: ApiFront) -> None:
    front.delay(0.5)
    t0 = time.monotonic()
    assert request(front, "GET", "/api/v1/namespaces")[0] == 200
    assert time.monotonic() - t0 >= 0.5
    front.clear()
    t0 = time.monotonic()
    assert request(front, "GET", "/api/v1/namespaces")[0] == 200
    assert time.monotonic() - t0 < 0.5


def test_peak_rate(front: ApiFront) -> None:
    for _ in range(20):
        request(front, "GET", "/version")
    assert front.peak_rate() >= 10
    front.clear_counters()
    assert front.peak_rate() == 0


def test_stall_watches_keeps_other_requests_flowing(cluster: ClusterHandle, front: ApiFront) -> None:
    rv = json.loads(request(front, "GET", "/api/v1/namespaces/default/configmaps")[2])["metadata"]["resourceVersion"]
    c = conn(front, timeout=1)
    c.request("GET", f"/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=60&resourceVersion={rv}")
    watch = c.getresponse()
    front.stall_watches(None)
    cluster.kubectl("create", "configmap", f"sw-{uuid.uuid4().hex[:6]}", "-n", "default")
    with pytest.raises(TimeoutError):
        while True:
            watch.read1(65536)
    assert request(front, "GET", "/api/v1/namespaces", timeout=5)[0] == 200
    with pytest.raises(TimeoutError):
        request(front, "GET", "/api/v1/namespaces?watch=true", timeout=1)
    front.clear()
    c.close()
