"""A model's status from its download Jobs, their progress and results. Pure: the clock is passed in.

State follows OME: Ready once at least one node holds a verified copy, Failed when none does and a
node failed, In_Transit while copies are being made. The Ready condition is stricter: every target
node holds a verified copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ome_operator.api import ModelStatus
from ome_operator.api import reasons as R
from ome_operator.api.model import DownloadProgress

from .conditions import Cond, merge_conditions

Obj = dict[str, Any]


@dataclass(frozen=True)
class NodeDownload:
    node: str
    phase: str  # Pending, Running, Succeeded, Failed
    message: str = ""
    progress: Obj | None = None
    retry_scheduled: bool = False  # failed, and its Job is recreated later (the message says when)


@dataclass(frozen=True)
class ModelFactsObserved:
    generation: int | None
    nodes: list[NodeDownload]
    metadata: Obj | None = None
    spec_architecture: str | None = None
    spec_parameter_size: str | None = None
    in_place: bool = False  # local:// and pvc:// models: validated where they are, nothing to copy
    referenced_by: list[str] = field(default_factory=list)
    problem: Cond | None = None  # a spec or API problem that stops the download


_PROGRESS_KEYS = frozenset(f.alias or name for name, f in DownloadProgress.model_fields.items())


def known_progress(snapshot: Obj) -> Obj:
    """A Job's progress snapshot reduced to the fields status declares (the API server prunes the rest)."""
    return {k: v for k, v in snapshot.items() if k in _PROGRESS_KEYS and v is not None}


def compute_progress_summary(nodes: list[NodeDownload]) -> str:
    total = sum(int((n.progress or {}).get("totalBytes") or 0) for n in nodes)
    done = sum(int((n.progress or {}).get("completedBytes") or 0) for n in nodes)
    ready = sum(1 for n in nodes if n.phase == "Succeeded")
    if nodes and ready == len(nodes):
        return "100%"
    if total <= 0:
        return "0%" if nodes else "-"
    return f"{min(99, int(100 * done / total))}%"


def compute_model_status(facts: ModelFactsObserved, previous: Obj | None, now: str) -> Obj:
    ready = sorted(n.node for n in facts.nodes if n.phase == "Succeeded")
    failed = sorted(n.node for n in facts.nodes if n.phase == "Failed")
    if ready:
        state = "Ready"
    elif failed:
        state = "Failed"
    else:
        state = "In_Transit"
    target = len(facts.nodes)
    if facts.problem is not None:
        downloaded = facts.problem
        state = "Failed"
    elif target == 0:
        downloaded = Cond(R.DOWNLOADED, False, R.NO_TARGET_NODES, "no node matches the model's storage node selector")
    elif len(ready) == target:
        verb = "validated in place" if facts.in_place else "verified copies"
        downloaded = Cond(R.DOWNLOADED, True, R.ALL_NODES_READY, f"{verb} on {target}/{target} nodes")
    elif failed:
        details = "; ".join(f"{n.node}: {n.message or 'failed'}" for n in facts.nodes if n.phase == "Failed")
        retrying = all(n.retry_scheduled for n in facts.nodes if n.phase == "Failed")
        reason = R.DOWNLOAD_RETRY_SCHEDULED if retrying else R.DOWNLOAD_FAILED
        downloaded = Cond(R.DOWNLOADED, False, reason, f"{len(failed)}/{target} nodes failed: {details}")
    else:
        # A node whose Job is not created yet says why (e.g. queued behind other downloads).
        waiting = "; ".join(f"{n.node}: {n.message}" for n in facts.nodes if n.phase == "Pending" and n.message)
        downloaded = Cond(
            R.DOWNLOADED,
            False,
            R.DOWNLOADING,
            f"{len(ready)}/{target} nodes ready, {compute_progress_summary(facts.nodes)} transferred"
            + (f"; {waiting}" if waiting else ""),
        )
    conditions = [Cond(R.READY, downloaded.status, downloaded.reason, downloaded.message, downloaded.path), downloaded]
    if facts.referenced_by:
        conditions.append(Cond(R.IN_USE, True, R.REFERENCED, "used by " + ", ".join(sorted(facts.referenced_by))))
    meta = facts.metadata or {}
    status: Obj = {
        "state": state,
        "nodesReady": ready,
        "nodesFailed": failed,
        "nodesSummary": f"{len(ready)}/{target}",
        "progressSummary": compute_progress_summary(facts.nodes),
        "progress": {n.node: known_progress(n.progress) for n in facts.nodes if n.progress},
        "conditions": merge_conditions((previous or {}).get("conditions"), conditions, now, facts.generation),
        "observedGeneration": facts.generation,
    }
    if meta:
        status["metadata"] = meta
    architecture = facts.spec_architecture or meta.get("architecture")
    size = facts.spec_parameter_size or meta.get("parameterSize")
    if architecture:
        status["architecture"] = architecture
    if size:
        status["parameterSize"] = size
    validated = ModelStatus.model_validate({k: v for k, v in status.items() if v is not None})
    result: Obj = validated.model_dump(mode="json", by_alias=True, exclude_none=True)
    return result
