"""The one resolver: an InferenceService, the models and runtimes it can see -> what to render, or why not.

`ome-operator render`/`plan` pass the objects read from files; the operator passes the objects it
read from the cluster. Both get the same `Resolved`, so the CLI's `error:` lines and the operator's
conditions can never disagree. Pure: no I/O, no clock.

The answer is a set of conditions (api.reasons): SpecValid, ModelReady, RuntimeResolved, and the
advisory EngineArgsValid. `Resolved.renderable` says whether children can be rendered; each
condition that is not True carries the field it is about in `path`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ome_operator.api import BaseModel, ClusterBaseModel, InferenceService, InferenceServiceSpec
from ome_operator.api import reasons as R
from ome_operator.api.model import AnyModel
from ome_operator.api.reasons import Cond
from ome_operator.api.runtime import AnyRuntime

from .checks import check_components, check_declared_env, check_engine_flags
from .context import IsvcContext, ModelRefResolved, Settings
from .isvc import merged_components
from .select import ModelFacts, Selection, candidates_of, resolve_named_runtime, select_runtime

Obj = dict[str, Any]
# OME's PredictorExtensionSpec fields that are not container fields.
_PREDICTOR_MODEL_KEYS = frozenset(
    {"runtime", "baseModel", "fineTunedWeights", "storageUri", "runtimeVersion", "protocolVersion", "modelFormat"}
)


@dataclass
class Resolved:
    isvc: InferenceService  # as served: a deprecated predictor already migrated to engine/model/runtime
    spec: Cond
    model_cond: Cond
    runtime_cond: Cond
    engine_args: Cond | None = None
    engine_args_findings: list[Cond] = field(default_factory=list)  # one per refused flag, for `render`
    model: AnyModel | None = None
    selection: Selection | None = None
    problems: list[Cond] = field(default_factory=list)  # every blocking SpecValid problem, in order
    ctx: IsvcContext | None = None  # set when the children can be rendered

    @property
    def renderable(self) -> bool:
        return self.ctx is not None

    @property
    def conditions(self) -> list[Cond]:
        """The resolver's part of the condition tree, in the order status lists them."""
        parts = [self.spec, self.model_cond, self.runtime_cond]
        return [*parts, self.engine_args] if self.engine_args is not None else parts

    @property
    def declared(self) -> tuple[str, ...]:
        return tuple(c for c in ("engine", "decoder", "router") if getattr(self.isvc.spec, c) is not None)


def resolve_model(isvc: InferenceService, models: list[AnyModel]) -> AnyModel | None:
    """OME's lookup: a BaseModel in the InferenceService's namespace first, then a ClusterBaseModel."""
    ref = isvc.spec.model
    if ref is None:
        return None
    for model in models:
        same_namespace = model.namespace == isvc.namespace
        if (
            isinstance(model, BaseModel)
            and model.name == ref.name
            and same_namespace
            and ref.kind in (None, "BaseModel")
        ):
            return model
    for model in models:
        if isinstance(model, ClusterBaseModel) and model.name == ref.name and ref.kind in (None, "ClusterBaseModel"):
            return model
    return None


def resolve_runtime(isvc: InferenceService, model: AnyModel, runtimes: list[AnyRuntime]) -> Selection:
    facts = ModelFacts.of(model.spec, model.status)
    candidates = candidates_of(runtimes, isvc.namespace or "default")
    if isvc.spec.runtime is not None:
        return resolve_named_runtime(facts, isvc.spec.runtime.name, isvc.spec.runtime.kind, candidates)
    return select_runtime(facts, candidates)


def migrate_predictor(isvc: InferenceService) -> InferenceService | None:
    """OME reads a deprecated `predictor` as engine + model + runtime when no engine is declared."""
    if isvc.spec.engine is not None or isvc.spec.predictor is None:
        return None
    spec = isvc.spec.to_dict()
    predictor: Obj = dict(spec.pop("predictor") or {})
    model_part: Obj = dict(predictor.pop("model", None) or {})
    worker_part: Obj | None = predictor.pop("workerSpec", None)
    runner = {k: v for k, v in model_part.items() if k not in _PREDICTOR_MODEL_KEYS}
    engine: Obj = dict(predictor)
    if runner:
        engine["runner"] = runner
    if worker_part:
        worker = {k: v for k, v in worker_part.items() if k not in ("pipelineParallelSize", "tensorParallelSize")}
        engine["leader"] = {}
        engine["worker"] = worker
    spec["engine"] = engine
    if model_part.get("baseModel") and "model" not in spec:
        spec["model"] = {"name": model_part["baseModel"]}
    if model_part.get("runtime") and "runtime" not in spec:
        spec["runtime"] = {"name": model_part["runtime"]}
    return isvc.model_copy(update={"spec": InferenceServiceSpec.model_validate(spec)})


def compute_model_condition(isvc: InferenceService, model: AnyModel | None) -> Cond:
    if model is None:
        name = isvc.spec.model.name if isvc.spec.model else ""
        return Cond(
            R.MODEL_READY,
            False,
            R.MODEL_NOT_FOUND,
            f"no BaseModel {name} in namespace {isvc.namespace} and no ClusterBaseModel {name}",
            "spec.model.name",
        )
    kind = model.crd.kind
    if model.metadata.deletion_timestamp:
        return Cond(R.MODEL_READY, False, R.MODEL_BEING_DELETED, f"{kind} {model.name} is being deleted", "spec.model")
    if model.spec.disabled:
        return Cond(
            R.MODEL_READY, False, R.MODEL_DISABLED, f"{kind} {model.name} is disabled: set spec.disabled: false"
        )
    status = model.status
    if status is not None and status.state == "Ready":
        return Cond(
            R.MODEL_READY, True, R.MODEL_READY_REASON, f"{kind} {model.name} ready on {status.nodes_summary} nodes"
        )
    detail = ""
    if status is not None:
        downloaded = next((c for c in status.conditions or [] if c.type == R.DOWNLOADED), None)
        detail = (downloaded.message if downloaded else "") or (status.state or "")
    return Cond(
        R.MODEL_READY, False, R.MODEL_NOT_READY, f"{kind} {model.name} is not ready yet: {detail or 'downloading'}"
    )


def compute_runtime_condition(isvc: InferenceService, selection: Selection) -> Cond:
    named = isvc.spec.runtime is not None
    path = "spec.runtime.name" if named else "spec.runtime"
    if selection.runtime is not None:
        return Cond(R.RUNTIME_RESOLVED, True, selection.code, selection.reason)
    status = None if selection.code == R.WAITING_FOR_MODEL_METADATA else False
    detail = "; ".join(f"{c.kind} {c.name}: {why}" for c, why in selection.excluded)
    return Cond(R.RUNTIME_RESOLVED, status, selection.code, selection.reason + (f" ({detail})" if detail else ""), path)


def compute_structure_problems(isvc: InferenceService) -> list[Cond]:
    spec = isvc.spec
    if spec.engine is None and spec.decoder is None and spec.router is None:
        return [
            Cond(
                R.SPEC_VALID,
                False,
                R.NO_COMPONENT,
                "declares no component: set engine (and optionally decoder and router)",
                "spec.engine",
            )
        ]
    problems = []
    for name in ("decoder", "router"):
        if getattr(spec, name) is not None and spec.engine is None:
            problems.append(Cond(R.SPEC_VALID, False, R.INVALID_SPEC, f"a {name} requires an engine", f"spec.{name}"))
    if spec.model is None or not spec.model.name:
        problems.append(Cond(R.SPEC_VALID, False, R.INVALID_SPEC, "names no model", "spec.model.name"))
    return problems


def resolve(isvc: InferenceService, models: list[AnyModel], runtimes: list[AnyRuntime], settings: Settings) -> Resolved:
    """Everything an InferenceService's children depend on, with a condition for each part."""
    migrated = migrate_predictor(isvc)
    if migrated is not None:
        isvc = migrated
        spec_ok = Cond(
            R.SPEC_VALID,
            True,
            R.PREDICTOR_MIGRATED,
            "spec.predictor is deprecated; it is served as spec.engine, spec.model and spec.runtime",
        )
    else:
        spec_ok = Cond(R.SPEC_VALID, True, R.SPEC_ACCEPTED, "the spec passed every check")
    waiting_model = Cond(R.MODEL_READY, None, R.WAITING_FOR_MODEL, "the spec must be valid first")
    waiting_runtime = Cond(
        R.RUNTIME_RESOLVED, None, R.WAITING_FOR_MODEL, "the model must exist before a runtime is chosen"
    )

    problems = compute_structure_problems(isvc)
    if problems:
        return Resolved(isvc, _joined(problems), waiting_model, waiting_runtime, problems=problems)

    model = resolve_model(isvc, models)
    model_cond = compute_model_condition(isvc, model)
    if model is None or model_cond.reason in (R.MODEL_DISABLED, R.MODEL_BEING_DELETED, R.MODEL_NOT_FOUND):
        return Resolved(isvc, spec_ok, model_cond, waiting_runtime, model=model)

    selection = resolve_runtime(isvc, model, runtimes)
    runtime_cond = compute_runtime_condition(isvc, selection)
    resolved = Resolved(isvc, spec_ok, model_cond, runtime_cond, model=model, selection=selection)
    runtime = selection.runtime
    if runtime is None:
        return resolved

    ctx = IsvcContext(isvc, runtime, ModelRefResolved.of(model, settings), settings)
    components = merged_components(ctx)
    problems = check_declared_env(isvc.spec.to_dict())
    problems += check_components(components, runtime.name, runtime.spec.decoder_config is not None)
    resolved.engine_args, resolved.engine_args_findings = check_engine_flags(components)
    if problems:
        resolved.spec = _joined(problems)
        resolved.problems = problems
        return resolved
    resolved.ctx = ctx
    return resolved


def _joined(problems: list[Cond]) -> Cond:
    """One SpecValid condition for several problems: the first one's reason, every field named."""
    if len(problems) == 1:
        return problems[0]
    first = problems[0]
    message = "; ".join(f"{p.path}: {p.message}" if i else p.message for i, p in enumerate(problems))
    return Cond(first.type, False, first.reason, message, first.path)
