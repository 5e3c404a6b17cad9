"""One hub download for the whole fleet (issue 13 item 5): 16 `ome-operator download` processes, one
per node, coordinating through the model's progress ConfigMap on the real local API server, each
with the least privilege a download Job has (a ServiceAccount token whose Role allows get/patch/
update on that one ConfigMap). The hub front counts the file bytes it serves.

The misbehaving peers are test-owned servers that register on the same board with the module's
own record format: one serves every file with a flipped byte, one dies in the middle of its first
transfer (connection cut, heartbeat stopped). A real downloader is also SIGKILLed mid-run.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.cluster_testing import ClusterHandle
from devtools.fixtures import FixtureRepo, Tensor
from devtools.hub_front import HubFront
from ome_operator.api.model import PROGRESS_EXPECTED_KEY
from ome_operator.downloader.kubeapi import kubeconfig_target
from ome_operator.downloader.peer import HEARTBEAT_S
from ome_operator.downloader.peer_board import Board, PeerRecord
from tests.downloader.conftest import REPO_ROOT

pytestmark = [pytest.mark.hub, pytest.mark.integration]

NODES = 16
CM = "dl-peers"


@dataclass
class JobBoard:
    namespace: str
    kubeconfig: Path


@pytest.fixture
def board(cluster: ClusterHandle, tmp_path: Path) -> Iterator[JobBoard]:
    """The progress ConfigMap as the operator renders it for NODES nodes, and a kubeconfig holding
    only the download Job's identity."""
    expected = json.dumps([f"node-{i:02d}" for i in range(NODES)])
    with cluster.temp_namespace("peers") as ns:
        manifests = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": CM, "namespace": ns},
                "data": {PROGRESS_EXPECTED_KEY: expected},
            },
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": CM, "namespace": ns}},
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": CM, "namespace": ns},
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["configmaps"],
                        "resourceNames": [CM],
                        "verbs": ["get", "patch", "update"],
                    }
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": CM, "namespace": ns},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": CM},
                "subjects": [{"kind": "ServiceAccount", "name": CM, "namespace": ns}],
            },
        ]
        cluster.kubectl("apply", "-f", "-", stdin="\n---\n".join(yaml.safe_dump(m) for m in manifests))
        token = cluster.kubectl("create", "token", CM, "-n", ns, "--duration=1h").stdout.strip()
        server, ca = cluster.server()
        kubeconfig = tmp_path / "job-kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "job",
                    "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority": str(ca)}}],
                    "users": [{"name": "job", "user": {"token": token}}],
                    "contexts": [{"name": "job", "context": {"cluster": "c", "user": "job"}}],
                }
            )
        )
        yield JobBoard(ns, kubeconfig)


@pytest.fixture
def model(front: HubFront, make_repo: Any) -> FixtureRepo:
    repo: FixtureRepo = make_repo(shards=[[Tensor(f"layer.{i}", "BF16", (128 << 10,))] for i in range(8)])
    front.repos[repo.repo_id] = repo
    return repo


def start_node(
    front: HubFront, repo: FixtureRepo, b: JobBoard, root: Path, i: int, *extra: str
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "KUBECONFIG", "POD_IP")}
    env.update(HF_ENDPOINT=front.endpoint, HF_HUB_DISABLE_TELEMETRY="1")
    node = f"node-{i:02d}"
    log = (root / f"{node}.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "ome_operator.cli", "download", f"hf://{repo.repo_id}", "--dest", str(root / node),
         "--node-name", node, "--progress-configmap", f"{b.namespace}/{CM}", "--kubeconfig", str(b.kubeconfig),
         "--peer-address", "127.0.0.1", "--peer-port", "0", "--workers", "4",
         "--termination-log", str(root / f"{node}.json"), "--progress-interval", "5", *extra],
        env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=log, text=True,
    )  # fmt: skip


def verified(repo: FixtureRepo, dest: Path) -> bool:
    return all(
        (dest / f.path).is_file() and hashlib.sha256((dest / f.path).read_bytes()).hexdigest() == f.sha256
        for f in repo.files.values()
        if f.path != ".gitattributes"
    )


def wait_all(procs: list[subprocess.Popen[str]], timeout: float) -> list[int | None]:
    """Exit codes; None for a process still running at the deadline (then killed)."""
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            break
    codes = [p.poll() for p in procs]
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    return codes


def board_dump(b: JobBoard) -> str:
    view = Board(kubeconfig_target(b.kubeconfig), b.namespace, CM).read()
    if view is None:
        return "board unreadable"
    rows = [
        f"{n}: beat {r.beat} done {r.done} failed {r.failed} have {len(r.have)}"
        for n, r in sorted(view.records.items())
    ]
    return "\n".join(rows + sorted(view.claims.values()))


def fetched_bytes(repo: FixtureRepo) -> int:
    return sum(f.size for f in repo.files.values() if f.path != ".gitattributes")


def test_sixteen_nodes_fetch_each_file_from_the_hub_once(
    board: JobBoard, front: HubFront, model: FixtureRepo, tmp_path: Path
) -> None:
    procs = [start_node(front, model, board, tmp_path, i) for i in range(NODES)]
    codes = wait_all(procs, 900)
    logs = {i: (tmp_path / f"node-{i:02d}.log").read_text() for i in range(NODES)}
    assert codes == [0] * NODES, (board_dump(board), {i: logs[i][-1500:] for i, c in enumerate(codes) if c != 0})
    for i in range(NODES):
        assert verified(model, tmp_path / f"node-{i:02d}"), logs[i][-2000:]
    size = fetched_bytes(model)
    assert front.total_sent() <= 1.1 * size, (front.total_sent(), size)
    # Every node published its record and ended done; each file was claimed by exactly one node.
    view = Board(kubeconfig_target(board.kubeconfig), board.namespace, CM).read()
    assert view is not None
    assert sorted(view.records) == [f"node-{i:02d}" for i in range(NODES)]
    assert all(r.done for r in view.records.values())
    holders = [json.loads(v)["node"] for v in view.claims.values()]
    assert len(holders) == len(model.files) - 1 and all(holders), holders


def test_a_node_starting_after_the_others_finished_fetches_from_them_not_the_hub(
    board: JobBoard, front: HubFront, model: FixtureRepo, tmp_path: Path
) -> None:
    """A Job whose pod starts late (image pull, a loaded node): the nodes that fetched from the hub
    keep serving, because the operator's list names a 16th that has not registered, and it
    fetches from them."""
    early = [start_node(front, model, board, tmp_path, i) for i in range(NODES - 1)]
    spy = Board(kubeconfig_target(board.kubeconfig), board.namespace, CM)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            view = spy.read()
            if view is not None and sum(r.done for r in view.records.values()) == NODES - 1:
                break
            assert any(p.poll() is None for p in early), "every finished node left with one expected node unseen"
            time.sleep(0.5)
    finally:
        spy.close()
    time.sleep(3 * HEARTBEAT_S)  # with nobody registered still working, they would be gone by now
    assert any(p.poll() is None for p in early), "every finished node left with one expected node unseen"
    hub_before = front.total_sent()
    late = start_node(front, model, board, tmp_path, NODES - 1)
    codes = wait_all([*early, late], 600)
    logs = {i: (tmp_path / f"node-{i:02d}.log").read_text() for i in range(NODES)}
    assert codes == [0] * NODES, (board_dump(board), {i: logs[i][-1500:] for i, c in enumerate(codes) if c != 0})
    assert verified(model, tmp_path / f"node-{NODES - 1:02d}"), logs[NODES - 1][-2000:]
    assert front.total_sent() == hub_before, (front.total_sent(), hub_before, logs[NODES - 1][-2000:])
    assert front.total_sent() <= 1.1 * fetched_bytes(model), front.total_sent()


def test_a_node_that_fetched_nothing_from_the_hub_does_not_wait_for_unseen_nodes(
    board: JobBoard, front: HubFront, model: FixtureRepo, tmp_path: Path
) -> None:
    """A Job recreated on a node that already holds the model (its progress ConfigMap deleted and
    recreated, say): the 15 other expected nodes finished long ago and will not register again."""
    first = start_node(front, model, board, tmp_path, 0, "--peer-linger", "0")
    assert wait_all([first], 300) == [0], (tmp_path / "node-00.log").read_text()[-2000:]
    again = start_node(front, model, board, tmp_path, 0)
    # Well inside JOIN_WAIT_S (120 s): a wait for the 15 unseen nodes would still be going on.
    codes = wait_all([again], 90)
    log = (tmp_path / "node-00.log").read_text()
    assert codes == [0], log[-2000:]
    assert "15 expected node(s) have not started" not in log, log[-2000:]
    assert "nothing to fetch" in log, log[-2000:]  # it had the model: no claim, no hub fetch


class FakePeer:
    """A test-owned peer on the board: advertises every file, then misbehaves as told."""

    def __init__(self, repo: FixtureRepo, b: JobBoard, node: str, mode: str) -> None:
        self.repo, self.node, self.mode = repo, node, mode
        self.requests = 0
        self.alive = True
        self.board = Board(kubeconfig_target(b.kubeconfig), b.namespace, CM)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.record = PeerRecord(
            url=f"http://127.0.0.1:{self._server.server_address[1]}",
            token="fake-peer-token",
            commit=repo.commit,
            have=sorted(p for p in repo.files if p != ".gitattributes"),
        )
        self._stop = threading.Event()
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        assert self.board.write(node, self.record)
        threading.Thread(target=self._beat, daemon=True).start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S) and self.alive:
            self.record.beat += 1
            self.board.write(self.node, self.record)

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self.board.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                peer.requests += 1
                rel = self.path.split("/", 3)[3]
                f = peer.repo.files[rel]
                data = bytearray(f.content_path.read_bytes())
                self.send_response(200)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                if peer.mode == "corrupt":
                    data[len(data) // 3] ^= 0xFF
                    self.wfile.write(bytes(data))
                    return
                # "dies": half the body, then the connection goes and the heartbeat stops.
                peer.alive = False
                self.wfile.write(bytes(data[: len(data) // 2]))
                self.wfile.flush()
                self.close_connection = True

        return Handler


def test_a_peer_serving_corrupt_bytes_is_caught_by_the_hash_and_the_file_fetched_elsewhere(
    board: JobBoard, front: HubFront, model: FixtureRepo, tmp_path: Path
) -> None:
    fake = FakePeer(model, board, "zz-corrupt", "corrupt")
    try:
        procs = [start_node(front, model, board, tmp_path, i) for i in range(NODES)]
        codes = wait_all(procs, 900)
    finally:
        fake.stop()
    logs = {i: (tmp_path / f"node-{i:02d}.log").read_text() for i in range(NODES)}
    assert codes == [0] * NODES, (board_dump(board), {i: logs[i][-1500:] for i, c in enumerate(codes) if c != 0})
    for i in range(NODES):
        assert verified(model, tmp_path / f"node-{i:02d}"), logs[i][-2000:]
    assert fake.requests > 0  # it was asked, and every copy it sent was refused
    caught = [i for i in range(NODES) if "peer zz-corrupt" in logs[i] and "mismatch" in logs[i]]
    assert caught, "no node logged the corrupt peer's bytes failing verification"
    assert front.total_sent() <= 1.1 * fetched_bytes(model), front.total_sent()


def test_a_peer_dying_mid_transfer_does_not_stall_the_others(
    board: JobBoard, front: HubFront, model: FixtureRepo, tmp_path: Path
) -> None:
    """A fake peer cuts its first transfer and goes silent; a real node is SIGKILLed while it holds
    a hub claim. The other 15 finish, each copy verified, without waiting for either."""
    fake = FakePeer(model, board, "zz-dies", "dies")
    started = time.monotonic()
    try:
        procs = [start_node(front, model, board, tmp_path, i) for i in range(NODES)]
        victim = procs[0]
        target = kubeconfig_target(board.kubeconfig)
        spy = Board(target, board.namespace, CM)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until it holds a hub claim on a file it does not have yet
            view = spy.read()
            mine = (
                [json.loads(v)["path"] for v in view.claims.values() if json.loads(v)["node"] == "node-00"]
                if view
                else []
            )
            record = view.records.get("node-00") if view else None
            if record and any(p not in record.have for p in mine):
                break
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        spy.close()
        codes = wait_all(procs[1:], 900)
        victim.wait()
    finally:
        fake.stop()
    elapsed = time.monotonic() - started
    logs = {i: (tmp_path / f"node-{i:02d}.log").read_text() for i in range(1, NODES)}
    assert codes == [0] * (NODES - 1), (
        board_dump(board),
        {i + 1: logs[i + 1][-1500:] for i, c in enumerate(codes) if c != 0},
    )
    for i in range(1, NODES):
        assert verified(model, tmp_path / f"node-{i:02d}"), logs[i][-2000:]
    assert fake.requests > 0
    # Generous for a loaded 2-core machine; a chain of waits on the dead ones would be unbounded.
    assert elapsed < 600, elapsed
