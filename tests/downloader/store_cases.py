"""The checks every storage scheme must pass, against a real server on loopback.

Each `test_store_<scheme>.py` supplies a `StoreCase` (how to upload, which URI, which env) and runs
these: a clean download, a resume after the process is killed mid-file, a corrupted object
refused, and a missing credential reported with the Secret's name.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.fixtures import deepseek_like_config, safetensors_bytes, tiny_shards
from devtools.stores import FaultFront
from tests.downloader.conftest import REPO_ROOT, Outcome, run_download
from tests.downloader.servers import FakeKubeApi

BIG = "model-00001-of-00003.safetensors"
SECRET = "models/store-creds"  # the Secret's name as the Job's environment gives it
CREDENTIAL_ENV = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "GOOGLE_OAUTH_ACCESS_TOKEN",
    "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN", "OME_STORAGE_ENDPOINT", "OME_STORAGE_REGION", "OME_STORAGE_SECRET",
)  # fmt: skip


def model_files(seed: int) -> dict[str, bytes]:
    """A small DeepSeek-V3-shaped model: config, tokenizer stand-in, three safetensors shards."""
    rng = random.Random(seed)
    files = {
        "config.json": json.dumps(deepseek_like_config(), indent=1).encode(),
        "tokenizer_config.json": b'{"model_max_length": 131072}',
    }
    # hidden=512: the first shard is 6 MiB, past the downloader's 4 MiB write buffer, so a kill
    # mid-file leaves a partial on disk to resume from.
    shards = tiny_shards(hidden=512)
    for i, tensors in enumerate(shards, start=1):
        files[f"model-{i:05d}-of-{len(shards):05d}.safetensors"] = safetensors_bytes(tensors, rng.randbytes)
    return files


@dataclass
class StoreCase:
    """One scheme's server, already holding `files` under `uri`'s prefix."""

    uri: str
    endpoint: str  # the server itself
    env: dict[str, str]  # credentials and endpoint as the Job's environment would carry them
    files: dict[str, bytes]
    secret_values: list[str]  # must never appear in output
    missing_credential_env: str  # the variable blanked for the missing-credential case
    make_front: Callable[[], FaultFront]


def _env_for(case: StoreCase, endpoint: str) -> dict[str, str]:
    return {**case.env, "OME_STORAGE_ENDPOINT": endpoint, "OME_STORAGE_SECRET": SECRET}


def _set_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in CREDENTIAL_ENV:
        monkeypatch.delenv(name, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def download(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: StoreCase, env: dict[str, str], *args: str
) -> Outcome:
    _set_env(monkeypatch, env)
    return run_download(monkeypatch, tmp_path, "http://127.0.0.1:9", case.uri, *args)


def assert_identical(dest: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        assert (dest / name).read_bytes() == data, name


def check_clean_download(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: StoreCase, kube_api: FakeKubeApi
) -> None:
    dest = tmp_path / "model"
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
    progress = ("--progress-configmap", "ome/dl-tiny-node-1", "--kubeconfig", str(kubeconfig), "--node-name", "node-1")
    out = download(monkeypatch, tmp_path, case, _env_for(case, case.endpoint), "--dest", str(dest), *progress)
    assert out.code == 0, out.log
    # Progress is published like hf://'s: the node's key of the model's ConfigMap, ending Succeeded.
    snapshot = json.loads(kube_api.configmaps[("ome", "dl-tiny-node-1")]["data"]["node-1"])
    total = sum(len(d) for d in case.files.values())
    assert snapshot["phase"] == "Succeeded" and snapshot["completedBytes"] == snapshot["totalBytes"] == total
    assert snapshot["completedFiles"] == len(case.files) and snapshot["bytesTransferred"] == total
    for value in case.secret_values:
        assert all(value not in body.decode() for _, _, _, body in kube_api.requests)
    assert_identical(dest, case.files)
    assert out.termination is not None
    assert out.termination["files"] == len(case.files)
    assert out.termination["bytes"] == sum(len(d) for d in case.files.values())
    assert out.termination["metadata"]["modelArchitecture"] == "DeepseekV3ForCausalLM"
    for value in case.secret_values:
        assert value not in out.log and value not in out.termination_text
    # A second run trusts the manifest: nothing is transferred again.
    again = download(monkeypatch, tmp_path, case, _env_for(case, case.endpoint), "--dest", str(dest))
    assert again.code == 0, again.log
    assert again.termination is not None and again.termination["bytesTransferred"] == 0
    assert again.termination["filesReused"] == len(case.files)


def check_resume_after_kill(tmp_path: Path, case: StoreCase) -> None:
    dest = tmp_path / "model"
    front = case.make_front().start()
    stall_at = 5 << 20
    on_disk = 3 << 20  # most of one 4 MiB write buffer reaches the disk before the stall
    front.faults.stall_after[BIG] = stall_at
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_ENV and k not in ("HF_TOKEN", "KUBECONFIG")}
    env.update(_env_for(case, front.endpoint))
    partial = dest / ".ome-download" / "partial" / BIG
    proc = subprocess.Popen(
        [sys.executable, "-m", "ome_operator.cli", "download", case.uri, "--dest", str(dest), "--workers", "1",
         "--termination-log", str(tmp_path / "t1.json"), "--stall-timeout", "120"],
        env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (partial.exists() and partial.stat().st_size >= on_disk):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the download never reached the stall point"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        front.stop()
    assert not (dest / BIG).exists(), "an unverified file must not have its final name"
    have = partial.stat().st_size
    assert 0 < have < len(case.files[BIG])
    # Rerun through a fresh front that counts what it relays: only the rest of BIG crosses the wire.
    front2 = case.make_front().start()
    front2.faults.sent[BIG] = 0
    env.update(_env_for(case, front2.endpoint))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "ome_operator.cli", "download", case.uri, "--dest", str(dest),
             "--termination-log", str(tmp_path / "t2.json")],
            env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        front2.stop()
    assert done.returncode == 0, done.stderr
    assert "resuming at" in done.stderr
    assert front2.faults.sent[BIG] == len(case.files[BIG]) - have
    assert any(r.startswith(f"bytes={have}-") for p, r in front2.faults.ranges if BIG in p), front2.faults.ranges
    assert_identical(dest, case.files)


def check_corrupted_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: StoreCase) -> None:
    dest = tmp_path / "model"
    front = case.make_front().start()
    front.faults.corrupt.add(BIG)
    try:
        out = download(
            monkeypatch, tmp_path, case, _env_for(case, front.endpoint), "--dest", str(dest), "--max-retries", "1"
        )
    finally:
        front.stop()
    assert out.code == 1, out.log  # retryable: the next Job run may get good bytes
    assert out.termination is not None
    assert out.termination["file"] == BIG
    assert "mismatch" in out.termination["error"]
    assert not (dest / BIG).exists()
    assert not (dest / ".ome-download" / "partial" / BIG).exists(), "bytes that failed verification are discarded"


def check_transient_errors_are_retried(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: StoreCase) -> None:
    dest = tmp_path / "model"
    front = case.make_front().start()
    front.faults.unavailable[BIG] = 2
    try:
        out = download(
            monkeypatch, tmp_path, case, _env_for(case, front.endpoint), "--dest", str(dest), "--max-retries", "3"
        )
    finally:
        front.stop()
    assert out.code == 0, out.log
    assert front.faults.unavailable[BIG] == 0
    assert "HTTP 503" in out.log and "server asked to retry after 1s" in out.log and "retry 2/3" in out.log
    assert_identical(dest, case.files)


def check_missing_credential(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: StoreCase) -> None:
    env = {k: v for k, v in _env_for(case, case.endpoint).items() if k != case.missing_credential_env}
    out = download(monkeypatch, tmp_path, case, env, "--dest", str(tmp_path / "model"))
    assert out.code == 3, out.log  # permanent: the Job's podFailurePolicy stops retrying
    assert out.termination is not None
    assert f"Secret {SECRET}" in out.termination["error"], out.termination
    assert "credential missing" in out.termination["error"]
