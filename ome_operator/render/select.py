"""Runtime selection and validation with OME's rules, keeping every excluded runtime's reason.

Rules (research/ome.md §2.2): a runtime is compatible when one of its supportedModelFormats matches
the model strictly (architecture and quantization equal and both-or-neither set; format and framework
names equal, versions compared with the entry's operator) and the model's size lies in its
modelSizeRange. Auto-selection considers only autoSelect entries and orders namespaced runtimes
before cluster ones, then by score, then by the tightest size range, then by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ome_operator.api import BaseModelSpec, ModelStatus, ServingRuntime, SupportedModelFormat
from ome_operator.api import reasons as R
from ome_operator.api.model import ModelFormat
from ome_operator.api.runtime import AnyRuntime

_SIZE_SUFFIX = {"T": 10**12, "B": 10**9, "M": 10**6, "K": 10**3}


def format_size(value: float) -> str:
    """1e12 -> "1T", 8e9 -> "8B", 1.03e12 -> "1.03T"."""
    for suffix in ("T", "B", "M", "K"):
        unit = _SIZE_SUFFIX[suffix]
        if value >= unit:
            return f"{value / unit:.3g}{suffix}"
    return f"{value:.3g}"


def parse_size(text: str | None) -> float | None:
    """ "1T" -> 1e12, "1.5T", "650B", "500M"; None when absent or unreadable."""
    if not text:
        return None
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([TBMK]?)\s*", text.upper())
    if not match:
        return None
    return float(match.group(1)) * _SIZE_SUFFIX.get(match.group(2), 1)


@dataclass(frozen=True)
class ModelFacts:
    """What selection knows about a model: its spec, filled in from discovered metadata where empty."""

    model_format: ModelFormat | None
    model_framework: ModelFormat | None
    architecture: str | None
    quantization: str | None
    size: float | None
    known: bool  # False until the spec or a download says what the weights are

    @classmethod
    def of(cls, spec: BaseModelSpec, status: ModelStatus | None = None) -> ModelFacts:
        meta = status.metadata if status is not None else None
        model_format = spec.model_format
        framework = spec.model_framework
        architecture = spec.model_architecture
        quantization = spec.quantization
        size_text = spec.model_parameter_size
        if meta is not None and meta.architecture:
            architecture = architecture or meta.architecture
            quantization = quantization or meta.quantization
            size_text = size_text or meta.parameter_size
            model_format = model_format or ModelFormat(name="safetensors", version="1.0.0")
            if framework is None and meta.transformers_version:
                framework = ModelFormat(name="transformers", version=meta.transformers_version)
        known = any(x is not None for x in (model_format, framework, architecture, quantization, size_text))
        return cls(model_format, framework, architecture, quantization, parse_size(size_text), known)


@dataclass(frozen=True)
class Candidate:
    runtime: AnyRuntime
    namespaced: bool

    @property
    def kind(self) -> str:
        return self.runtime.crd.kind

    @property
    def name(self) -> str:
        return self.runtime.name


@dataclass
class Selection:
    """The outcome: a runtime (or none), and why each other runtime was not chosen."""

    runtime: AnyRuntime | None
    code: str  # a RuntimeResolved reason from api.reasons
    provisional: bool = False  # named runtime accepted before the model's metadata is known
    reason: str = ""
    excluded: list[tuple[Candidate, str]] = field(default_factory=list)


def _version_tuple(version: str) -> tuple[int, ...] | None:
    """`v1.2.3` / `1.2.3` / `1.2` -> (1, 2, 3) / (1, 2, 3) / (1, 2); None for unofficial versions."""
    parts = version.strip().removeprefix("v").split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else None


def _padded(version: tuple[int, ...], length: int) -> tuple[int, ...]:
    return version + (0,) * (length - len(version))


def compare_version(model_version: str, runtime_version: str, operator: str | None) -> bool:
    """OME's rule: the model's version relative to the runtime's, by the runtime entry's operator.

    Equal parses both as OME does, so `1.0`, `1.0.0` and `v1.0.0` are the same version; the ordered
    operators need the same precision on both sides.
    """
    op = operator or "Equal"
    mv, rv = _version_tuple(model_version), _version_tuple(runtime_version)
    if op == "Equal":
        if mv is None or rv is None:
            return model_version.strip() == runtime_version.strip()
        length = max(len(mv), len(rv))
        return _padded(mv, length) == _padded(rv, length)
    if mv is None or rv is None or len(mv) != len(rv):
        # Unofficial or differently precise versions can only be equal.
        return model_version == runtime_version
    return mv > rv if op == "GreaterThan" else mv >= rv


def _format_mismatch(what: str, model: ModelFormat | None, entry: ModelFormat | None) -> str | None:
    if entry is None and model is None:
        return None
    if entry is None or model is None:
        side = "model" if model is None else "runtime"
        return f"{what} is set on only one side (missing on the {side})"
    if entry.name != model.name:
        return f"{what} {model.name} does not match {entry.name}"
    if (entry.version is None) != (model.version is None):
        return f"{what} version is set on only one side"
    if entry.version and model.version and not compare_version(model.version, entry.version, entry.operator):
        op = entry.operator or "Equal"
        return f"{what} version {model.version} is not {op} {entry.version}"
    return None


def format_mismatch(facts: ModelFacts, entry: SupportedModelFormat) -> str | None:
    """Why this supportedModelFormats entry does not fit the model, or None when it does."""
    if entry.model_format is None:
        return "entry has no modelFormat"
    for what, model_value, entry_value in (
        ("architecture", facts.architecture, entry.model_architecture),
        ("quantization", facts.quantization, entry.quantization),
    ):
        if (model_value is None) != (entry_value is None):
            side = "model" if model_value is None else "runtime"
            return f"{what} is set on only one side (missing on the {side})"
        if model_value != entry_value:
            return f"{what} {model_value} does not match {entry_value}"
    return _format_mismatch("format", facts.model_format, entry.model_format) or _format_mismatch(
        "framework", facts.model_framework, entry.model_framework
    )


def size_mismatch(facts: ModelFacts, runtime: AnyRuntime) -> str | None:
    size_range = runtime.spec.model_size_range
    if facts.size is None or size_range is None:
        return None
    low, high = parse_size(size_range.min), parse_size(size_range.max)
    if low is None or high is None:
        return None
    if not low <= facts.size <= high:
        return f"model size {format_size(facts.size)} is outside {size_range.min}..{size_range.max}"
    return None


def _entries(runtime: AnyRuntime, auto_only: bool) -> list[SupportedModelFormat]:
    entries = runtime.spec.supported_model_formats or []
    return [e for e in entries if e.auto_select] if auto_only else list(entries)


def check_runtime(facts: ModelFacts, runtime: AnyRuntime, auto_only: bool) -> str | None:
    """Why the runtime cannot serve the model, or None."""
    if runtime.spec.disabled:
        return "runtime is disabled"
    entries = _entries(runtime, auto_only)
    if not entries:
        return "no supportedModelFormats entry has autoSelect: true" if auto_only else "no supportedModelFormats"
    reasons = [format_mismatch(facts, e) for e in entries]
    if all(r is not None for r in reasons):
        return "; ".join(sorted({r for r in reasons if r}))
    return size_mismatch(facts, runtime)


def score(facts: ModelFacts, runtime: AnyRuntime) -> int:
    """Max over matching autoSelect entries of formatWeight*priority + frameworkWeight*priority."""
    best = 0
    for entry in _entries(runtime, auto_only=True):
        if format_mismatch(facts, entry) is not None:
            continue
        priority = entry.priority or 1
        format_weight = (entry.model_format.weight if entry.model_format else None) or 10
        framework_weight = (entry.model_framework.weight if entry.model_framework else None) or 5
        best = max(best, format_weight * priority + framework_weight * priority)
    return best


def _range_distance(facts: ModelFacts, runtime: AnyRuntime) -> float:
    size_range = runtime.spec.model_size_range
    if facts.size is None or size_range is None:
        return float("inf")
    low, high = parse_size(size_range.min), parse_size(size_range.max)
    if low is None or high is None:
        return float("inf")
    return abs(low - facts.size) + abs(high - facts.size)


def candidates_of(runtimes: list[AnyRuntime], namespace: str) -> list[Candidate]:
    """Namespaced runtimes of the InferenceService's namespace, then every cluster runtime."""
    result = []
    for runtime in runtimes:
        namespaced = isinstance(runtime, ServingRuntime)
        if namespaced and runtime.namespace != namespace:
            continue
        result.append(Candidate(runtime, namespaced))
    return result


def resolve_named_runtime(facts: ModelFacts, name: str, kind: str | None, candidates: list[Candidate]) -> Selection:
    """A runtime the InferenceService names: the namespaced one first, unless kind says otherwise."""
    matches = [c for c in candidates if c.name == name and (kind is None or c.kind == kind)]
    matches.sort(key=lambda c: not c.namespaced)
    if not matches:
        return Selection(None, R.RUNTIME_NOT_FOUND, reason=f"runtime {name!r} not found")
    chosen = matches[0]
    if chosen.runtime.spec.disabled:
        return Selection(None, R.RUNTIME_DISABLED, reason=f"{chosen.kind} {name} is disabled")
    if not facts.known:
        return Selection(
            chosen.runtime,
            R.PROVISIONALLY_ACCEPTED,
            provisional=True,
            reason=f"{chosen.kind} {name} accepted provisionally: the model's format is not known yet; "
            "it is checked again once the download has read the weights",
        )
    why = check_runtime(facts, chosen.runtime, auto_only=False)
    if why is not None:
        return Selection(None, R.RUNTIME_INCOMPATIBLE, reason=f"{chosen.kind} {name} cannot serve the model: {why}")
    return Selection(chosen.runtime, R.RUNTIME_NAMED, reason=f"{chosen.kind} {name} named by the InferenceService")


def select_runtime(facts: ModelFacts, candidates: list[Candidate]) -> Selection:
    """Auto-selection among every candidate, best first, with the reason each other one lost."""
    if not facts.known:
        return Selection(
            None,
            R.WAITING_FOR_MODEL_METADATA,
            reason="waiting for the model's metadata (format, architecture, size) before selecting a runtime",
        )
    eligible: list[tuple[tuple[bool, int, float, str], Candidate]] = []
    excluded: list[tuple[Candidate, str]] = []
    for cand in sorted(candidates, key=lambda c: (c.kind, c.name)):
        why = check_runtime(facts, cand.runtime, auto_only=True)
        value = score(facts, cand.runtime) if why is None else 0
        if why is None and value <= 0:
            why = "score is 0"
        if why is not None:
            excluded.append((cand, why))
            continue
        eligible.append(((not cand.namespaced, -value, _range_distance(facts, cand.runtime), cand.name), cand))
    if not eligible:
        return Selection(None, R.NO_RUNTIME_FOUND, reason="no runtime supports the model", excluded=excluded)
    eligible.sort(key=lambda pair: pair[0])
    chosen = eligible[0][1]
    for _, loser in eligible[1:]:
        excluded.append((loser, f"ranked below {chosen.kind} {chosen.name}"))
    return Selection(
        chosen.runtime, R.RUNTIME_AUTO_SELECTED, reason=f"auto-selected {chosen.kind} {chosen.name}", excluded=excluded
    )
