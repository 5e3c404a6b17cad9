"""Reconcile one InferenceService: resolve -> render -> apply + prune -> observe -> status.

Idempotent and level-triggered: every decision is recomputed from the cluster each pass, so a
restart at any point converges. Expected waits (model downloading, pods pending) are conditions,
not exceptions.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pydantic

from ome_operator.api import BaseModel, ClusterBaseModel, InferenceService
from ome_operator.api.model import AnyModel
from ome_operator.api.runtime import AnyRuntime, ClusterServingRuntime, ServingRuntime
from ome_operator.kube.client import ApiException, Kube
from ome_operator.kube.resources import ISVC_CHILD_KINDS
from ome_operator.render import names
from ome_operator.render.bundle import resolve_runtime_for
from ome_operator.render.context import IsvcContext, ModelRefResolved, Settings
from ome_operator.render.isvc import render_inference_service
from ome_operator.status.conditions import Cond, find
from ome_operator.status.isvc import ComponentObservation, IsvcFacts, compute_isvc_status

from .children import apply_children, list_children
from .events import record_event
from .groups import restart_failed_groups
from .observe import index_workloads, observe_component, observe_router

log = logging.getLogger(__name__)
Obj = dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """What a pass found: the Ready status and the model and runtime it used (for indexes and metrics)."""

    ready: str
    model: str | None = None
    runtime: str | None = None


def fetch_model(kube: Kube, isvc: InferenceService) -> AnyModel | None:
    ref = isvc.spec.model
    if ref is None:
        return None
    if ref.kind in (None, "BaseModel"):
        raw = kube.get("BaseModel", ref.name, isvc.namespace)
        if raw is not None:
            return BaseModel.model_validate(raw)
    if ref.kind in (None, "ClusterBaseModel"):
        raw = kube.get("ClusterBaseModel", ref.name)
        if raw is not None:
            return ClusterBaseModel.model_validate(raw)
    return None


def fetch_runtimes(kube: Kube, namespace: str) -> list[AnyRuntime]:
    runtimes: list[AnyRuntime] = []
    for raw in kube.list("ServingRuntime", namespace):
        runtimes.append(ServingRuntime.model_validate(raw))
    for raw in kube.list("ClusterServingRuntime"):
        runtimes.append(ClusterServingRuntime.model_validate(raw))
    return runtimes


def compute_model_condition(isvc: InferenceService, model: AnyModel | None) -> Cond:
    if model is None:
        name = isvc.spec.model.name if isvc.spec.model else "<none>"
        return Cond(
            "ModelReady",
            False,
            "ModelNotFound",
            f"spec.model.name: no BaseModel {name} in namespace {isvc.namespace} and no ClusterBaseModel {name}",
        )
    kind = model.crd.kind
    if model.metadata.deletion_timestamp:
        return Cond("ModelReady", False, "ModelBeingDeleted", f"{kind} {model.name} is being deleted")
    if model.spec.disabled:
        return Cond("ModelReady", False, "ModelDisabled", f"{kind} {model.name} is disabled: set spec.disabled: false")
    status = model.status
    if status is not None and status.state == "Ready":
        return Cond("ModelReady", True, "ModelReady", f"{kind} {model.name} ready on {status.nodes_summary} nodes")
    detail = ""
    if status is not None:
        downloaded = find([c.to_dict() for c in status.conditions or []], "Downloaded")
        detail = (downloaded or {}).get("message", "") or (status.state or "")
    return Cond(
        "ModelReady", False, "ModelNotReady", f"{kind} {model.name} is not ready yet: {detail or 'downloading'}"
    )


def _runtime_reason(text: str) -> str:
    if "not found" in text:
        return "RuntimeNotFound"
    if "waiting" in text:
        return "WaitingForModelMetadata"
    if "cannot serve" in text or "disabled" in text:
        return "RuntimeIncompatible"
    return "NoRuntimeFound"


def reconcile_inference_service(
    kube: Kube, namespace: str, name: str, settings: Settings, now: Callable[[], str]
) -> Outcome | None:
    raw = kube.get("InferenceService", name, namespace)
    if raw is None or raw["metadata"].get("deletionTimestamp"):
        return None  # children go with it: every child has a controller ownerReference
    previous_status = raw.get("status") or {}
    try:
        isvc = InferenceService.model_validate(raw)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        facts = IsvcFacts(
            generation=raw["metadata"].get("generation"),
            model=Cond("ModelReady", None, "InvalidSpec", ""),
            runtime=Cond("RuntimeResolved", False, "InvalidSpec", f"{where}: {first['msg']}"),
            runtime_name=None,
        )
        write_status(kube, raw, compute_isvc_status(facts, previous_status, now()))
        return Outcome("False")

    model = fetch_model(kube, isvc)
    model_cond = compute_model_condition(isvc, model)
    runtime = None
    exclusions: list[Obj] = []
    if model is None:
        runtime_cond = Cond(
            "RuntimeResolved", None, "WaitingForModel", "the model must exist before a runtime is chosen"
        )
    else:
        selection = resolve_runtime_for(isvc, model, fetch_runtimes(kube, namespace))
        exclusions = [{"name": c.name, "kind": c.kind, "reason": why} for c, why in selection.excluded]
        runtime = selection.runtime
        if runtime is None:
            path = "spec.runtime.name: " if isvc.spec.runtime else ""
            runtime_cond = Cond("RuntimeResolved", False, _runtime_reason(selection.reason), path + selection.reason)
        elif selection.provisional:
            runtime_cond = Cond("RuntimeResolved", True, "ProvisionallyAccepted", selection.reason)
        else:
            reason = "RuntimeNamed" if isvc.spec.runtime else "RuntimeAutoSelected"
            runtime_cond = Cond("RuntimeResolved", True, reason, selection.reason)

    declared = tuple(c for c in ("engine", "decoder", "router") if getattr(isvc.spec, c) is not None)
    components: dict[str, ComponentObservation] = {}
    url = None
    apply_error = ""
    if model is not None and runtime is not None:
        ctx = IsvcContext(isvc, runtime, ModelRefResolved.of(model, settings), settings)
        rendered = render_inference_service(ctx)
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
        if "router" in declared:
            components["router"] = observe_router(live)

    facts = IsvcFacts(
        generation=isvc.metadata.generation,
        model=model_cond,
        runtime=runtime_cond,
        runtime_name=runtime.name if runtime is not None else None,
        exclusions=exclusions,
        components=components,
        declared=declared,
        url=url,
        apply_error=apply_error,
    )
    status = compute_isvc_status(facts, previous_status, now())
    write_status(kube, raw, status)
    ready = (find(status["conditions"], "Ready") or {}).get("status", "Unknown")
    was = (find(previous_status.get("conditions"), "Ready") or {}).get("status")
    if ready != was:
        cond = find(status["conditions"], "Ready") or {}
        record_event(
            kube,
            raw,
            "Normal" if ready == "True" else "Warning",
            "InferenceServiceReady" if ready == "True" else "InferenceServiceNotReady",
            f"Ready={ready}: {cond.get('reason')}: {cond.get('message')}",
        )
    return Outcome(ready, model.name if model else None, runtime.name if runtime else None)


def describe_api_error(exc: ApiException) -> str:
    """The API server's own message (it names the field), without the HTTP noise."""
    try:
        body = json.loads(exc.body or "{}")
        return str(body.get("message") or exc.reason)
    except (ValueError, TypeError):
        return str(exc.reason)


def write_status(kube: Kube, raw: Obj, status: Obj) -> None:
    """One status write per pass, and none when nothing changed."""
    if raw.get("status") == status:
        return
    meta = raw["metadata"]
    kube.merge_patch(raw["kind"], meta["name"], meta.get("namespace"), {"status": status}, subresource="status")
