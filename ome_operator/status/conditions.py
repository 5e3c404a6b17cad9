"""Conditions shaped like metav1.Condition, and how Ready aggregates them. Pure: the clock is passed in."""

from __future__ import annotations

from typing import Any

from ome_operator.api.reasons import READY, Cond

Obj = dict[str, Any]
__all__ = ["Cond", "compute_ready", "find", "merge_conditions"]


def merge_conditions(previous: list[Obj] | None, current: list[Cond], now: str, generation: int | None) -> list[Obj]:
    """The new conditions list: lastTransitionTime kept when a condition's status did not change."""
    before = {c.get("type"): c for c in previous or []}
    result = []
    for cond in current:
        old = before.get(cond.type)
        since = old.get("lastTransitionTime") if old and old.get("status") == cond.status_text else None
        entry: Obj = {
            "type": cond.type,
            "status": cond.status_text,
            "reason": cond.reason,
            "message": cond_message(cond),
            "lastTransitionTime": since or now,
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        result.append(entry)
    return result


def cond_message(cond: Cond) -> str:
    """The message as written to status: it starts with the field it is about."""
    return f"{cond.path}: {cond.message}" if cond.path else cond.message


def compute_ready(parts: list[Cond], ready_message: str) -> Cond:
    """Ready is True only when every part is True; otherwise it carries the first part that is not."""
    for part in parts:
        if part.status is not True:
            return Cond(
                READY, False if part.status is False else None, part.reason, f"{part.type}: {cond_message(part)}"
            )
    return Cond(READY, True, READY, ready_message)


def find(conditions: list[Obj] | None, type_: str) -> Obj | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)
