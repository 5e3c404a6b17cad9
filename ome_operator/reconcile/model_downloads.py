"""A model's download Jobs across passes and models: the attempt each node's Job is at (recreation
after its retries are used up), which nodes must wait (download slots, serving demand first), and
where identical files can be taken from (downloadPolicy ReuseIfExists). The rules are in
download_policy; this module reads what they need from the cluster.
"""

from __future__ import annotations

import json
from typing import Any

from ome_operator.api import BaseModel, ClusterBaseModel
from ome_operator.api.model import AnyModel
from ome_operator.api.storage_uri import HfUri, StorageUriError, parse_storage_uri
from ome_operator.kube.client import Kube
from ome_operator.render import names
from ome_operator.render.context import model_path
from ome_operator.render.download import (
    ATTEMPT_ANNOTATION,
    COMPONENT,
    ModelContext,
    check_model_storage,
    download_job_name,
    reuse_source_of,
)

from .download_policy import (
    NodeQueue,
    RetryPlan,
    compute_demanded_labels,
    compute_node_queues,
    failed_condition,
    may_start,
    resolve_retry_plan,
)
from .nodes import node_matches

Obj = dict[str, Any]


def parse_model(raw: Obj) -> AnyModel:
    if raw["kind"] == "ClusterBaseModel":
        return ClusterBaseModel.model_validate(raw)
    return BaseModel.model_validate(raw)


def read_termination_summary(pods: list[Obj], job_name: str) -> Obj | None:
    """The JSON summary the downloader leaves as its container's termination message."""
    for pod in pods:
        if (pod["metadata"].get("labels") or {}).get("job-name") != job_name:
            continue
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            message = ((cs.get("state") or {}).get("terminated") or {}).get("message")
            if not message:
                continue
            try:
                summary = json.loads(message)
            except ValueError:
                continue
            if isinstance(summary, dict):
                return summary
    return None


def resolve_reuse_sources(kube: Kube, mctx: ModelContext, targets: list[str], existing: list[Obj]) -> dict[str, str]:
    """downloadPolicy ReuseIfExists (OME's meaning: use a copy another model already has on the node):
    node -> the directory of another model Ready there with the same hub repository (its commit equal
    to ours when ours is pinned). A node whose Job exists keeps the choice its Job was made with."""
    storage = mctx.storage
    if storage.download_policy != "ReuseIfExists":
        return {}
    try:
        uri = parse_storage_uri(storage.storage_uri)
    except StorageUriError:
        return {}
    if not isinstance(uri, HfUri):
        return {}
    ours = model_path(mctx.model, mctx.settings)
    chosen: dict[str, str] = {}
    for job in existing:
        node = (job["metadata"].get("annotations") or {}).get("ome.io/node", "")
        source = reuse_source_of(job) if job["kind"] == "Job" else None
        if source and node in targets:
            chosen[node] = source
    fresh = [n for n in targets if not any(
        (j["metadata"].get("annotations") or {}).get("ome.io/node") == n for j in existing if j["kind"] == "Job"
    )]  # fmt: skip
    if not fresh:
        return chosen
    candidates: list[tuple[bool, str, set[str]]] = []
    for kind in ("ClusterBaseModel", "BaseModel"):
        for raw in kube.list(kind):
            try:
                other = parse_model(raw)
                other_uri = parse_storage_uri(other.spec.storage.storage_uri) if other.spec.storage else None
            except (ValueError, StorageUriError):
                continue
            if other.metadata.uid == mctx.model.metadata.uid or not isinstance(other_uri, HfUri):
                continue
            path = model_path(other, mctx.settings)
            if other_uri.repo_id != uri.repo_id or path == ours:
                continue
            status = raw.get("status") or {}
            commit = str((status.get("metadata") or {}).get("commit") or "")
            same_commit = bool(uri.revision) and commit.startswith(str(uri.revision))
            candidates.append((not same_commit, path, set(status.get("nodesReady") or [])))
    for node in fresh:
        for _, path, ready in sorted(candidates):
            if node in ready:
                chosen[node] = path
                break
    return chosen


def resolve_retry_plans(
    mctx: ModelContext,
    targets: list[str],
    existing: list[Obj],
    pods: list[Obj],
    clock: Any,
    reuse: dict[str, str] | None = None,
) -> dict[str, RetryPlan]:
    """Per target node that has Jobs of the current source: the attempt its Job should be at."""
    by_node: dict[str, dict[int, Obj]] = {}
    for obj in existing:
        if obj["kind"] != "Job":
            continue
        annotations = obj["metadata"].get("annotations") or {}
        node = annotations.get("ome.io/node", "")
        attempt = int(annotations.get(ATTEMPT_ANNOTATION) or 1)
        if node in targets and obj["metadata"]["name"] == download_job_name(
            mctx, node, attempt, (reuse or {}).get(node)
        ):
            by_node.setdefault(node, {})[attempt] = obj
    plans = {}
    for node, jobs in by_node.items():
        latest = jobs[max(jobs)]
        summary = read_termination_summary(pods, latest["metadata"]["name"]) if failed_condition(latest) else None
        permanent = bool(summary and summary.get("permanent"))
        plans[node] = resolve_retry_plan(jobs, permanent, clock, mctx.settings.download_retry_base_seconds)
    return plans


def resolve_held_nodes(kube: Kube, mctx: ModelContext, fresh: list[str], this_label: str) -> dict[str, str]:
    """Nodes where this model's first Job must wait (node -> why): the node's download slots are taken,
    or serving demand goes first (download_policy)."""
    if not fresh:
        return {}
    demanded = compute_demanded_labels(kube.list("InferenceService"))
    jobs = kube.list("Job", None, f"app.kubernetes.io/component={COMPONENT}")
    have = {
        (
            (j["metadata"].get("labels") or {}).get(names.LABEL_MODEL),
            (j["metadata"].get("annotations") or {}).get("ome.io/node"),
        )
        for j in jobs
    }
    nodes = kube.list("Node")
    waiting: dict[str, set[str]] = {}
    for kind in ("ClusterBaseModel", "BaseModel"):
        for raw in kube.list(kind):
            try:
                other = parse_model(raw)
            except ValueError:
                continue  # reported on its own status
            label = ModelContext(other, mctx.settings).labels()[names.LABEL_MODEL]
            if label not in demanded or label == this_label or raw["metadata"].get("deletionTimestamp"):
                continue
            if check_model_storage(other) is not None:
                continue
            for node_obj in nodes:
                node_name = node_obj["metadata"]["name"]
                if (label, node_name) not in have and node_matches(other, node_obj):
                    waiting.setdefault(node_name, set()).add(label)
    queues = compute_node_queues(jobs, demanded, waiting, this_label)
    slots = mctx.settings.download_slots_per_node
    held = {}
    for node in fresh:
        queue = queues.get(node, NodeQueue())
        if not may_start(queue, this_label in demanded, slots):
            busy = queue.active_demanded + queue.active_other
            held[node] = (
                f"queued: {busy} download Job(s) of other models run on this node (at most {slots} at once)"
                + ("; models an InferenceService waits for go first" if queue.demanded_waiting or busy else "")
            )
    return held
