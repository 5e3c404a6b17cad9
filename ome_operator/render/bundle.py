"""Offline rendering of a set of objects read from files: resolve each InferenceService, then render.

The files are the cluster: the same resolver the operator uses (resolve.py) answers here, and its
conditions become `error:` lines (blocking) or `warning:` lines (advisory, exit code unchanged).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ome_operator.api import BaseModel, ClusterBaseModel, InferenceService, Problem, Resource
from ome_operator.api import reasons as R
from ome_operator.api.model import AnyModel
from ome_operator.api.reasons import Cond
from ome_operator.api.runtime import AnyRuntime, ClusterServingRuntime, ServingRuntime

from .context import Settings
from .download import check_model_storage, render_model
from .isvc import RenderedIsvc, render_inference_service
from .merge import Obj
from .resolve import Resolved, resolve
from .select import Selection

# Offline there is no download: a model that exists is as ready as the files can make it.
_OFFLINE_IGNORED = frozenset({R.MODEL_NOT_READY})


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
    warnings: list[Problem] = field(default_factory=list)


def _identity(obj: Resource) -> tuple[str, str, str]:
    return (obj.crd.kind, obj.namespace or "", obj.name)


def find_duplicates(objects: list[Resource]) -> list[Problem]:
    """Two inputs with the same kind, namespace and name: the cluster would hold only one of them."""
    counts = Counter(_identity(o) for o in objects)
    problems = []
    for (kind, namespace, name), count in sorted(counts.items()):
        if count > 1:
            where = f" in namespace {namespace}" if namespace else ""
            problems.append(Problem(kind, name, "metadata.name", f"appears {count} times in the inputs{where}"))
    return problems


def render_bundle(objects: list[Resource], settings: Settings, nodes: list[str]) -> Bundle:
    models: list[AnyModel] = [o for o in objects if isinstance(o, ClusterBaseModel | BaseModel)]
    runtimes: list[AnyRuntime] = [o for o in objects if isinstance(o, ClusterServingRuntime | ServingRuntime)]
    services = [o for o in objects if isinstance(o, InferenceService)]
    bundle = Bundle(problems=find_duplicates(objects))
    if bundle.problems:
        return bundle
    for model in sorted(models, key=lambda m: (m.crd.kind, m.namespace or "", m.name)):
        storage_problem = check_model_storage(model, settings, models)
        if storage_problem is not None:
            path, _, reason = storage_problem.partition(": ")
            bundle.problems.append(Problem(model.crd.kind, model.name, path, reason))
            continue
        bundle.objects.extend(render_model(model, nodes, settings))
    for isvc in sorted(services, key=lambda s: (s.namespace or "", s.name)):
        add_resolved(bundle, resolve(isvc, models, runtimes, settings))
    return bundle


def add_resolved(bundle: Bundle, resolved: Resolved) -> None:
    """Render what resolved cleanly; turn every condition that is not True into a line."""
    name = resolved.isvc.name

    def line(cond: Cond) -> Problem:
        return Problem("InferenceService", name, cond.path or f"status.conditions[{cond.type}]", cond.message)

    blocking = [
        c for c in resolved.conditions if c.type not in R.ADVISORY_CONDITIONS and c.reason not in _OFFLINE_IGNORED
    ]
    errors = [c for c in blocking if c.status is False]
    # An Unknown part (waiting for metadata) is only worth a line when nothing False explains it.
    errors = errors or [c for c in blocking if c.status is None]
    for cond in errors:
        if cond.type == R.SPEC_VALID and resolved.problems:
            bundle.problems.extend(line(p) for p in resolved.problems)
        else:
            bundle.problems.append(line(cond))
    bundle.warnings.extend(line(c) for c in resolved.engine_args_findings)
    if resolved.spec.reason == R.PREDICTOR_MIGRATED:
        bundle.warnings.append(Problem("InferenceService", name, "spec.predictor", resolved.spec.message))
    if resolved.ctx is None or resolved.model is None or resolved.selection is None:
        return
    rendered = render_inference_service(resolved.ctx)
    bundle.objects.extend(rendered.objects)
    bundle.services.append(ResolvedIsvc(resolved.isvc, resolved.model, resolved.selection, rendered))
