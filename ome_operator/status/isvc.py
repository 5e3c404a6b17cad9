"""An InferenceService's status from what was resolved and observed. Pure: no I/O, the clock passed in.

Ready aggregates ModelReady, RuntimeResolved and one condition per declared component
(EngineReady, DecoderReady, RouterReady): unlike OME, a pending decoder or router keeps Ready False.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .conditions import Cond, compute_ready, merge_conditions

Obj = dict[str, Any]
COMPONENT_CONDITIONS = {"engine": "EngineReady", "decoder": "DecoderReady", "router": "RouterReady"}


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
    model: Cond
    runtime: Cond
    runtime_name: str | None
    exclusions: list[Obj] = field(default_factory=list)
    components: dict[str, ComponentObservation] = field(default_factory=dict)
    declared: tuple[str, ...] = ()
    url: str | None = None
    apply_error: str = ""


def compute_component_condition(name: str, obs: ComponentObservation | None) -> Cond:
    type_ = COMPONENT_CONDITIONS[name]
    if obs is None:
        return Cond(type_, False, "NotCreated", f"the {name} has not been created yet")
    if obs.failure_message:
        return Cond(type_, False, "GroupRestarting", obs.failure_message)
    if obs.groups and obs.groups_ready >= obs.groups:
        if obs.pods == obs.groups:
            return Cond(type_, True, "Ready", f"{obs.pods_ready}/{obs.pods} pods ready")
        return Cond(type_, True, "Ready", f"{obs.groups_ready}/{obs.groups} groups ready ({obs.pods_ready} pods)")
    if obs.pending_message:
        return Cond(
            type_,
            False,
            "Unschedulable",
            f"{obs.pods_ready}/{obs.pods} pods ready; pending pods cannot be scheduled: {obs.pending_message}",
        )
    return Cond(type_, False, "PodsNotReady", f"{obs.pods_ready}/{obs.pods} pods ready")


def compute_isvc_status(facts: IsvcFacts, previous: Obj | None, now: str) -> Obj:
    parts = [facts.model, facts.runtime]
    if facts.apply_error:
        parts.append(Cond("ChildrenApplied", False, "ApplyFailed", facts.apply_error))
    for name in facts.declared:
        parts.append(compute_component_condition(name, facts.components.get(name)))
    ready = compute_ready(parts, f"serving at {facts.url}" if facts.url else "ready")
    status: Obj = {
        "observedGeneration": facts.generation,
        "conditions": merge_conditions((previous or {}).get("conditions"), [ready, *parts], now, facts.generation),
    }
    if facts.url:
        status["url"] = facts.url
        status["address"] = {"url": facts.url}
    if facts.runtime_name:
        status["runtime"] = facts.runtime_name
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
    status["components"] = components
    status["gpus"] = sum(c.gpus for c in facts.components.values())
    return {k: v for k, v in status.items() if v is not None}
