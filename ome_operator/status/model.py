"""A model's status from its download Jobs, their progress and results. Pure: the clock is passed in.

State follows OME: Ready once at least one node holds a verified copy, Failed when none does and a
node failed, In_Transit while copies are being made. The Ready condition is stricter: every target
node holds a verified copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .conditions import Cond, merge_conditions

Obj = dict[str, Any]


@dataclass(frozen=True)
class NodeDownload:
    node: str
    phase: str  # Pending, Running, Succeeded, Failed
    message: str = ""
    progress: Obj | None = None


@dataclass(frozen=True)
class ModelFactsObserved:
    generation: int | None
    nodes: list[NodeDownload]
    metadata: Obj | None = None
    spec_architecture: str | None = None
    spec_parameter_size: str | None = None
    in_place: bool = False  # local:// and pvc:// models: validated where they are, nothing to copy
    referenced_by: list[str] = field(default_factory=list)
    problem: str = ""  # a spec problem that stops the download (reason, message)


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
    if facts.problem:
        downloaded = Cond("Downloaded", False, "InvalidStorage", facts.problem)
    elif target == 0:
        downloaded = Cond("Downloaded", False, "NoTargetNodes", "no node matches the model's storage node selector")
    elif len(ready) == target:
        verb = "validated in place" if facts.in_place else "verified copies"
        downloaded = Cond("Downloaded", True, "AllNodesReady", f"{verb} on {target}/{target} nodes")
    elif failed:
        details = "; ".join(f"{n.node}: {n.message or 'failed'}" for n in facts.nodes if n.phase == "Failed")
        downloaded = Cond("Downloaded", False, "DownloadFailed", f"{len(failed)}/{target} nodes failed: {details}")
    else:
        downloaded = Cond(
            "Downloaded",
            False,
            "Downloading",
            f"{len(ready)}/{target} nodes ready, {compute_progress_summary(facts.nodes)} transferred",
        )
    conditions = [Cond("Ready", downloaded.status, downloaded.reason, downloaded.message), downloaded]
    if facts.referenced_by:
        conditions.append(
            Cond("InUse", True, "ReferencedByInferenceService", "used by " + ", ".join(sorted(facts.referenced_by)))
        )
    meta = facts.metadata or {}
    status: Obj = {
        "state": state,
        "nodesReady": ready,
        "nodesFailed": failed,
        "nodesSummary": f"{len(ready)}/{target}",
        "progressSummary": compute_progress_summary(facts.nodes),
        "progress": {n.node: n.progress for n in facts.nodes if n.progress},
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
    return {k: v for k, v in status.items() if v is not None}
