"""Progress published to the Job's own ConfigMap, and the hub token kept out of every output."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from devtools.fixtures import FixtureRepo
from devtools.hub_front import HubFront
from ome_operator.downloader.kubeapi import in_cluster_target
from tests.downloader.conftest import run_download, run_download_process
from tests.downloader.servers import FakeKubeApi

pytestmark = pytest.mark.hub

OME_PROGRESS_KEYS = {
    "phase",
    "totalBytes",
    "completedBytes",
    "totalFiles",
    "completedFiles",
    "speedBytesPerSec",
    "lastUpdated",
}


def progress_patches(api: FakeKubeApi, key: str) -> list[dict[str, object]]:
    patches = [json.loads(body)["data"] for _, _, _, body in api.requests]
    assert all(set(p) == {key} for p in patches)  # a Job touches only its own node's key
    return [json.loads(p[key]) for p in patches]


def test_progress_is_merge_patched_into_the_jobs_configmap(
    front: HubFront,
    tiny_repo: FixtureRepo,
    kube_api: FakeKubeApi,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kube_api.write_kubeconfig(tmp_path / "kubeconfig")))
    other = json.dumps({"phase": "Downloading", "node": "node-2"})
    kube_api.configmaps[("ome", "dl-tiny-node-1")]["data"] = {"node-2": other}  # another node's Job
    out = run_download(
        monkeypatch,
        tmp_path,
        front.endpoint,
        f"hf://{tiny_repo.repo_id}",
        "--dest",
        str(tmp_path / "m"),
        "--progress-configmap",
        "ome/dl-tiny-node-1",
        "--node-name",
        "node-1",
    )
    assert out.code == 0, out.log
    assert kube_api.requests, "nothing was published"
    for method, path, headers, _ in kube_api.requests:
        assert (method, path) == ("PATCH", "/api/v1/namespaces/ome/configmaps/dl-tiny-node-1")
        assert headers["content-type"] == "application/merge-patch+json"
    snapshots = progress_patches(kube_api, "node-1")
    assert all(set(s) >= OME_PROGRESS_KEYS for s in snapshots)
    assert snapshots[0]["phase"] == "Resolving"
    final = snapshots[-1]
    assert final["phase"] == "Succeeded"
    assert final["node"] == "node-1"
    assert final["commit"] == tiny_repo.commit
    assert final["completedFiles"] == final["totalFiles"] == out.termination["files"]  # type: ignore[index]
    assert final["completedBytes"] == final["totalBytes"] == out.termination["bytes"]  # type: ignore[index]
    data = kube_api.configmaps[("ome", "dl-tiny-node-1")]["data"]
    assert json.loads(data["node-1"]) == final
    assert data["node-2"] == other


def test_a_forbidden_or_missing_configmap_does_not_fail_the_download(
    front: HubFront,
    tiny_repo: FixtureRepo,
    kube_api: FakeKubeApi,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kube_api.write_kubeconfig(tmp_path / "kubeconfig")))
    out = run_download(
        monkeypatch,
        tmp_path,
        front.endpoint,
        f"hf://{tiny_repo.repo_id}",
        "--dest",
        str(tmp_path / "m"),
        "--progress-configmap",
        "ome/someone-elses",
    )
    assert out.code == 0, out.log
    assert len(kube_api.requests) >= 2
    assert out.log.count("HTTP 403") == 1  # warned once, not on every report


def test_in_cluster_credentials_are_reread_on_every_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("first\n")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    target = in_cluster_target(tmp_path)
    assert target is not None
    assert target.server == "https://10.0.0.1:443"
    assert target.bearer() == "first"
    (tmp_path / "token").write_text("rotated")
    assert target.bearer() == "rotated"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert in_cluster_target(tmp_path) is None


def test_the_token_never_appears_in_logs_termination_message_or_progress(
    front: HubFront, tiny_repo: FixtureRepo, kube_api: FakeKubeApi, tmp_path: Path
) -> None:
    """Run the real command in a child process and search everything it emitted for the token,
    on success and on a failure whose server error text quotes the Authorization header."""
    token = f"hf_TestToken{uuid.uuid4().hex}"
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
    env = {"HF_TOKEN": token, "KUBECONFIG": str(kubeconfig)}
    common = ["--progress-configmap", "ome/dl-tiny-node-1", "--progress-interval", "0.2"]

    ok_term = tmp_path / "ok.json"
    ok = run_download_process(
        front.endpoint,
        f"hf://{tiny_repo.repo_id}",
        "--dest",
        str(tmp_path / "m"),
        "--termination-log",
        str(ok_term),
        *common,
        env=env,
    )
    assert ok.returncode == 0, ok.stderr
    assert any(r.authorization == f"Bearer {token}" for r in front.requests)  # the token was used

    front.faults.api_error_echo_auth = True
    bad_term = tmp_path / "bad.json"
    bad = run_download_process(
        front.endpoint,
        f"hf://{tiny_repo.repo_id}",
        "--dest",
        str(tmp_path / "m2"),
        "--termination-log",
        str(bad_term),
        "--max-retries",
        "0",
        *common,
        env=env,
    )
    assert bad.returncode != 0
    assert "[REDACTED]" in bad.stderr + bad_term.read_text()  # the server's error text did reach us

    outputs = {
        "stdout": ok.stdout + bad.stdout,
        "stderr": ok.stderr + bad.stderr,
        "termination": ok_term.read_text() + bad_term.read_text(),
        "progress": "".join(body.decode() for _, _, _, body in kube_api.requests),
        "configmap": json.dumps(list(kube_api.configmaps.values())),
        "state": "".join(p.read_text() for p in (tmp_path / "m" / ".ome-download").glob("*.json")),
    }
    assert kube_api.requests
    for where, text in outputs.items():
        assert token not in text, f"token leaked into {where}"
        assert token[8:] not in text, f"part of the token leaked into {where}"
