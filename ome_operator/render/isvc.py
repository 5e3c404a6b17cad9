"""An InferenceService's children: engine and decoder workloads, the router, and its entry Service."""

from __future__ import annotations

from dataclasses import dataclass

from ome_operator.api import COMPONENTS

from .context import IsvcContext
from .merge import Obj, merge_component
from .router import render_entry_service, render_router, service_url
from .workload import Shape, compute_shape, render_component


@dataclass(frozen=True)
class RenderedIsvc:
    objects: list[Obj]
    shapes: list[Shape]  # engine and decoder, in that order, when declared
    url: str

    @property
    def gpus(self) -> int:
        return sum(s.gpus for s in self.shapes)


def merged_components(ctx: IsvcContext) -> dict[str, Obj]:
    """Each component the InferenceService declares, with the runtime's defaults merged in.

    A component exists only if the InferenceService declares it; the runtime only supplies defaults.
    """
    runtime_spec = ctx.runtime.spec if ctx.runtime is not None else None
    defaults = {
        "engine": runtime_spec.engine_config if runtime_spec else None,
        "decoder": runtime_spec.decoder_config if runtime_spec else None,
        "router": runtime_spec.router_config if runtime_spec else None,
    }
    result: dict[str, Obj] = {}
    for name in COMPONENTS:
        declared = getattr(ctx.isvc.spec, name)
        if declared is None:
            continue
        base = defaults[name]
        result[name] = merge_component(base.to_dict() if base is not None else None, declared.to_dict())
    return result


def render_inference_service(ctx: IsvcContext) -> RenderedIsvc:
    components = merged_components(ctx)
    objects: list[Obj] = []
    shapes: list[Shape] = []
    for name in ("engine", "decoder"):
        if name in components:
            objects.extend(render_component(ctx, name, components[name]))
            shapes.append(compute_shape(name, components[name]))
    if "router" in components:
        objects.extend(render_router(ctx, components["router"]))
        entry = "router"
    else:
        entry = "engine"
    if entry in components:
        multi = entry != "router" and compute_shape(entry, components[entry]).multi_node
        objects.append(render_entry_service(ctx, entry, components[entry], multi))
    return RenderedIsvc(objects=objects, shapes=shapes, url=service_url(ctx))
