"""Why an InferenceService or model is or is not Ready, as a few lines. Pure: everything is passed in.

Conditions are treated generically (any type, any reason), so a condition or reason added to the
operator later still shows up; only the advice table and the component of EngineReady/DecoderReady/
RouterReady know names.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ome_operator.reconcile.model import job_phase

from .advice import NO_STATUS, STALE, compute_advice
from .pods import (
    LogTail,
    compute_event_time,
    compute_involved,
    compute_pod_rank,
    compute_pod_ready,
    compute_pod_signature,
    compute_short,
    render_events,
    render_pod,
)

Obj = dict[str, Any]
COMPONENT_OF = {"EngineReady": "engine", "DecoderReady": "decoder", "RouterReady": "router"}
COMPONENT_ORDER = ("engine", "decoder", "router")
MAX_PODS = 3
MAX_NODES = 5
MODEL_KINDS = ("ClusterBaseModel", "BaseModel")
PHASE_ORDER = ("Failed", "Running", "Pending", "Succeeded")


@dataclass(frozen=True)
class Evidence:
    """What was read about one object: the object, the pods worth a look and what concerns them."""

    obj: Obj
    pods: list[Obj] = field(default_factory=list)  # the failing component's pods, or the download pods
    events: list[Obj] = field(default_factory=list)
    logs: dict[str, LogTail] = field(default_factory=dict)  # by pod name
    jobs: list[Obj] = field(default_factory=list)  # a model's download Jobs
    model: Obj | None = None  # an InferenceService's model, when it exists
    names: list[str] = field(default_factory=list)  # "Kind name" of what exists, when a reference is missing
    now: datetime | None = None


def compute_conditions(obj: Obj) -> list[Obj]:
    return list((obj.get("status") or {}).get("conditions") or [])


def compute_exit_code(obj: Obj) -> int:
    ready = next((c for c in compute_conditions(obj) if c.get("type") == "Ready"), None)
    return 0 if (ready or {}).get("status") == "True" else 1


def compute_failing(conditions: list[Obj]) -> Obj | None:
    """The condition Ready waits for, None when Ready is True. Ready carries the failing part's type as
    its message prefix ("ModelReady: ...") and that part's reason; failing both, the first part that
    is not True."""
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is not None and ready.get("status") == "True":
        return None
    parts = [c for c in conditions if c.get("type") != "Ready" and c.get("status") != "True"]
    named = str((ready or {}).get("message") or "").split(":", 1)[0]
    by_name = [c for c in parts if c.get("type") == named]
    by_reason = [c for c in parts if ready is not None and c.get("reason") == ready.get("reason")]
    return next(iter(by_name + by_reason + parts), ready)


def compute_mark(cond: Obj, failing: Obj | None) -> str:
    """`->` the condition Ready waits for; `!` one that is not True while nothing else fails (an advisory
    condition such as EngineArgsValid, which Ready never waits on)."""
    if cond is failing:
        return "->"
    if failing is None and cond.get("type") != "Ready" and cond.get("status") == "False":
        return "!"
    return ""


def render_conditions(conditions: list[Obj], failing: Obj | None) -> list[str]:
    """Ready first, the conditions it aggregates indented under it, each marked by compute_mark."""
    ready = [c for c in conditions if c.get("type") == "Ready"]
    rows = [(c, "") for c in ready] + [(c, "  ") for c in conditions if c.get("type") != "Ready"]
    width_type = max([9] + [len(pad + str(c.get("type"))) for c, pad in rows])
    width_reason = max([6] + [len(str(c.get("reason") or "")) for c, _ in rows])
    lines = [f"     {'CONDITION':<{width_type}}  STATUS   {'REASON':<{width_reason}}  MESSAGE"]
    for cond, pad in rows:
        mark = compute_mark(cond, failing)
        kind = pad + str(cond.get("type"))
        status = str(cond.get("status") or "Unknown")
        message = compute_short(str(cond.get("message") or ""), 200)
        lines.append(
            f"  {mark:<2} {kind:<{width_type}}  {status:<7}  {cond.get('reason') or '-':<{width_reason}}  {message}"
        )
    return lines


def render_headline(obj: Obj, failing: Obj | None) -> str:
    meta = obj["metadata"]
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    head = f"{obj.get('kind')} {where}{meta['name']}: "
    if compute_exit_code(obj) == 0:
        return head + "Ready"
    if failing is None or failing.get("type") == "Ready":
        return head + "not Ready"
    return head + f"not Ready: {failing.get('type')}={failing.get('status')} ({failing.get('reason')})"


def render_no_status(obj: Obj) -> list[str]:
    return [render_headline(obj, None), "", f"Next: {NO_STATUS}"]


def render_stale(obj: Obj) -> list[str]:
    """A note when the conditions describe an older spec than the one stored."""
    observed = (obj.get("status") or {}).get("observedGeneration")
    generation = obj["metadata"].get("generation")
    if observed is not None and generation is not None and observed != generation:
        return [f"  note: {STALE.format(observed=observed, generation=generation)}"]
    return []


def compute_model_explain_command(kind: str, name: str, namespace: str | None) -> str:
    if kind == "BaseModel":
        return f"ome-operator explain basemodel -n {namespace} {name}"
    return f"ome-operator explain clusterbasemodel {name}"


def compute_explanation(evidence: Evidence) -> list[str]:
    if evidence.obj.get("kind") in MODEL_KINDS:
        return compute_model_explanation(evidence)
    return compute_isvc_explanation(evidence)


def render_components(status: Obj) -> list[str]:
    parts = []
    components = status.get("components") or {}
    known = [c for c in COMPONENT_ORDER if c in components]
    for name in known + sorted(set(components) - set(known)):
        comp = components[name]
        text = f"{name} {comp.get('podsReady', 0)}/{comp.get('pods', 0)} pods"
        if comp.get("pods") != comp.get("groups"):
            text += f" in {comp.get('groupsReady', 0)}/{comp.get('groups', 0)} groups"
        parts.append(text)
    lines = []
    if parts:
        lines.append(f"  ready: {', '.join(parts)}; {status.get('gpus', 0)} GPUs")
    if status.get("runtime"):
        lines.append(f"  runtime: {status['runtime']}")
    if status.get("url"):
        lines.append(f"  url: {status['url']}")
    return lines


def compute_isvc_explanation(evidence: Evidence) -> list[str]:
    obj = evidence.obj
    meta, status = obj["metadata"], obj.get("status") or {}
    conditions = compute_conditions(obj)
    if not conditions:
        return render_no_status(obj)
    failing = compute_failing(conditions)
    lines = [render_headline(obj, failing), *render_stale(obj), *render_conditions(conditions, failing)]
    lines.extend(render_components(status))
    if failing is None:
        return lines
    ftype = failing.get("type")
    model_ref = (obj.get("spec") or {}).get("model") or {}
    model = evidence.model
    model_kind = (model or {}).get("kind") or model_ref.get("kind") or "ClusterBaseModel"
    if ftype == "RuntimeResolved" and status.get("runtimeExclusions"):
        lines.append("  runtimes not chosen:")
        lines.extend(
            f"    {e.get('kind')} {e.get('name')}: {compute_short(str(e.get('reason')), 160)}"
            for e in status["runtimeExclusions"][:MAX_NODES]
        )
    if ftype == "ModelReady" and model is not None:
        lines.append("")
        lines.extend(render_model_summary(model))
    component = COMPONENT_OF.get(str(ftype))
    if component:
        lines.append("")
        lines.extend(render_failing_pods(component, evidence))
    own = compute_involved(evidence.events, str(obj.get("kind")), meta["name"], meta.get("uid"))
    if own:
        lines.append("")
        lines.extend(render_events(own, evidence.now, "", f"events of the {obj.get('kind')}"))
    fields = {
        "namespace": str(meta.get("namespace") or "default"),
        "name": str(meta["name"]),
        "model_explain": compute_model_explain_command(
            str(model_kind), str(model_ref.get("name") or "MODEL"), meta.get("namespace")
        ),
    }
    lines.extend(["", f"Next: {compute_advice(failing, fields)}"])
    lines.extend(render_suggestion(obj, failing, evidence.names))
    return lines


REFERENCE_FIELDS = {"ModelReady": "model", "RuntimeResolved": "runtime"}


def render_suggestion(obj: Obj, failing: Obj, names: list[str]) -> list[str]:
    """`did you mean` for a reference to a missing model or runtime whose name is close to one that exists."""
    ref = ((obj.get("spec") or {}).get(REFERENCE_FIELDS.get(str(failing.get("type")), "")) or {}).get("name")
    if not ref or not names:
        return []
    by_name: dict[str, list[str]] = {}
    for entry in names:
        by_name.setdefault(entry.split(" ", 1)[-1], []).append(entry)
    close = difflib.get_close_matches(str(ref), list(by_name), n=3, cutoff=0.75)
    if not close:
        return []
    return ["      did you mean " + " or ".join(e for name in close for e in by_name[name]) + "?"]


def compute_pods_shown(pods: list[Obj]) -> list[tuple[Obj, int]]:
    """The unready pods worth showing, worst first, one per distinct state (four pods pending for the
    same scheduler message are one story), each with how many more are alike. The reads fetch logs
    for exactly these pods."""
    groups: dict[tuple[str, ...], list[Obj]] = {}
    for pod in sorted((p for p in pods if not compute_pod_ready(p)), key=compute_pod_rank):
        groups.setdefault(compute_pod_signature(pod), []).append(pod)
    return [(alike[0], len(alike) - 1) for alike in list(groups.values())[:MAX_PODS]]


def render_failing_pods(component: str, evidence: Evidence) -> list[str]:
    if not evidence.pods:
        return [f"{component}: no pods exist yet"]
    ready = sum(1 for p in evidence.pods if compute_pod_ready(p))
    lines = [f"{component}: {ready}/{len(evidence.pods)} pods ready"]
    shown = compute_pods_shown(evidence.pods)
    for pod, alike in shown:
        meta = pod["metadata"]
        events = compute_involved(evidence.events, "Pod", meta["name"], meta.get("uid"))
        lines.extend(render_pod(pod, events, evidence.logs.get(meta["name"]), evidence.now))
        if alike:
            lines.append(f"    ({alike} more {'pod' if alike == 1 else 'pods'} in the same state)")
    rest = len(evidence.pods) - ready - sum(1 + alike for _, alike in shown)
    if rest > 0:
        lines.append(f"  ... and {rest} more not ready")
    return lines


def compute_model_facts(model: Obj) -> str:
    status = model.get("status") or {}
    facts = [f"state {status.get('state') or 'unknown'}", f"{status.get('nodesSummary') or '0/0'} nodes ready"]
    facts.append(f"progress {status.get('progressSummary') or '-'}")
    facts.extend(str(status[k]) for k in ("parameterSize", "architecture") if status.get(k))
    return ", ".join(facts)


def render_model_summary(model: Obj) -> list[str]:
    meta, status = model["metadata"], model.get("status") or {}
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    lines = [f"{model.get('kind')} {where}{meta['name']}: {compute_model_facts(model)}"]
    if status.get("nodesFailed"):
        failed = list(status["nodesFailed"])
        more = f" and {len(failed) - MAX_NODES} more" if len(failed) > MAX_NODES else ""
        lines.append(f"  failed nodes: {', '.join(failed[:MAX_NODES])}{more}")
    return lines


def compute_job_node(job: Obj) -> str:
    return str((job["metadata"].get("annotations") or {}).get("ome.io/node") or "?")


def compute_download_rows(jobs: list[Obj], pods: list[Obj]) -> list[tuple[str, Obj, str, Obj | None]]:
    """Failed, then running download Jobs, by node, as shown: (phase, Job, why, its newest pod).
    The newest pod is the one whose state and log say why; the reads fetch logs in this order."""
    rows = []
    for wanted in ("Failed", "Running"):
        mine = []
        for job in sorted(jobs, key=compute_job_node):
            phase, why = job_phase(job)
            if phase != wanted:
                continue
            name = job["metadata"]["name"]
            own = [p for p in pods if (p["metadata"].get("labels") or {}).get("job-name") == name]
            newest = max(own, key=lambda p: str(p["metadata"].get("creationTimestamp") or "")) if own else None
            mine.append((phase, job, why, newest))
        rows.extend(mine[:MAX_NODES])
    return rows


def render_progress(progress: Obj | None) -> str:
    if not progress:
        return ""
    total, done = int(progress.get("totalBytes") or 0), int(progress.get("completedBytes") or 0)
    text = f"{progress.get('phase') or 'in progress'}"
    if total:
        text += f", {100 * done // total}% of {render_bytes(total)}"
    if progress.get("speedBytesPerSec"):
        text += f", {render_bytes(int(progress['speedBytesPerSec']))}/s"
    return text


def render_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def render_downloads(evidence: Evidence) -> list[str]:
    """Per node: failed and running download Jobs in detail, the others counted."""
    by_phase: dict[str, list[str]] = {}
    for job in sorted(evidence.jobs, key=compute_job_node):
        by_phase.setdefault(job_phase(job)[0], []).append(compute_job_node(job))
    namespace = evidence.jobs[0]["metadata"].get("namespace") if evidence.jobs else None
    counts = ", ".join(f"{len(by_phase[p])} {p}" for p in PHASE_ORDER if p in by_phase)
    lines = [f"download Jobs in namespace {namespace}: {counts}" if evidence.jobs else "download Jobs: none"]
    progress = (evidence.obj.get("status") or {}).get("progress") or {}
    detailed = 0
    for phase, job, why, pod in compute_download_rows(evidence.jobs, evidence.pods):
        node, job_meta = compute_job_node(job), job["metadata"]
        detail = why or render_progress(progress.get(node)) or "no progress reported yet"
        lines.append(f"  {phase:<7}  {node}  job {job_meta['name']}: {compute_short(detail, 200)}")
        if pod is None or detailed >= MAX_PODS:
            continue  # a few pods in detail say why; the rest would repeat it
        detailed += 1
        pod_meta = pod["metadata"]
        events = compute_involved(evidence.events, "Pod", pod_meta["name"], pod_meta.get("uid"))
        events += compute_involved(evidence.events, "Job", job_meta["name"], job_meta.get("uid"))
        log = evidence.logs.get(pod_meta["name"])
        lines.extend(render_pod(pod, sorted(events, key=compute_event_time), log, evidence.now, "    "))
    for phase in ("Failed", "Running"):
        if len(by_phase.get(phase, [])) > MAX_NODES:
            rest = by_phase[phase][MAX_NODES:]
            lines.append(f"  ... and {len(rest)} more {phase}: {', '.join(rest)}")
    pending = by_phase.get("Pending", [])
    if pending:
        more = f" and {len(pending) - MAX_NODES} more" if len(pending) > MAX_NODES else ""
        lines.append(f"  Pending  {', '.join(pending[:MAX_NODES])}{more}")
    return lines


def compute_model_explanation(evidence: Evidence) -> list[str]:
    obj = evidence.obj
    meta = obj["metadata"]
    conditions = compute_conditions(obj)
    if not conditions:
        return render_no_status(obj)
    failing = compute_failing(conditions)
    lines = [render_headline(obj, failing), f"  {compute_model_facts(obj)}", *render_stale(obj)]
    lines.extend(render_conditions(conditions, failing))
    if failing is None and not any(job_phase(j)[0] != "Succeeded" for j in evidence.jobs):
        lines.append(render_downloads(evidence)[0])
        return lines
    lines.extend(render_downloads(evidence))
    if failing is None:
        return lines
    jobs_namespace = evidence.jobs[0]["metadata"].get("namespace") if evidence.jobs else meta.get("namespace")
    fields = {
        "namespace": str(meta.get("namespace") or ""),
        "name": meta["name"],
        "jobs_namespace": str(jobs_namespace),
    }
    lines.extend(["", f"Next: {compute_advice(failing, fields)}"])
    return lines
