"""Offline rendering of a set of objects read from files: resolve references among them, then render.

The operator resolves the same references against the cluster; here the files are the cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ome_operator.api import BaseModel, ClusterBaseModel, InferenceService, Problem, Resource
from ome_operator.api.model import AnyModel
from ome_operator.api.runtime import AnyRuntime, ClusterServingRuntime, ServingRuntime

from .context import IsvcContext, ModelRefResolved, Settings
from .download import render_model
from .isvc import RenderedIsvc, render_inference_service
from .merge import Obj
from .select import ModelFacts, Selection, candidates_of, resolve_named_runtime, select_runtime


@dataclass
class ResolvedIsvc:
    isvc: InferenceService
    model: AnyModel
    selection: Selection
    rendered: RenderedIsvc


@dataclass
class Bundle:
    objects: list[Obj] = field(default_factory=list)
    services: list[ResolvedIsvc] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def resolve_model(isvc: InferenceService, models: list[AnyModel]) -> AnyModel | None:
    """OME's lookup: a BaseModel in the InferenceService's namespace first, then a ClusterBaseModel."""
    ref = isvc.spec.model
    if ref is None:
        return None
    for model in models:
        if model.name != ref.name:
            continue
        if isinstance(model, BaseModel) and model.namespace == isvc.namespace and ref.kind in (None, "BaseModel"):
            return model
    for model in models:
        if isinstance(model, ClusterBaseModel) and model.name == ref.name and ref.kind in (None, "ClusterBaseModel"):
            return model
    return None


def resolve_runtime_for(isvc: InferenceService, model: AnyModel, runtimes: list[AnyRuntime]) -> Selection:
    facts = ModelFacts.of(model.spec, model.status)
    candidates = candidates_of(runtimes, isvc.namespace or "default")
    if isvc.spec.runtime is not None:
        return resolve_named_runtime(facts, isvc.spec.runtime.name, isvc.spec.runtime.kind, candidates)
    return select_runtime(facts, candidates)


def render_bundle(objects: list[Resource], settings: Settings, nodes: list[str]) -> Bundle:
    models: list[AnyModel] = [o for o in objects if isinstance(o, ClusterBaseModel | BaseModel)]
    runtimes: list[AnyRuntime] = [o for o in objects if isinstance(o, ClusterServingRuntime | ServingRuntime)]
    services = [o for o in objects if isinstance(o, InferenceService)]
    bundle = Bundle()
    for model in sorted(models, key=lambda m: (m.crd.kind, m.namespace or "", m.name)):
        bundle.objects.extend(render_model(model, nodes, settings))
    for isvc in sorted(services, key=lambda s: (s.namespace or "", s.name)):
        resolve_and_render(isvc, models, runtimes, settings, bundle)
    return bundle


def resolve_and_render(
    isvc: InferenceService,
    models: list[AnyModel],
    runtimes: list[AnyRuntime],
    settings: Settings,
    bundle: Bundle,
) -> None:
    def problem(path: str, reason: str) -> None:
        bundle.problems.append(Problem("InferenceService", isvc.name, path, reason))

    if isvc.spec.engine is None and isvc.spec.decoder is None and isvc.spec.router is None:
        problem("spec.engine", "declares no component: set engine (and optionally decoder and router)")
        return
    if isvc.spec.model is None:
        problem("spec.model", "no model named")
        return
    model = resolve_model(isvc, models)
    if model is None:
        problem(
            "spec.model.name",
            f"model {isvc.spec.model.name!r} not found (no BaseModel in the namespace "
            "and no ClusterBaseModel of that name among the inputs)",
        )
        return
    if model.spec.disabled:
        problem("spec.model.name", f"model {model.name!r} is disabled")
        return
    selection = resolve_runtime_for(isvc, model, runtimes)
    if selection.runtime is None:
        path = "spec.runtime.name" if isvc.spec.runtime is not None else "spec.runtime"
        detail = "; ".join(f"{c.kind} {c.name}: {why}" for c, why in selection.excluded)
        problem(path, selection.reason + (f" ({detail})" if detail else ""))
        return
    ctx = IsvcContext(isvc, selection.runtime, ModelRefResolved.of(model, settings), settings)
    rendered = render_inference_service(ctx)
    bundle.objects.extend(rendered.objects)
    bundle.services.append(ResolvedIsvc(isvc, model, selection, rendered))
