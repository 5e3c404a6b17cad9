"""Model repositories generated for the tests and the download benchmark.

A repository is a real git repository laid out the way olah's offline mirror mode reads it:
`<mirror_root>/models/<org>/<name>/` with a `.gitattributes`, small files committed as-is, and
every `*.safetensors` committed as a git LFS pointer whose object lives under
`.git/lfs/objects/<aa>/<bb>/<sha256>` (no git-lfs binary needed). The safetensors files are
written by hand (8-byte little-endian header length, JSON header, raw data) so the tests do not
need numpy or torch, and the expected facts (hashes, parameter count) are computed here from the
inputs, independently of the downloader's code.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

DTYPE_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "F8_E4M3": 1, "I64": 8, "I32": 4, "I8": 1, "U8": 1}

GITATTRIBUTES = "*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPE_BYTES[self.dtype]


@dataclass
class FixtureFile:
    """One file of the repository as the hub should serve it."""

    path: str
    content_path: Path  # where the real bytes are (the LFS object, or the working-tree file)
    size: int
    sha256: str
    git_sha1: str
    lfs: bool


@dataclass
class FixtureRepo:
    repo_id: str
    git_dir: Path
    commit: str
    files: dict[str, FixtureFile] = field(default_factory=dict)
    config: dict[str, object] = field(default_factory=dict)
    parameter_count: int = 0
    tensor_dtypes: dict[str, int] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files.values())


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def safetensors_bytes(tensors: list[Tensor], fill: Callable[[int], bytes]) -> bytes:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in tensors:
        header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    return struct.pack("<Q", len(raw)) + raw + fill(offset)


def write_safetensors_streaming(path: Path, tensors: list[Tensor], seed: int, block: int = 8 << 20) -> None:
    """Write a large safetensors file without holding its data in memory (for the benchmark)."""
    header_and_nothing = safetensors_bytes(tensors, lambda n: b"")
    data_len = sum(t.nbytes for t in tensors)
    rng = random.Random(seed)
    with path.open("wb") as f:
        f.write(header_and_nothing)
        left = data_len
        while left:
            n = min(block, left)
            f.write(rng.randbytes(n))
            left -= n


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def deepseek_like_config(**overrides: object) -> dict[str, object]:
    config: dict[str, object] = {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "kimi_k2",
        "hidden_size": 256,
        "num_hidden_layers": 2,
        "vocab_size": 2048,
        "max_position_embeddings": 131072,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.48.3",
        "quantization_config": {
            "activation_scheme": "dynamic",
            "fmt": "e4m3",
            "quant_method": "fp8",
            "weight_block_size": [128, 128],
        },
    }
    config.update(overrides)
    return config


# moonshotai/Kimi-K2-Instruct's config.json, value for value (its architecture facts are what
# the downloader extracts and the runtime match reads; auto_map dropped, since no code is served).
KIMI_K2_REPO = "moonshotai/Kimi-K2-Instruct"
KIMI_K2_CONFIG: dict[str, object] = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "aux_loss_alpha": 0.001,
    "bos_token_id": 163584,
    "eos_token_id": 163585,
    "first_k_dense_replace": 1,
    "hidden_act": "silu",
    "hidden_size": 7168,
    "initializer_range": 0.02,
    "intermediate_size": 18432,
    "kv_lora_rank": 512,
    "max_position_embeddings": 131072,
    "model_type": "kimi_k2",
    "moe_intermediate_size": 2048,
    "moe_layer_freq": 1,
    "n_group": 1,
    "n_routed_experts": 384,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": 64,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 61,
    "num_key_value_heads": 64,
    "num_nextn_predict_layers": 0,
    "pretraining_tp": 1,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "quantization_config": {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": [128, 128],
    },
    "rms_norm_eps": 1e-06,
    "rope_theta": 50000.0,
    "routed_scaling_factor": 2.827,
    "rope_scaling": {
        "beta_fast": 1.0,
        "beta_slow": 1.0,
        "factor": 32.0,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "original_max_position_embeddings": 4096,
        "type": "yarn",
    },
    "scoring_func": "sigmoid",
    "seq_aux": True,
    "tie_word_embeddings": False,
    "topk_group": 1,
    "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16",
    "transformers_version": "4.48.3",
    "use_cache": True,
    "v_head_dim": 128,
    "vocab_size": 163840,
}
# What that config implies, computed by hand from the values above (not by the downloader's code):
# 61 MLA layers, 1 dense + 60 MoE layers of 384 routed + 1 shared experts, untied 163840-token
# embeddings and head.
KIMI_K2_PARAMETERS = 1_026_408_232_448


def build_kimi_k2_repo(mirror_root: Path) -> FixtureRepo:
    """OME's Kimi K2 repository as the local hub serves it: Kimi K2's own config.json, and
    DeepSeek-V3-shaped fp8 block-quantized shards at reduced size (a few MB, not 1 TB)."""
    readme = (
        f"# {KIMI_K2_REPO} (local stand-in)\n\nconfig.json is Kimi K2 Instruct's; the safetensors shards are\n"
        "small DeepSeek-V3-shaped fp8 tensors with random data, so that 16 nodes can download them.\n"
    )
    return build_repo(
        mirror_root, KIMI_K2_REPO, config=dict(KIMI_K2_CONFIG), seed=1, extra_files={"README.md": readme.encode()}
    )


def catalog_config(spec: dict[str, object]) -> dict[str, object]:
    """A config.json carrying a catalog entry's facts (they were read from the real config.json)."""
    conf = spec.get("modelConfiguration") if isinstance(spec.get("modelConfiguration"), dict) else {}
    assert isinstance(conf, dict)
    framework = spec.get("modelFramework") if isinstance(spec.get("modelFramework"), dict) else {}
    assert isinstance(framework, dict)
    config: dict[str, object] = {
        "architectures": [spec.get("modelArchitecture") or conf.get("architecture")],
        "model_type": spec.get("modelType") or conf.get("model_type"),
        "hidden_size": 256,
        "num_hidden_layers": 2,
        "vocab_size": 2048,
        "max_position_embeddings": spec.get("maxTokens") or conf.get("context_length"),
        "torch_dtype": conf.get("torch_dtype", "bfloat16"),
        "transformers_version": framework.get("version") or conf.get("transformers_version"),
    }
    if spec.get("quantization") == "fp8":
        config["quantization_config"] = {
            "activation_scheme": "dynamic",
            "fmt": "e4m3",
            "quant_method": "fp8",
            "weight_block_size": [128, 128],
        }
    return {k: v for k, v in config.items() if v is not None}


def tiny_shards(layers: int = 2, hidden: int = 256, vocab: int = 2048, shards: int = 3) -> list[list[Tensor]]:
    """A few MB of tensors shaped like a DeepSeek-V3 checkpoint (bf16 embeddings, fp8 block-quantized
    weights with their f32 scales), spread over `shards` files."""
    tensors = [Tensor("model.embed_tokens.weight", "BF16", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}"
        for proj in ("q_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
            tensors.append(Tensor(f"{p}.{proj}.weight", "F8_E4M3", (hidden * 4, hidden)))
            tensors.append(Tensor(f"{p}.{proj}.weight_scale_inv", "F32", (hidden * 4 // 128, hidden // 128)))
        tensors.append(Tensor(f"{p}.input_layernorm.weight", "BF16", (hidden,)))
    tensors.append(Tensor("model.norm.weight", "BF16", (hidden,)))
    tensors.append(Tensor("lm_head.weight", "BF16", (vocab, hidden)))
    per = math.ceil(len(tensors) / shards)
    return [tensors[i : i + per] for i in range(0, len(tensors), per)]


def build_repo(
    mirror_root: Path,
    repo_id: str,
    *,
    shards: list[list[Tensor]] | None = None,
    config: dict[str, object] | None = None,
    seed: int = 0,
    extra_files: dict[str, bytes] | None = None,
    large: bool = False,
) -> FixtureRepo:
    """Create (or replace) `repo_id` under `mirror_root/models/` as a committed git repository."""
    org, name = repo_id.split("/")
    git_dir = mirror_root / "models" / org / name
    if git_dir.exists():
        subprocess.run(["rm", "-rf", str(git_dir)], check=True)
    git_dir.mkdir(parents=True)
    _git(git_dir, "init", "-q", "-b", "main")
    shards = shards if shards is not None else tiny_shards()
    config = config if config is not None else deepseek_like_config()
    repo = FixtureRepo(repo_id=repo_id, git_dir=git_dir, commit="", config=config)

    def add_small(path: str, data: bytes) -> None:
        target = git_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        repo.files[path] = FixtureFile(
            path, target, len(data), hashlib.sha256(data).hexdigest(), git_blob_sha1(data), lfs=False
        )

    def add_lfs(path: str, write: Callable[[Path], None]) -> None:
        staging = git_dir / ".git" / "lfs" / "incoming"
        staging.mkdir(parents=True, exist_ok=True)
        tmp = staging / path.replace("/", "_")
        write(tmp)
        sha256 = _sha256_file(tmp)
        size = tmp.stat().st_size
        obj = git_dir / ".git" / "lfs" / "objects" / sha256[:2] / sha256[2:4] / sha256
        obj.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, obj)
        pointer = lfs_pointer(sha256, size)
        (git_dir / path).parent.mkdir(parents=True, exist_ok=True)
        (git_dir / path).write_bytes(pointer)
        repo.files[path] = FixtureFile(path, obj, size, sha256, git_blob_sha1(pointer), lfs=True)

    add_small(".gitattributes", GITATTRIBUTES.encode())
    add_small("config.json", json.dumps(config, indent=2).encode())
    add_small("generation_config.json", b'{"bos_token_id": 0, "eos_token_id": 1}\n')
    add_small("tokenizer_config.json", b'{"model_max_length": 131072}\n')
    add_small("README.md", f"# {repo_id}\n\nA generated test model.\n".encode())
    weight_map: dict[str, str] = {}
    total_size = 0
    for i, tensors in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        shard_seed = seed * 1000 + i
        if large:
            add_lfs(fname, lambda p, t=tensors, s=shard_seed: write_safetensors_streaming(p, t, s))
        else:
            rng = random.Random(shard_seed)
            data = safetensors_bytes(tensors, rng.randbytes)
            add_lfs(fname, lambda p, d=data: p.write_bytes(d))
        for t in tensors:
            weight_map[t.name] = fname
            total_size += t.nbytes
            repo.parameter_count += t.numel
            repo.tensor_dtypes[t.dtype] = repo.tensor_dtypes.get(t.dtype, 0) + t.numel
    index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    add_small("model.safetensors.index.json", json.dumps(index, indent=2).encode())
    for path, data in (extra_files or {}).items():
        if path.endswith((".bin", ".safetensors")):
            add_lfs(path, lambda p, d=data: p.write_bytes(d))
        else:
            add_small(path, data)
    _git(git_dir, "add", "-A")
    _git(git_dir, "commit", "-q", "-m", "fixture model")
    repo.commit = _git(git_dir, "rev-parse", "HEAD").strip()
    return repo


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def _git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "fixture",
        "GIT_AUTHOR_EMAIL": "fixture@example.invalid",
        "GIT_COMMITTER_NAME": "fixture",
        "GIT_COMMITTER_EMAIL": "fixture@example.invalid",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(cwd),  # keep the user's global git config (hooks, lfs filters) out of it
    }
    out = subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return out.stdout
