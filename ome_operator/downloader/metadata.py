"""Facts about a model read from its files: config.json and the safetensors headers.

The operator uses these for runtime compatibility (OME matches runtimes on format, architecture,
quantization and size), so they come from the files themselves, never from the model's spec:
- architecture, model_type, dtype, max context and transformers version from config.json;
- the quantization method from `quantization_config` (normalised to OME's words, e.g. `fp8`);
- the parameter count as the sum of the element counts of every tensor in the safetensors
  headers (the same total the hub reports), read with one small read per file; for an
  architecture whose size follows from its config.json (DeepSeek-V3 and the models built on it,
  such as Kimi K2: MLA attention and routed experts), the count the config implies is the model's
  parameter count, and the headers' sum is reported beside it as what these files hold. The two
  agree on a real checkpoint (Kimi K2: 1.026T from either); they differ for a reduced-size
  stand-in such as the local hub's, whose config is Kimi K2's but whose shards hold a few MB.
A safetensors header is also a cheap integrity check for copies that were not downloaded by us
(local://, pvc://): its offsets must account for exactly the file's size.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_HEADER_BYTES = 100 << 20  # the format's own limit (safetensors rejects larger headers)
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}  # fmt: skip
INDEX_NAME = "model.safetensors.index.json"


class ModelFormatError(ValueError):
    """The model's files are missing or inconsistent; the message names the file."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def read_safetensors_header(path: Path) -> list[TensorInfo]:
    """Parse and check the header: every tensor's bytes inside the data, the data filling the file."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelFormatError(f"{path.name}: too short to be a safetensors file ({size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise ModelFormatError(f"{path.name}: header length {n} does not fit the file ({size} bytes)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFormatError(f"{path.name}: header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ModelFormatError(f"{path.name}: header is not a JSON object")
    data_len = size - 8 - n
    tensors: list[TensorInfo] = []
    end_max = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = str(entry["dtype"])
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ModelFormatError(f"{path.name}: tensor {name!r} has a malformed header entry") from None
        if not 0 <= begin <= end <= data_len:
            raise ModelFormatError(f"{path.name}: tensor {name!r} lies outside the file (truncated copy?)")
        bits = DTYPE_BITS.get(dtype)
        if bits is not None and (math.prod(shape) * bits + 7) // 8 != end - begin:
            raise ModelFormatError(f"{path.name}: tensor {name!r} size does not match its {dtype} shape {shape}")
        tensors.append(TensorInfo(name, dtype, shape, begin, end))
        end_max = max(end_max, end)
    if end_max != data_len:
        raise ModelFormatError(
            f"{path.name}: the header accounts for {end_max} data bytes but the file holds {data_len}"
        )
    return tensors


@dataclass
class ModelMetadata:
    model_type: str | None = None
    architecture: str | None = None
    parameter_count: int | None = None
    weights_parameter_count: int | None = None  # the safetensors headers' sum
    parameter_source: str | None = None  # "config.json" or "safetensors"
    dtype: str | None = None
    tensor_dtypes: dict[str, int] = field(default_factory=dict)
    quantization: str | None = None
    max_tokens: int | None = None
    transformers_version: str | None = None
    format_name: str | None = None  # safetensors, or pytorch for opted-in pickle weights

    def to_json(self) -> dict[str, Any]:
        """OME's field names (its model agent's `config`), plus the exact parameter count."""
        out: dict[str, Any] = {
            "modelType": self.model_type,
            "modelArchitecture": self.architecture,
            "modelFormat": {"name": self.format_name, "version": "1.0.0"} if self.format_name else None,
            "modelParameterSize": format_parameter_size(self.parameter_count),
            "parameterCount": self.parameter_count,
            "weightsParameterCount": self.weights_parameter_count,
            "parameterSource": self.parameter_source,
            "dtype": self.dtype,
            "quantization": self.quantization,
            "maxTokens": self.max_tokens,
        }
        if self.transformers_version:
            out["modelFramework"] = {"name": "transformers", "version": self.transformers_version}
        return {k: v for k, v in out.items() if v is not None}


def format_parameter_size(count: int | None) -> str | None:
    """`7B`, `7.11B`, `1.03T`: two significant decimals at most, as OME prints sizes."""
    if not count:
        return None
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            return f"{count / scale:.2f}".rstrip("0").rstrip(".") + unit
    return str(count)


def normalise_quantization(config: dict[str, Any]) -> str | None:
    q = config.get("quantization_config") or config.get("compression_config")
    if not isinstance(q, dict):
        return None
    method = str(q.get("quant_method") or "").lower() or None
    if method in ("compressed-tensors", "compressed_tensors"):
        # The method names the container; the scheme is in the weight config of each group.
        for group in (q.get("config_groups") or {}).values():
            weights = group.get("weights") if isinstance(group, dict) else None
            if isinstance(weights, dict) and weights.get("num_bits"):
                kind = "fp" if weights.get("type") == "float" else "int"
                return f"{kind}{weights['num_bits']}"
    return method


def _first(config: dict[str, Any], *keys: str) -> Any:
    for source in (config, config.get("text_config") or {}):
        for key in keys:
            if isinstance(source, dict) and source.get(key) is not None:
                return source[key]
    return None


_DEEPSEEK_V3_KEYS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "intermediate_size",
    "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
    "n_routed_experts", "moe_intermediate_size",
)  # fmt: skip


def config_parameter_count(config: dict[str, Any]) -> int | None:
    """The parameter count a DeepSeek-V3-style config (MLA + routed experts) implies, or None.

    Per layer: MLA attention (q through a low-rank projection when q_lora_rank is set, the shared
    compressed KV, the output projection) and two norms; the first `first_k_dense_replace` layers
    have a dense MLP, the others every routed and shared expert (gate, up, down) plus the router
    and its score-correction bias. Then embeddings, the final norm and an untied LM head.
    """
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    assert isinstance(text, dict)
    architectures = config.get("architectures") or text.get("architectures") or []
    if "DeepseekV3ForCausalLM" not in architectures:
        return None
    if not all(isinstance(text.get(k), int) and text[k] > 0 for k in _DEEPSEEK_V3_KEYS):
        return None
    h, layers, heads = text["hidden_size"], text["num_hidden_layers"], text["num_attention_heads"]
    nope, rope, v = text["qk_nope_head_dim"], text["qk_rope_head_dim"], text["v_head_dim"]
    kv_rank, q_rank = text["kv_lora_rank"], text.get("q_lora_rank")
    if isinstance(q_rank, int) and q_rank > 0:
        q = h * q_rank + q_rank + q_rank * heads * (nope + rope)
    else:
        q = h * heads * (nope + rope)
    attention = q + h * (kv_rank + rope) + kv_rank + kv_rank * heads * (nope + v) + heads * v * h + 2 * h
    experts, shared = text["n_routed_experts"], int(text.get("n_shared_experts") or 0)
    moe = (experts + shared) * 3 * h * text["moe_intermediate_size"] + experts * h + experts
    dense_layers = min(int(text.get("first_k_dense_replace") or 0), layers)
    dense = 3 * h * text["intermediate_size"]
    heads_out = 1 if text.get("tie_word_embeddings") else 2
    total = layers * attention + dense_layers * dense + (layers - dense_layers) * moe
    return int(total + heads_out * text["vocab_size"] * h + h)


def read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFormatError(f"{model_dir}: no config.json") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"config.json is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ModelFormatError("config.json is not a JSON object")
    return config


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files that make up the model: the index's shards (all must exist), else
    every `*.safetensors` at the top level."""
    index = model_dir / INDEX_NAME
    if index.exists():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ModelFormatError(f"{INDEX_NAME} is malformed: {exc}") from None
        missing = [s for s in shards if not (model_dir / s).is_file()]
        if missing:
            raise ModelFormatError(f"{INDEX_NAME} names {len(missing)} missing shard(s), e.g. {missing[0]}")
        return [model_dir / s for s in shards]
    return sorted(model_dir.glob("*.safetensors"))


def extract_metadata(model_dir: Path) -> ModelMetadata:
    config = read_config(model_dir)
    meta = ModelMetadata()
    meta.model_type = _first(config, "model_type")
    architectures = config.get("architectures")
    if isinstance(architectures, list) and architectures:
        meta.architecture = str(architectures[0])
    meta.dtype = _first(config, "torch_dtype", "dtype")
    meta.quantization = normalise_quantization(config)
    max_tokens = _first(config, "max_position_embeddings", "max_sequence_length", "seq_length", "n_positions")
    meta.max_tokens = int(max_tokens) if isinstance(max_tokens, int | float) else None
    version = config.get("transformers_version")
    meta.transformers_version = str(version) if version else None
    files = weight_files(model_dir)
    if not files and any(p.suffix in (".bin", ".pt", ".pth") for p in model_dir.iterdir()):
        meta.format_name = "pytorch"  # pickle weights (opted in): no header to count parameters from
    if files:
        meta.format_name = "safetensors"
        total = 0
        for path in files:
            for t in read_safetensors_header(path):
                total += t.numel
                meta.tensor_dtypes[t.dtype] = meta.tensor_dtypes.get(t.dtype, 0) + t.numel
        meta.weights_parameter_count = meta.parameter_count = total
        meta.parameter_source = "safetensors"
    implied = config_parameter_count(config)
    if implied is not None:
        meta.parameter_count, meta.parameter_source = implied, "config.json"
    return meta
