"""The local hub's Kimi K2 repository: Kimi K2's config.json, small but real safetensors shards, and the
facts the downloader reads from them (the parameter count the config implies, computed independently
in devtools.fixtures)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from devtools.fixtures import KIMI_K2_CONFIG, KIMI_K2_PARAMETERS, KIMI_K2_REPO, build_kimi_k2_repo
from devtools.hub import served_digests
from ome_operator.downloader.metadata import config_parameter_count, extract_metadata, read_safetensors_header


def test_the_repository_reads_as_kimi_k2(tmp_path: Path) -> None:
    repo = build_kimi_k2_repo(tmp_path / "mirrors")
    assert repo.repo_id == KIMI_K2_REPO == "moonshotai/Kimi-K2-Instruct"
    copy = tmp_path / "copy"
    copy.mkdir()
    for path, f in repo.files.items():
        shutil.copyfile(f.content_path, copy / path)
    shards = sorted(copy.glob("*.safetensors"))
    assert len(shards) == 3 and all(read_safetensors_header(s) for s in shards)  # valid headers + data
    # The hub lists each shard's sha256 (its LFS oid), and it is the sha256 of the bytes.
    digests = served_digests(repo.git_dir)
    for shard in shards:
        assert digests[shard.name] == hashlib.sha256(shard.read_bytes()).hexdigest()
    meta = extract_metadata(copy).to_json()
    assert meta["modelArchitecture"] == "DeepseekV3ForCausalLM" and meta["modelType"] == "kimi_k2"
    assert meta["quantization"] == "fp8" and meta["maxTokens"] == 131072
    assert meta["parameterCount"] == KIMI_K2_PARAMETERS and meta["modelParameterSize"] == "1.03T"
    assert meta["parameterSource"] == "config.json"
    assert meta["weightsParameterCount"] == repo.parameter_count  # what the small shards hold


def test_the_config_implied_count_needs_the_whole_architecture() -> None:
    assert config_parameter_count(KIMI_K2_CONFIG) == KIMI_K2_PARAMETERS
    partial = {k: v for k, v in KIMI_K2_CONFIG.items() if k != "n_routed_experts"}
    assert config_parameter_count(partial) is None  # then the safetensors headers' sum is used
    assert config_parameter_count({**KIMI_K2_CONFIG, "architectures": ["LlamaForCausalLM"]}) is None
