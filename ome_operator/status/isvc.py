"""An InferenceService's status from what was resolved and observed. Pure: no I/O, the clock passed in.

Ready aggregates SpecValid, ModelReady, RuntimeResolved, ChildrenApplied and one condition per
declared component (EngineReady, DecoderReady, RouterReady): unlike OME, a pending decoder or router
keeps Ready False. Advisory conditions (EngineArgsValid) are reported beside it and never gate it.
The result is the whole status, validated by the API model: a key that no longer applies is absent,
and the caller replaces `/status` with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ome_operator.api import InferenceServiceStatus
from ome_operator.api import reasons as R

from .conditions import Cond, compute_ready, merge_conditions

Obj = dict[str, Any]
COMPONENT_CONDITIONS = R.COMPONENT_CONDITIONS


@dataclass(frozen=True)
class ComponentObservation:
    """What the cluster says about one component's workloads and pods."""

    name: str
    groups: int
    groups_ready: int
    pods: int
    pods_ready: int
    gpus: int
    pending_message: str = ""  # e.g. the scheduler's "0/16 nodes are available: 16 Insufficient nvidia.com/gpu"
    failure_message: str = ""
    url: str = ""


@dataclass(frozen=True)
class IsvcFacts:
    """Everything the status is computed from."""

    generation: int | None
    resolved: list[Cond]  # the resolver's conditions: SpecValid, ModelReady, RuntimeResolved[, EngineArgsValid]
    runtime_name: str | None = None
    exclusions: list[Obj] = field(default_factory=list)
    components: dict[str, ComponentObservation] = field(default_factory=dict)
    declared: tuple[str, ...] = ()
    url: str | None = None
    applied: bool = False  # children were rendered and sent this pass
    apply_error: str = ""
    apply_reason: str = R.APPLY_FAILED
    apply_path: str = ""  # the field a refusal names
    applying: str = ""  # a pass stopped at its write budget: what is left (ChildrenApplied=False Applying)


def compute_component_condition(name: str, obs: ComponentObservation | None) -> Cond:
    type_ = COMPONENT_CONDITIONS[name]
    if obs is None:
        return Cond(type_, False, R.NOT_CREATED, f"the {name} has not been created yet")
    if obs.failure_message:
        return Cond(type_, False, R.GROUP_RESTARTING, obs.failure_message)
    if obs.groups and obs.groups_ready >= obs.groups:
        if obs.pods == obs.groups:
            return Cond(type_, True, R.COMPONENT_READY, f"{obs.pods_ready}/{obs.pods} pods ready")
        return Cond(
            type_, True, R.COMPONENT_READY, f"{obs.groups_ready}/{obs.groups} groups ready ({obs.pods_ready} pods)"
        )
    if obs.pending_message:
        return Cond(
            type_,
            False,
            R.UNSCHEDULABLE,
            f"{obs.pods_ready}/{obs.pods} pods ready; pending pods cannot be scheduled: {obs.pending_message}",
        )
    return Cond(type_, False, R.PODS_NOT_READY, f"{obs.pods_ready}/{obs.pods} pods ready")


def compute_isvc_conditions(facts: IsvcFacts) -> list[Cond]:
    """Ready first, then its parts, then the advisory conditions."""
    parts = [c for c in facts.resolved if c.type not in R.ADVISORY_CONDITIONS]
    advisory = [c for c in facts.resolved if c.type in R.ADVISORY_CONDITIONS]
    if facts.apply_error:
        parts.append(Cond(R.CHILDREN_APPLIED, False, facts.apply_reason, facts.apply_error, facts.apply_path))
    elif facts.applying:
        parts.append(Cond(R.CHILDREN_APPLIED, False, R.APPLYING, facts.applying))
    elif facts.applied:
        parts.append(Cond(R.CHILDREN_APPLIED, True, R.APPLIED, "every child object is applied"))
    if facts.applied or facts.apply_error:
        for name in facts.declared:
            parts.append(compute_component_condition(name, facts.components.get(name)))
    ready = compute_ready(parts, f"serving at {facts.url}" if facts.url else "ready")
    return [ready, *parts, *advisory]


def compute_isvc_status(facts: IsvcFacts, previous: Obj | None, now: str) -> Obj:
    conditions = merge_conditions(
        (previous or {}).get("conditions"), compute_isvc_conditions(facts), now, facts.generation
    )
    status: Obj = {"observedGeneration": facts.generation, "conditions": conditions}
    if facts.url and facts.applied:
        status["url"] = facts.url
        status["address"] = {"url": facts.url}
    if facts.runtime_name:
        status["runtime"] = facts.runtime_name
    if facts.exclusions:
        status["runtimeExclusions"] = facts.exclusions
    components: Obj = {}
    for name in facts.declared:
        obs = facts.components.get(name)
        if obs is None:
            continue
        entry: Obj = {
            "groups": obs.groups,
            "groupsReady": obs.groups_ready,
            "pods": obs.pods,
            "podsReady": obs.pods_ready,
            "gpus": obs.gpus,
        }
        if facts.runtime_name:
            entry["runtime"] = facts.runtime_name
        if obs.url:
            entry["url"] = obs.url
        components[name] = entry
    if components:
        status["components"] = components
        status["gpus"] = sum(c.gpus for c in facts.components.values())
    return normalized_status(InferenceServiceStatus, status)


def normalized_status(model: type[InferenceServiceStatus] | Any, status: Obj) -> Obj:
    """The status through its API model: a typo'd or undeclared key fails here, not at the API server."""
    validated = model.model_validate(status)
    result: Obj = validated.model_dump(mode="json", by_alias=True, exclude_none=True)
    return result
