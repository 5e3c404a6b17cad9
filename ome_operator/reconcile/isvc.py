"""Reconcile one InferenceService: read -> resolve -> render -> apply + prune -> observe -> status.

Idempotent and level-triggered: every decision is recomputed from the cluster each pass, so a
restart at any point converges. Expected waits (model downloading, pods pending) are conditions,
not exceptions. The resolver is the one `render` uses, so the CLI and the operator agree.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pydantic

from ome_operator.api import BaseModel, ClusterBaseModel, InferenceService
from ome_operator.api import reasons as R
from ome_operator.api.model import AnyModel
from ome_operator.api.reasons import Cond
from ome_operator.api.runtime import AnyRuntime, ClusterServingRuntime, ServingRuntime
from ome_operator.kube.client import ApiException, Kube
from ome_operator.kube.resources import ISVC_CHILD_KINDS
from ome_operator.render import names
from ome_operator.render.context import Settings
from ome_operator.render.isvc import render_inference_service
from ome_operator.render.resolve import compute_structure_problems, migrate_predictor, resolve
from ome_operator.status.conditions import find
from ome_operator.status.isvc import ComponentObservation, IsvcFacts, compute_isvc_status

from .children import apply_children, list_children
from .events import record_event
from .groups import restart_failed_groups
from .observe import index_workloads, observe_component, observe_router
from .status import describe_api_error, describe_validation_error, write_status

log = logging.getLogger(__name__)
Obj = dict[str, Any]
# A status write that lost a race with another writer is recomputed from a fresh read this often.
STATUS_ATTEMPTS = 3


@dataclass(frozen=True)
class Outcome:
    """What a pass found: the Ready status and the model and runtime it used (for indexes and metrics)."""

    ready: str
    model: str | None = None
    runtime: str | None = None


def fetch_models(kube: Kube, isvc: InferenceService) -> list[AnyModel]:
    """The models the reference may mean: a BaseModel of the namespace and a ClusterBaseModel."""
    ref = isvc.spec.model
    if ref is None or not ref.name:
        return []
    found: list[AnyModel] = []
    if ref.kind in (None, "BaseModel"):
        raw = kube.get("BaseModel", ref.name, isvc.namespace)
        if raw is not None:
            found.append(BaseModel.model_validate(raw))
    if ref.kind in (None, "ClusterBaseModel"):
        raw = kube.get("ClusterBaseModel", ref.name)
        if raw is not None:
            found.append(ClusterBaseModel.model_validate(raw))
    return found


def fetch_runtimes(kube: Kube, namespace: str) -> list[AnyRuntime]:
    runtimes: list[AnyRuntime] = []
    for raw in kube.list("ServingRuntime", namespace):
        runtimes.append(ServingRuntime.model_validate(raw))
    for raw in kube.list("ClusterServingRuntime"):
        runtimes.append(ClusterServingRuntime.model_validate(raw))
    return runtimes


def reconcile_inference_service(
    kube: Kube, namespace: str, name: str, settings: Settings, now: Callable[[], str]
) -> Outcome | None:
    for attempt in range(STATUS_ATTEMPTS):
        # The first pass reads the cache; after a lost race the cached copy is the stale one, so
        # the retry reads the API server (which also refreshes the cache).
        raw = kube.get("InferenceService", name, namespace, fresh=attempt > 0)
        if raw is None or raw["metadata"].get("deletionTimestamp"):
            return None  # children go with it: every child has a controller ownerReference
        outcome = reconcile_once(kube, raw, settings, now)
        if outcome is not None:
            return outcome
    raise RuntimeError(f"InferenceService {namespace}/{name}: status kept changing under us; retrying later")


def reconcile_once(kube: Kube, raw: Obj, settings: Settings, now: Callable[[], str]) -> Outcome | None:
    """One pass; None when the status write lost a race and the pass must be recomputed."""
    namespace, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
    previous_status = raw.get("status") or {}
    try:
        isvc = InferenceService.model_validate(raw)
    except pydantic.ValidationError as exc:
        path, message = describe_validation_error(exc)
        facts = IsvcFacts(
            generation=raw["metadata"].get("generation"),
            resolved=[Cond(R.SPEC_VALID, False, R.INVALID_SPEC, message, path)],
        )
        if not write_status(kube, raw, compute_isvc_status(facts, previous_status, now())):
            return None
        return Outcome("False")

    # A spec that fails on its own needs no reads: resolve() stops before it looks at models or runtimes.
    if compute_structure_problems(migrate_predictor(isvc) or isvc):
        models: list[AnyModel] = []
        runtimes: list[AnyRuntime] = []
    else:
        models, runtimes = fetch_models(kube, isvc), fetch_runtimes(kube, namespace)
    resolved = resolve(isvc, models, runtimes, settings)
    selection = resolved.selection
    runtime = selection.runtime if selection is not None else None
    exclusions = [
        {"name": c.name, "kind": c.kind, "reason": why} for c, why in (selection.excluded if selection else [])
    ]
    components: dict[str, ComponentObservation] = {}
    url = None
    apply_error = ""
    if resolved.ctx is not None:
        rendered = render_inference_service(resolved.ctx)
        url = rendered.url
        selector = f"{names.LABEL_ISVC}={name}"
        existing = list_children(kube, ISVC_CHILD_KINDS, namespace, selector)
        try:
            result = apply_children(kube, rendered.objects, existing, isvc.metadata.uid or "")
            if result.applied or result.pruned:
                log.info("applied %s pruned %s", result.applied, result.pruned, extra={"isvc": f"{namespace}/{name}"})
            live = list(result.live.values())
        except ApiException as exc:
            if exc.status is None or not 400 <= exc.status < 500:
                raise  # transient: the work queue retries with backoff
            apply_error = describe_api_error(exc)
            live = existing
        pods = kube.list("Pod", namespace, selector)
        restarting = restart_failed_groups(kube, raw, pods)
        for shape in rendered.shapes:
            obs = observe_component(shape, index_workloads(live, shape.component), pods)
            if shape.component in restarting:
                obs = dataclasses.replace(obs, failure_message=restarting[shape.component])
            components[shape.component] = obs
        if "router" in resolved.declared:
            components["router"] = observe_router(live)

    facts = IsvcFacts(
        generation=isvc.metadata.generation,
        resolved=resolved.conditions,
        runtime_name=runtime.name if runtime is not None else None,
        exclusions=exclusions,
        components=components,
        declared=resolved.declared,
        url=url,
        applied=resolved.ctx is not None and not apply_error,
        apply_error=apply_error,
    )
    status = compute_isvc_status(facts, previous_status, now())
    if not write_status(kube, raw, status):
        return None
    record_transitions(kube, raw, previous_status, status)
    model = resolved.model
    return Outcome(
        (find(status["conditions"], R.READY) or {}).get("status", "Unknown"),
        model.name if model else None,
        runtime.name if runtime else None,
    )


def record_transitions(kube: Kube, raw: Obj, previous: Obj, status: Obj) -> None:
    """A Ready transition, and a newly refused SGLang flag, become Events."""
    ready = find(status["conditions"], R.READY) or {}
    was = find(previous.get("conditions"), R.READY) or {}
    ok = ready.get("status") == "True"
    # A service that was just created is not Ready yet: that is no news, only becoming Ready is.
    if ready.get("status") != was.get("status") and (was or ok):
        record_event(
            kube,
            raw,
            "Normal" if ok else "Warning",
            "InferenceServiceReady" if ok else "InferenceServiceNotReady",
            f"Ready={ready.get('status')}: {ready.get('reason')}: {ready.get('message')}",
        )
    args = find(status["conditions"], R.ENGINE_ARGS_VALID) or {}
    args_before = find(previous.get("conditions"), R.ENGINE_ARGS_VALID) or {}
    if args.get("status") == "False" and args.get("message") != args_before.get("message"):
        record_event(kube, raw, "Warning", R.ENGINE_ARGS_REFUSED, str(args.get("message")))
