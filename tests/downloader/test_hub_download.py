"""`ome-operator download` against the real hub-compatible server (olah, offline, local git repos)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from devtools.fixtures import FixtureRepo, git_blob_sha1, tiny_shards
from devtools.hub import Hub
from devtools.hub_front import HubFront
from ome_operator.downloader import manifest as manifest_mod
from tests.downloader.conftest import run_download

pytestmark = pytest.mark.hub


def hub_listing(hub: Hub, repo: FixtureRepo) -> dict[str, tuple[int, str]]:
    """path -> (size, expected digest) as the hub itself reports it (LFS sha256, else git blob id)."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=hub.endpoint, token=False)
    out = {}
    for e in api.list_repo_tree(repo.repo_id, recursive=True, revision=repo.commit):
        if isinstance(e, RepoFile):
            out[e.path] = (e.size, e.lfs.sha256 if e.lfs else e.blob_id)
    return out


def local_digest(path: Path, lfs: bool) -> str:
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest() if lfs else git_blob_sha1(data)


def test_clean_download_matches_the_hubs_hashes(
    hub: Hub, tiny_repo: FixtureRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "model"
    out = run_download(monkeypatch, tmp_path, hub.endpoint, f"hf://{tiny_repo.repo_id}", "--dest", str(dest))
    assert out.code == 0, out.log
    listed = hub_listing(hub, tiny_repo)
    expected = {p: v for p, v in listed.items() if p != ".gitattributes"}
    on_disk = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file() and ".ome-download" not in p.parts}
    assert on_disk == set(expected)
    for path, (size, digest) in expected.items():
        assert (dest / path).stat().st_size == size
        assert local_digest(dest / path, lfs=len(digest) == 64) == digest, path
        assert digest in (tiny_repo.files[path].sha256, tiny_repo.files[path].git_sha1)
    t = out.termination
    assert t is not None
    assert t["status"] == "Succeeded"
    assert t["commit"] == tiny_repo.commit
    assert t["files"] == len(expected)
    assert t["bytes"] == sum(size for size, _ in expected.values())
    assert t["bytesTransferred"] == t["bytes"]
    assert len(out.termination_text.encode()) <= 4096
    assert not list((dest / ".ome-download" / "partial").rglob("*.safetensors"))


def test_metadata_matches_what_the_fixture_wrote(
    hub: Hub, tiny_repo: FixtureRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = run_download(
        monkeypatch, tmp_path, hub.endpoint, f"hf://{tiny_repo.repo_id}@main", "--dest", str(tmp_path / "m")
    )
    assert out.code == 0, out.log
    assert out.termination is not None
    meta = out.termination["metadata"]
    config = tiny_repo.config
    assert meta["modelArchitecture"] == config["architectures"][0]  # type: ignore[index]
    assert meta["modelType"] == config["model_type"]
    assert meta["parameterCount"] == tiny_repo.parameter_count
    assert meta["dtype"] == config["torch_dtype"]
    assert meta["quantization"] == config["quantization_config"]["quant_method"]  # type: ignore[index]
    assert meta["maxTokens"] == config["max_position_embeddings"]
    assert meta["modelFramework"] == {"name": "transformers", "version": config["transformers_version"]}
    assert meta["modelFormat"]["name"] == "safetensors"
    assert out.termination["tensorDtypes"] == tiny_repo.tensor_dtypes


def test_second_run_over_a_verified_copy_transfers_and_hashes_nothing(
    front: HubFront, tiny_repo: FixtureRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = str(tmp_path / "model")
    first = run_download(monkeypatch, tmp_path, front.endpoint, f"hf://{tiny_repo.repo_id}", "--dest", dest)
    assert first.code == 0, first.log
    served_first = len(front.resolve_requests())
    assert served_first > 0

    hashed: list[int] = []
    original_update = manifest_mod.StreamHasher.update

    def counting_update(self: manifest_mod.StreamHasher, data: bytes | memoryview) -> None:
        hashed.append(len(data))
        original_update(self, data)

    monkeypatch.setattr(manifest_mod.StreamHasher, "update", counting_update)
    second = run_download(monkeypatch, tmp_path, front.endpoint, f"hf://{tiny_repo.repo_id}", "--dest", dest)
    assert second.code == 0, second.log
    assert len(front.resolve_requests()) == served_first  # no file was requested again
    assert hashed == []
    assert second.termination is not None
    assert second.termination["bytesTransferred"] == 0
    assert second.termination["bytesHashed"] == 0
    assert second.termination["filesReused"] == second.termination["files"]


def test_a_touched_file_is_rehashed_not_refetched_and_a_corrupted_one_is_refetched(
    front: HubFront, tiny_repo: FixtureRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "model"
    assert (
        run_download(monkeypatch, tmp_path, front.endpoint, f"hf://{tiny_repo.repo_id}", "--dest", str(dest)).code == 0
    )
    touched, corrupted = "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors"
    os.utime(dest / touched, ns=(1, 1))
    data = bytearray((dest / corrupted).read_bytes())
    data[len(data) // 2] ^= 0x01
    (dest / corrupted).write_bytes(bytes(data))
    before = len(front.resolve_requests())

    out = run_download(monkeypatch, tmp_path, front.endpoint, f"hf://{tiny_repo.repo_id}", "--dest", str(dest))
    assert out.code == 0, out.log
    refetched = [r.path.rsplit("/", 1)[-1] for r in front.resolve_requests()[before:]]
    assert refetched == [corrupted]
    assert out.termination is not None
    size = tiny_repo.files[corrupted].size
    assert out.termination["bytesTransferred"] == size
    # Both were read back once (their stat changed); only the one that failed was fetched again.
    assert out.termination["bytesHashed"] == tiny_repo.files[touched].size + size
    assert local_digest(dest / corrupted, lfs=True) == tiny_repo.files[corrupted].sha256


def test_one_flipped_bit_on_the_hub_fails_verification_and_leaves_no_final_file(
    hub: Hub, make_repo: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same wrong bytes come back on the one retry: permanent (exit 3), not ten more tries."""
    repo: FixtureRepo = make_repo(seed=7)  # type: ignore[operator]
    victim = repo.files["model-00002-of-00003.safetensors"]
    obj = bytearray(victim.content_path.read_bytes())
    obj[len(obj) - 100] ^= 0x10  # the hub now serves bytes that do not match its own listing
    victim.content_path.write_bytes(bytes(obj))
    dest = tmp_path / "model"

    out = run_download(
        monkeypatch, tmp_path, hub.endpoint, f"hf://{repo.repo_id}", "--dest", str(dest), "--max-retries", "1"
    )
    assert out.code == 3, out.log
    assert not (dest / victim.path).exists()
    assert not (dest / ".ome-download" / "partial" / victim.path).exists()
    assert "sha256 mismatch" in out.log and victim.path in out.log
    assert out.termination is not None
    assert out.termination["status"] == "Failed"
    assert out.termination["file"] == victim.path
    assert out.termination["permanent"] is True
    assert "same wrong bytes twice" in out.termination["error"]
    # The untouched files that finished are verified and recorded; the bad one never is.
    recorded = json.loads((dest / ".ome-download" / "manifest.json").read_text())["files"]
    assert victim.path not in recorded


def test_pickle_weights_are_skipped_unless_opted_in(
    hub: Hub, make_repo: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo: FixtureRepo = make_repo(extra_files={"pytorch_model.bin": b"\x80\x04pickle" * 100, "tokenizer.model": b"sp"})
    uri = f"hf://{repo.repo_id}"
    safe = run_download(monkeypatch, tmp_path, hub.endpoint, uri, "--dest", str(tmp_path / "a"))
    assert safe.code == 0, safe.log
    assert not (tmp_path / "a" / "pytorch_model.bin").exists()
    assert (tmp_path / "a" / "tokenizer.model").exists()
    assert safe.termination is not None and "pytorch_model.bin" in safe.termination["skippedFiles"]
    opted = run_download(monkeypatch, tmp_path, hub.endpoint, uri, "--dest", str(tmp_path / "b"), "--allow-pickle")
    assert opted.code == 0, opted.log
    assert (tmp_path / "b" / "pytorch_model.bin").read_bytes() == b"\x80\x04pickle" * 100


def test_a_pickle_only_model_is_refused_with_a_clear_message(
    hub: Hub, make_repo: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo: FixtureRepo = make_repo(shards=[], extra_files={"pytorch_model.bin": b"\x80\x04" * 64})
    out = run_download(monkeypatch, tmp_path, hub.endpoint, f"hf://{repo.repo_id}", "--dest", str(tmp_path / "m"))
    assert out.code == 3
    assert out.termination is not None
    assert "pickle" in out.termination["error"] and "--allow-pickle" in out.termination["error"]
    assert not (tmp_path / "m").exists()


def test_an_unknown_repository_fails_permanently(hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = run_download(monkeypatch, tmp_path, hub.endpoint, "hf://nobody/nothing", "--dest", str(tmp_path / "m"))
    assert out.code == 3
    assert out.termination is not None
    assert "not found" in out.termination["error"]


def test_a_pinned_commit_and_a_new_revision_reuse_unchanged_files(
    hub: Hub, make_repo: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Moving to a revision that drops a shard removes the stale shard and re-fetches only what changed."""
    old: FixtureRepo = make_repo(name="model", seed=3)
    dest = tmp_path / "model"
    first = run_download(monkeypatch, tmp_path, hub.endpoint, f"hf://{old.repo_id}@{old.commit}", "--dest", str(dest))
    assert first.code == 0, first.log
    new: FixtureRepo = make_repo(name="model", seed=3, shards=tiny_shards(shards=2))
    out = run_download(monkeypatch, tmp_path, hub.endpoint, f"hf://{new.repo_id}", "--dest", str(dest))
    assert out.code == 0, out.log
    assert out.termination is not None and out.termination["commit"] == new.commit
    assert not (dest / "model-00003-of-00003.safetensors").exists()
    assert {p.name for p in dest.glob("*.safetensors")} == {p for p in new.files if p.endswith(".safetensors")}
    unchanged = [
        p for p, f in new.files.items() if p in old.files and old.files[p].sha256 == f.sha256 and p != ".gitattributes"
    ]
    assert out.termination["filesReused"] == len(unchanged)
    assert out.termination["bytesHashed"] == 0  # changed files are known from the manifest, not re-read
    assert out.termination["bytesTransferred"] == sum(
        f.size for p, f in new.files.items() if p not in unchanged and p != ".gitattributes"
    )
