"""`plan`: what an InferenceService will occupy, and whether the weights fit, before anything is applied."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ome_operator.api.model import AnyModel

from .select import ModelFacts, parse_size
from .workload import Shape

GIB = 1024**3


@dataclass(frozen=True)
class Accelerator:
    name: str
    memory_bytes: int
    gpus_per_node: int
    price_per_gpu_hour: float


H200 = Accelerator("H200", 141 * GIB, 8, 2.30)

# Bytes per weight for a quantization method or dtype name.
_BYTES_PER_PARAM = {
    "fp8": 1.0,
    "fbgemm_fp8": 1.0,
    "f8_e4m3": 1.0,
    "int8": 1.0,
    "int4": 0.5,
    "awq": 0.5,
    "gptq": 0.5,
    "bf16": 2.0,
    "fp16": 2.0,
    "f16": 2.0,
    "float16": 2.0,
    "bfloat16": 2.0,
    "f32": 4.0,
    "fp32": 4.0,
    "float32": 4.0,
}


@dataclass(frozen=True)
class ComponentPlan:
    shape: Shape
    nodes: int
    weight_bytes_per_gpu: float | None


@dataclass(frozen=True)
class Plan:
    name: str
    namespace: str
    model: str
    runtime: str
    components: list[ComponentPlan]
    accelerator: Accelerator
    weight_bytes: float | None
    notes: list[str]

    @property
    def gpus(self) -> int:
        return sum(c.shape.gpus for c in self.components)

    @property
    def nodes(self) -> int:
        return sum(c.nodes for c in self.components)

    @property
    def cost_per_hour(self) -> float:
        return self.gpus * self.accelerator.price_per_gpu_hour


def compute_weight_bytes(model: AnyModel) -> tuple[float | None, str]:
    """Total weight bytes from parameter count and dtype, where both are known."""
    facts = ModelFacts.of(model.spec, model.status)
    meta = model.status.metadata if model.status is not None else None
    params: float | None = float(meta.parameter_count) if meta and meta.parameter_count else facts.size
    if params is None:
        params = parse_size(model.spec.model_parameter_size)
    configured = (model.spec.model_configuration or {}).get("torch_dtype")
    dtype = facts.quantization or (meta.dtype if meta else None) or (str(configured) if configured else None)
    if params is None or dtype is None:
        missing = " and ".join(w for w, v in (("parameter count", params), ("dtype", dtype)) if v is None)
        return None, f"model {model.name}: {missing} not known yet, weight memory not estimated"
    per = _BYTES_PER_PARAM.get(dtype.lower())
    if per is None:
        return None, f"model {model.name}: unknown bytes per parameter for {dtype!r}"
    return params * per, ""


def compute_plan(
    name: str, namespace: str, model: AnyModel, runtime: str, shapes: list[Shape], accelerator: Accelerator
) -> Plan:
    weight_bytes, note = compute_weight_bytes(model)
    notes = [note] if note else []
    components = []
    for shape in shapes:
        nodes = math.ceil(shape.gpus / accelerator.gpus_per_node)
        # A model replica is sharded over the whole group (TP/EP/DP attention across PARALLELISM_SIZE GPUs).
        per_gpu = weight_bytes / shape.parallelism if weight_bytes is not None and shape.parallelism else None
        components.append(ComponentPlan(shape, nodes, per_gpu))
        if per_gpu is not None and per_gpu > accelerator.memory_bytes:
            notes.append(
                f"WARNING: {shape.component} needs {per_gpu / GIB:.1f} GiB of weights per GPU, more than the "
                f"{accelerator.memory_bytes / GIB:.0f} GiB of an {accelerator.name}"
            )
    return Plan(name, namespace, model.name, runtime, components, accelerator, weight_bytes, notes)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def format_component(c: ComponentPlan, acc: Accelerator, disaggregated: bool) -> str:
    s = c.shape
    # Without a decoder the engine does both prefill and decode.
    title = {"engine": "engine (prefill):" if disaggregated else "engine:", "decoder": "decoder (decode):"}[s.component]
    if s.multi_node:
        size = f"{_plural(s.groups, 'group')} × {_plural(s.pods_per_group, 'node')} × {_plural(s.gpus_per_pod, 'GPU')}"
    else:
        size = f"{_plural(s.groups, 'pod')} × {_plural(s.gpus_per_pod, 'GPU')}"
    line = f"  {title:<18} {size} = {_plural(s.gpus, 'GPU')}"
    if c.weight_bytes_per_gpu is not None:
        line += f"; weights {c.weight_bytes_per_gpu / GIB:.1f} GiB/GPU of {acc.memory_bytes / GIB:.0f} GiB ({acc.name})"
    return line


def format_plan(plan: Plan) -> str:
    acc = plan.accelerator
    lines = [
        f"InferenceService {plan.namespace}/{plan.name}",
        f"  model: {plan.model}   runtime: {plan.runtime}",
        *(format_component(c, acc, len(plan.components) > 1) for c in plan.components),
        f"  total: {_plural(len(plan.components), 'component')}, {_plural(plan.gpus, 'GPU')} "
        f"on {_plural(plan.nodes, 'node')}, "
        f"${plan.cost_per_hour:,.2f}/hour at ${acc.price_per_gpu_hour:.2f}/GPU-hour ({acc.name})",
        *(f"  {note}" for note in plan.notes),
    ]
    return "\n".join(lines)
