"""Reconcile one InferenceService: read -> resolve -> render -> apply + prune -> observe -> status.

Idempotent and level-triggered: every decision is recomputed from the cluster each pass, so a
restart at any point converges. Expected waits (model downloading, pods pending) are conditions,
not exceptions. The resolver is the one `render` uses, so the CLI and the operator agree.
"""

from __future__ import annotations

import dataclasses
import logging
import time
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
from ome_operator.kube.errors import classify, is_transient
from ome_operator.kube.resources import ISVC_CHILD_KINDS
from ome_operator.render import names
from ome_operator.render.context import Settings
from ome_operator.render.isvc import render_inference_service
from ome_operator.render.resolve import compute_structure_problems, migrate_predictor, resolve
from ome_operator.status.conditions import find
from ome_operator.status.isvc import ComponentObservation, IsvcFacts, compute_isvc_status

from .budget import MoreWork
from .children import (
    apply_children,
    compute_hash,
    group_key,
    list_children,
    template_revision,
    with_group_revisions,
)
from .events import record_event
from .groups import GroupState, compute_recheck, restart_failed_groups
from .observe import index_workloads, observe_component, observe_router
from .refusals import BOOK, fingerprint_of
from .status import FieldError, describe_exception, describe_validation_error, write_status

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
    """One pass. Transient API trouble raises (the queue backs off); anything that would fail the same
    way again becomes ChildrenApplied=False ReconcileFailed on the object, retried slowly."""
    for attempt in range(STATUS_ATTEMPTS):
        # The first pass reads the cache; after a lost race the cached copy is the stale one, so
        # the retry reads the API server (which also refreshes the cache).
        raw = kube.get("InferenceService", name, namespace, fresh=attempt > 0)
        if raw is None or raw["metadata"].get("deletionTimestamp"):
            BOOK.clear(("InferenceService", namespace, name))
            BOOK.clear(("InferenceService", namespace, name, "crash"))
            return None  # children go with it: every child has a controller ownerReference
        crash_key = ("InferenceService", namespace, name, "crash")
        crash_print = fingerprint_of(raw["metadata"].get("uid"), raw["metadata"].get("generation"), raw.get("spec"))
        if BOOK.blocked(crash_key, crash_print) is not None:
            return Outcome("False")  # the same input failed: wait out the backoff (no writes)
        try:
            outcome = reconcile_once(kube, raw, settings, now)
        except Exception as exc:
            if is_transient(exc):
                raise
            return report_failure(kube, raw, exc, crash_key, crash_print, now)
        BOOK.clear(crash_key)
        if outcome is not None:
            return outcome
    raise RuntimeError(f"InferenceService {namespace}/{name}: status kept changing under us; retrying later")


class StatusRefused(Exception):
    """The API server refuses to store any status for the object (e.g. it is too big for etcd)."""

    def __init__(self, status: Obj, exc: ApiException) -> None:
        ready = find(status.get("conditions"), R.READY) or {}
        super().__init__(
            f"its status cannot be stored ({classify(exc).message}); it would say: "
            f"Ready={ready.get('status')} {ready.get('reason')}: {ready.get('message')}"
        )


def write_status_or_say_why(kube: Kube, raw: Obj, status: Obj) -> bool:
    try:
        return write_status(kube, raw, status)
    except ApiException as exc:
        if is_transient(exc):
            raise
        raise StatusRefused(status, exc) from exc


def report_failure(
    kube: Kube, raw: Obj, exc: Exception, key: tuple[str, ...], print_: str, now: Callable[[], str]
) -> Outcome:
    """An exception as a condition and a Warning Event (once per input), never a silent retry loop."""
    namespace, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
    path, message = ("", str(exc)) if isinstance(exc, StatusRefused) else describe_exception(exc)
    cond = Cond(R.CHILDREN_APPLIED, False, R.RECONCILE_FAILED, message[:2000], path)
    news = BOOK.record(key, print_, cond)
    if news:
        log.error(
            "InferenceService %s/%s: %s",
            namespace,
            name,
            message,
            exc_info=None if isinstance(exc, ApiException | StatusRefused | FieldError) else exc,
        )
        record_event(kube, raw, "Warning", R.RECONCILE_FAILED, message)
    if isinstance(exc, StatusRefused):
        return Outcome("False")  # the Event is all the API server lets us say
    facts = IsvcFacts(generation=raw["metadata"].get("generation"), resolved=[cond])
    try:
        write_status(kube, raw, compute_isvc_status(facts, raw.get("status") or {}, now()))
    except Exception as status_exc:  # the status itself may be what cannot be written
        if is_transient(status_exc):
            raise
        log.error("InferenceService %s/%s: status not written: %s", namespace, name, status_exc)
    return Outcome("False")


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
        if not write_status_or_say_why(kube, raw, compute_isvc_status(facts, previous_status, now())):
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
    applying = ""
    recheck: float | None = None
    if resolved.ctx is not None:
        rendered = render_inference_service(resolved.ctx)
        url = rendered.url
        selector = f"{names.LABEL_ISVC}={name}"
        existing = list_children(kube, ISVC_CHILD_KINDS, namespace, selector)
        desired, revisions = with_group_revisions(rendered.objects)
        key = ("InferenceService", namespace, name)
        print_ = fingerprint_of(isvc.metadata.uid, isvc.metadata.generation, [compute_hash(o) for o in desired])
        refused = BOOK.blocked(key, print_)
        result = None
        live = existing
        if refused is not None:
            apply_error = refused.message  # unchanged input, refused before: no write until the backoff ends
        else:
            try:
                result = apply_children(kube, desired, existing, isvc.metadata.uid or "", still_current(kube, raw))
                if result.applied or result.pruned:
                    log.info(
                        "applied %d pruned %d (%d left)",
                        len(result.applied),
                        len(result.pruned),
                        result.remaining,
                        extra={"isvc": f"{namespace}/{name}"},
                    )
                live = list(result.live.values())
                BOOK.clear(key)
            except ApiException as exc:
                refusal = classify(exc)
                if not refusal.permanent:
                    raise  # transient: the work queue retries with backoff
                apply_error = refusal.message
                cond = Cond(R.CHILDREN_APPLIED, False, R.APPLY_FAILED, apply_error)
                if BOOK.record(key, print_, cond):
                    log.warning("InferenceService %s/%s: refused: %s", namespace, name, apply_error)
                    record_event(kube, raw, "Warning", R.APPLY_FAILED, apply_error)
        if result is not None and result.stopped:
            return Outcome("False")  # deleted or changed mid-pass: the new state gets its own pass
        pods = kube.list("Pod", namespace, selector)
        state = GroupState(
            nodes={n["metadata"]["name"]: n for n in kube.list("Node")},
            revisions=compute_applied_revisions(live, revisions),
            now=time.time(),
        )
        restarting = restart_failed_groups(kube, raw, pods, state) if result is None or result.complete else {}
        recheck = compute_recheck(pods, state)
        if result is not None and not result.complete:
            applying = f"{result.remaining} of {result.changed} child writes still to send; continuing"
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
        applying=applying,
    )
    status = compute_isvc_status(facts, previous_status, now())
    if not write_status_or_say_why(kube, raw, status):
        return None
    record_transitions(kube, raw, previous_status, status)
    if applying:
        raise MoreWork()  # progress is in status; the rest runs after every other object that is due
    if recheck is not None:
        raise MoreWork(recheck)  # a node of a group is NotReady: look again when its grace is over
    model = resolved.model
    return Outcome(
        (find(status["conditions"], R.READY) or {}).get("status", "Unknown"),
        model.name if model else None,
        runtime.name if runtime else None,
    )


def still_current(kube: Kube, raw: Obj) -> Callable[[], bool]:
    """Whether the object a pass started from is still there, unchanged and not being deleted.

    Read from the cache, which the watch updates within milliseconds of the change."""
    meta = raw["metadata"]

    def check() -> bool:
        now_raw = kube.get("InferenceService", meta["name"], meta["namespace"])
        if now_raw is None:
            return False
        now_meta = now_raw["metadata"]
        return (
            now_meta.get("uid") == meta.get("uid")
            and now_meta.get("generation") == meta.get("generation")
            and not now_meta.get("deletionTimestamp")
        )

    return check


def compute_applied_revisions(live: list[Obj], revisions: dict[tuple[str, str], str]) -> dict[tuple[str, str], str]:
    """Groups whose StatefulSets all carry the revision we render: only those may be rolled, so a pass
    cut short between a group's leader and workers never recreates the group twice."""
    carried: dict[tuple[str, str], set[str | None]] = {}
    for obj in live:
        key = group_key(obj)
        if key is not None:
            carried.setdefault(key, set()).add(template_revision(obj))
    return {key: rev for key, rev in revisions.items() if carried.get(key) == {rev}}


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
