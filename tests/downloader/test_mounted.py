"""Runs that need no hub: local:// and pvc:// (nothing is copied; the directory is validated where
it is), bad URIs, and a hub that cannot be reached."""

from __future__ import annotations

import json
import random
import shutil
import socket
from pathlib import Path

import pytest

from devtools.fixtures import deepseek_like_config, safetensors_bytes, tiny_shards
from tests.downloader.conftest import run_download


def write_model(root: Path) -> int:
    """A model directory written directly (no hub); returns its parameter count."""
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(deepseek_like_config(model_type="deepseek_v3")))
    weight_map, count = {}, 0
    shards = tiny_shards(shards=2)
    for i, tensors in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        (root / name).write_bytes(safetensors_bytes(tensors, random.Random(i).randbytes))
        for t in tensors:
            weight_map[t.name] = name
            count += t.numel
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return count


def test_local_uri_is_validated_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "models" / "tiny"
    count = write_model(model)
    before = sorted(p.name for p in model.iterdir())
    out = run_download(monkeypatch, tmp_path, "http://127.0.0.1:9", f"local://{model}")
    assert out.code == 0, out.log
    assert sorted(p.name for p in model.iterdir()) == before  # nothing written next to the model
    assert out.termination is not None
    assert out.termination["files"] == len(before)
    assert out.termination["bytesTransferred"] == 0
    assert out.termination["metadata"]["parameterCount"] == count
    assert out.termination["metadata"]["modelType"] == "deepseek_v3"


def test_pvc_uri_is_validated_under_the_mount_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mount = tmp_path / "mnt" / "pvc"
    write_model(mount / "models" / "tiny")
    out = run_download(
        monkeypatch, tmp_path, "http://127.0.0.1:9", "pvc://ome:model-store/models/tiny", "--dest", str(mount)
    )
    assert out.code == 0, out.log
    assert out.termination is not None
    assert out.termination["path"] == str(mount / "models" / "tiny")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda m: (m / "config.json").unlink(), "no config.json"),
        (lambda m: (m / "model-00002-of-00002.safetensors").unlink(), "missing shard"),
        (lambda m: truncate(m / "model-00001-of-00002.safetensors"), "model-00001-of-00002.safetensors"),
        (lambda m: shutil.rmtree(m), "does not exist"),
    ],
    ids=["no-config", "missing-shard", "truncated-shard", "absent"],
)
def test_a_broken_local_model_is_refused_permanently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: object, message: str
) -> None:
    model = tmp_path / "tiny"
    write_model(model)
    damage(model)  # type: ignore[operator]
    out = run_download(monkeypatch, tmp_path, "http://127.0.0.1:9", f"local://{model}")
    assert out.code == 3, out.log
    assert out.termination is not None
    assert message in out.termination["error"]


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])


@pytest.mark.parametrize("uri", ["ftp://host/model", "https://example.invalid/model", "hf://a/b/c"])
def test_unsupported_uris_fail_with_the_accepted_forms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri: str
) -> None:
    out = run_download(monkeypatch, tmp_path, "http://127.0.0.1:9", uri, "--dest", str(tmp_path / "m"))
    assert out.code == 3
    assert out.termination is not None and out.termination["status"] == "Failed"
    assert "hf://" in out.termination["error"] or "hub repository id" in out.termination["error"]


def test_an_unreachable_hub_is_retried_then_fails_as_retryable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: connection refused
    out = run_download(
        monkeypatch, tmp_path, f"http://127.0.0.1:{port}", "hf://org/model", "--dest", str(tmp_path / "m"),
        "--max-retries", "1",
    )  # fmt: skip
    assert out.code == 1, out.log
    assert out.termination is not None and out.termination["permanent"] is False
    assert "ConnectError" in out.termination["error"] and "retry 1/1" in out.log
