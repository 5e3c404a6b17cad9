"""Server-side apply of rendered children, only when they differ from the cluster, and prune.

At steady state nothing is written: a child is applied only when the hash of what we render changed
(recorded in an annotation) or when the live object no longer carries every field we render
(someone edited or deleted it). Prune deletes only objects this owner controls. What must be
applied goes in three concurrent waves: identities, Roles, config and Services; RoleBindings; then
the workloads whose pods use them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ome_operator.kube.client import Kube

Obj = dict[str, Any]
HASH_ANNOTATION = "ome.io/rendered-hash"
# Apply order: a RoleBinding is refused (escalation check) until its Role exists, and a workload's
# pods until their ServiceAccount does; within a wave nothing depends on anything else.
WAVE_OF = {"RoleBinding": 1, "StatefulSet": 2, "Deployment": 2, "Job": 2}


def compute_hash(obj: Obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def with_hash(obj: Obj) -> Obj:
    annotations = {**(obj["metadata"].get("annotations") or {}), HASH_ANNOTATION: compute_hash(obj)}
    return {**obj, "metadata": {**obj["metadata"], "annotations": annotations}}


def _scalar_equal(want: Any, have: Any) -> bool:
    # The API server normalizes quantities and int-or-string values: 8 comes back as "8".
    if isinstance(want, bool) or isinstance(have, bool):
        return want is have
    if isinstance(want, int | float | str) and isinstance(have, int | float | str):
        return str(want) == str(have)
    return bool(want == have)


def is_subset(want: Any, have: Any) -> bool:
    """Every field we render is present with the same value in the live object (defaults may be added)."""
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return False
        return all(is_subset(v, have.get(k)) for k, v in want.items() if not (v == {} and k not in have))
    if isinstance(want, list):
        if not isinstance(have, list) or len(want) != len(have):
            return False
        return all(is_subset(w, h) for w, h in zip(want, have, strict=True))
    return _scalar_equal(want, have)


def needs_apply(desired: Obj, live: Obj | None) -> bool:
    if live is None:
        return True
    live_hash = (live.get("metadata", {}).get("annotations") or {}).get(HASH_ANNOTATION)
    if live_hash != desired["metadata"]["annotations"][HASH_ANNOTATION]:
        return True
    return not is_subset({k: v for k, v in desired.items() if k != "status"}, live)


def key_of(obj: Obj) -> tuple[str, str | None, str]:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace"), meta["name"]


def controlled_by(obj: Obj, owner_uid: str) -> bool:
    return any(
        ref.get("uid") == owner_uid and ref.get("controller") for ref in obj["metadata"].get("ownerReferences") or []
    )


@dataclass
class ApplyResult:
    live: dict[tuple[str, str | None, str], Obj] = field(default_factory=dict)
    applied: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)


def list_children(kube: Kube, kinds: Iterable[str], namespace: str | None, selector: str) -> list[Obj]:
    return [item for kind in kinds for item in kube.list(kind, namespace, selector)]


def apply_children(kube: Kube, desired: list[Obj], existing: list[Obj], owner_uid: str) -> ApplyResult:
    """Apply what changed; delete what this owner controls and no longer renders."""
    result = ApplyResult()
    live = {key_of(o): o for o in existing}
    wanted = set()
    waves: tuple[list[Obj], list[Obj], list[Obj]] = ([], [], [])
    for obj in desired:
        obj = with_hash(obj)
        key = key_of(obj)
        wanted.add(key)
        current = live.get(key)
        if needs_apply(obj, current):
            waves[WAVE_OF.get(obj["kind"], 0)].append(obj)
        elif current is not None:
            result.live[key] = current
    for wave in waves:
        for applied in kube.apply_many(wave):
            key = key_of(applied)
            result.live[key] = applied
            result.applied.append("/".join(str(p) for p in key if p))
    for key, obj in live.items():
        if key not in wanted and controlled_by(obj, owner_uid):
            kube.delete(key[0], key[2], key[1])
            result.pruned.append("/".join(str(p) for p in key if p))
    return result
