"""Server-side apply of rendered children, only when they differ from the cluster, and prune.

At steady state nothing is written: a child is applied only when the hash of what we render changed
(recorded in an annotation) or when the live object no longer carries every field we render
(someone edited or deleted one of ours). Fields others add are theirs: an env var or a volume another
tool appends to a list we render is not drift (server-side apply merges keyed lists and keeps it),
so it never starts an apply loop. Prune deletes only objects this owner controls. What must be
applied goes in three waves: identities, Roles, config and Services; RoleBindings; then the
workloads whose pods use them. A pass sends at most a budget of writes (reconcile.budget), in
chunks, and stops at once when `still_current` says the owner was deleted or changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ome_operator.kube.client import Kube
from ome_operator.render import names

from .budget import CHUNK, PASS_BUDGET

Obj = dict[str, Any]
HASH_ANNOTATION = "ome.io/rendered-hash"
# On both pod templates of a multi-node group: a change to either role's template changes both, so
# the leader and its workers are always replaced together (an NCCL world cannot mix revisions).
GROUP_REVISION_ANNOTATION = "ome.io/group-revision"
# Apply order: a RoleBinding is refused (escalation check) until its Role exists, and a workload's
# pods until their ServiceAccount does; within a wave nothing depends on anything else.
WAVE_OF = {"RoleBinding": 1, "StatefulSet": 2, "Deployment": 2, "Job": 2}
# Keys by which Kubernetes merges lists of objects (server-side apply's listMapKeys).
_LIST_KEYS = ("name", "containerPort", "mountPath", "devicePath", "key", "ip", "topologyKey")


def compute_hash(obj: Obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def with_hash(obj: Obj) -> Obj:
    annotations = {**(obj["metadata"].get("annotations") or {}), HASH_ANNOTATION: compute_hash(obj)}
    return {**obj, "metadata": {**obj["metadata"], "annotations": annotations}}


def group_key(obj: Obj) -> tuple[str, str] | None:
    labels = obj["metadata"].get("labels") or {}
    if obj.get("kind") != "StatefulSet" or names.LABEL_GROUP not in labels:
        return None
    return labels.get(names.LABEL_COMPONENT, ""), labels[names.LABEL_GROUP]


def template_revision(obj: Obj) -> str | None:
    template = (obj.get("spec") or {}).get("template") or {}
    return ((template.get("metadata") or {}).get("annotations") or {}).get(GROUP_REVISION_ANNOTATION)


def with_group_revisions(desired: list[Obj]) -> tuple[list[Obj], dict[tuple[str, str], str]]:
    """Both StatefulSets of each group carry one revision computed from both pod templates."""
    templates: dict[tuple[str, str], list[Obj]] = {}
    for obj in desired:
        key = group_key(obj)
        if key is not None:
            templates.setdefault(key, []).append(obj["spec"]["template"])
    revisions = {key: compute_hash({"templates": sorted(ts, key=compute_hash)}) for key, ts in templates.items()}
    result = []
    for obj in desired:
        key = group_key(obj)
        if key is None:
            result.append(obj)
            continue
        template = obj["spec"]["template"]
        meta = template.get("metadata") or {}
        annotations = {**(meta.get("annotations") or {}), GROUP_REVISION_ANNOTATION: revisions[key]}
        template = {**template, "metadata": {**meta, "annotations": annotations}}
        result.append({**obj, "spec": {**obj["spec"], "template": template}})
    return result, revisions


def _scalar_equal(want: Any, have: Any) -> bool:
    # The API server normalizes quantities and int-or-string values: 8 comes back as "8".
    if isinstance(want, bool) or isinstance(have, bool):
        return want is have
    if isinstance(want, int | float | str) and isinstance(have, int | float | str):
        return str(want) == str(have)
    return bool(want == have)


def _list_key(items: list[Any]) -> str | None:
    """The merge key of a list of objects, when every item has it with distinct values."""
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for key in _LIST_KEYS:
        values = [i.get(key) for i in items]
        if all(v is not None for v in values) and len(set(map(str, values))) == len(values):
            return key
    return None


def is_subset(want: Any, have: Any) -> bool:
    """Every field we render is present with the same value in the live object.

    Defaults the API server adds, and items others add to keyed lists (env, volumes, ports...),
    are not ours and do not count; items of other lists (command, args) must match exactly.
    """
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return False
        return all(is_subset(v, have.get(k)) for k, v in want.items() if not (v == {} and k not in have))
    if isinstance(want, list):
        if not isinstance(have, list):
            return False
        key = _list_key(want)
        if key is not None:
            live = {str(h.get(key)): h for h in have if isinstance(h, dict)}
            order = [str(h.get(key)) for h in have if isinstance(h, dict) and str(h.get(key)) in live]
            wanted = [str(w[key]) for w in want]
            # Ours must keep their relative order (env vars may refer to earlier ones).
            if [k for k in order if k in set(wanted)] != wanted:
                return False
            return all(is_subset(w, live.get(str(w[key]))) for w in want)
        if len(want) != len(have):
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
    changed: int = 0  # children that differed from the cluster at the start of the pass
    remaining: int = 0  # of those, writes (applies and prunes) left for the next pass
    stopped: bool = False  # the owner was deleted or changed mid-pass: the rest was abandoned

    @property
    def complete(self) -> bool:
        return not self.remaining and not self.stopped


def list_children(kube: Kube, kinds: Iterable[str], namespace: str | None, selector: str) -> list[Obj]:
    return [item for kind in kinds for item in kube.list(kind, namespace, selector)]


def _chunks(items: list[Obj], size: int) -> Iterable[list[Obj]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def apply_children(
    kube: Kube,
    desired: list[Obj],
    existing: list[Obj],
    owner_uid: str,
    still_current: Callable[[], bool] | None = None,
    budget: int = PASS_BUDGET,
) -> ApplyResult:
    """Apply what changed, then delete what this owner controls and no longer renders.

    At most `budget` writes are sent; `remaining` counts the rest (the next pass recomputes them
    from the cluster, so a pass cut short or killed anywhere converges). Prune runs only once
    every apply is done, so a scale-down never removes a group before its replacement exists.
    """
    result = ApplyResult()
    live = {key_of(o): o for o in existing}
    wanted = set()
    waves: tuple[list[Obj], list[Obj], list[Obj]] = ([], [], [])
    for obj in desired:
        obj = with_hash(obj)
        key = key_of(obj)
        wanted.add(key)
        current = live.get(key)
        if current is not None:
            result.live[key] = current  # replaced by the apply's answer when it is applied
        if needs_apply(obj, current):
            waves[WAVE_OF.get(obj["kind"], 0)].append(obj)
    prunable = [k for k, o in live.items() if k not in wanted and controlled_by(o, owner_uid)]
    result.changed = sum(len(w) for w in waves) + len(prunable)
    result.remaining = result.changed
    sent = 0
    for wave in waves:
        for chunk in _chunks(wave, CHUNK):
            if sent >= budget or (still_current is not None and not still_current()):
                result.stopped = sent < budget
                return result
            chunk = chunk[: budget - sent]
            for applied in kube.apply_many(chunk):
                key = key_of(applied)
                result.live[key] = applied
                result.applied.append("/".join(str(p) for p in key if p))
            sent += len(chunk)
            result.remaining -= len(chunk)
    for key in prunable:
        checkpoint = sent % CHUNK == 0
        if sent >= budget or (still_current is not None and checkpoint and not still_current()):
            result.stopped = sent < budget
            return result
        kube.delete(key[0], key[2], key[1])
        result.pruned.append("/".join(str(p) for p in key if p))
        sent += 1
        result.remaining -= 1
    return result
