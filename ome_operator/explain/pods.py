"""A pod, its Events and its log tail as a few kubectl-describe-like lines. Pure: `now` is passed in.

Only status is read from a pod, never its spec: the spec carries env, and env is not ours to print.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

Obj = dict[str, Any]
MAX_EVENTS = 3
MAX_LOG_LINES = 5
MAX_TEXT = 240  # a termination message can be a whole JSON report: its start is enough here

# Log lines and Event messages are text the operator does not control; mask anything token-shaped.
_SECRETS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"()hf_[A-Za-z0-9]{8,}"),
    re.compile(r"(?i)((?:token|password|secret)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
)


_PHRASE_SEPARATOR = re.compile(r", |\. |: ")
_LEADING_COUNT = re.compile(r"^\d+(/\d+)? ")


@dataclass(frozen=True)
class LogTail:
    """What reading a pod's log gave: its last lines, or why there are none."""

    container: str
    previous: bool
    lines: tuple[str, ...] = ()
    unavailable: str = ""


def compute_masked(text: str) -> str:
    for pattern in _SECRETS:
        text = pattern.sub(lambda m: m.group(1) + "***", text)
    return text


def compute_short(text: str, limit: int = MAX_TEXT) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def compute_pod_ready(pod: Obj) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") == "Succeeded":
        return True
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    return status.get("phase") == "Running" and (ready or {}).get("status") == "True"


def compute_restarts(pod: Obj) -> int:
    return sum(int(cs.get("restartCount") or 0) for cs in (pod.get("status") or {}).get("containerStatuses") or [])


def compute_pod_rank(pod: Obj) -> tuple[int, str]:
    """Failed and restarting pods first (they broke their group), then pending, then the merely unready."""
    phase = (pod.get("status") or {}).get("phase")
    if phase == "Failed" or compute_restarts(pod):
        rank = 0
    elif phase == "Pending":
        rank = 1
    else:
        rank = 2
    return rank, str(pod["metadata"]["name"])


def compute_pod_signature(pod: Obj) -> tuple[str, ...]:
    """What a pod's state says, without its name: pods alike are shown once."""
    status = pod.get("status") or {}
    parts = [str(status.get("phase")), str(status.get("reason") or "")]
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            parts.extend(compute_scheduler_reasons(str(cond.get("message") or cond.get("reason"))))
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        waiting = (state.get("waiting") or {}).get("reason") or ""
        last = ((cs.get("lastState") or {}).get("terminated") or {}).get("exitCode")
        parts.append(f"{cs.get('name')}:{sorted(state)}:{waiting}:{cs.get('ready')}:{last}")
    return tuple(parts)


def compute_scheduler_reasons(message: str) -> list[str]:
    """The scheduler's reasons without their node counts, which differ from pod to pod ("14 Insufficient
    nvidia.com/gpu, 2 node(s) didn't have free ports" and the reverse are the same story)."""
    phrases = {_LEADING_COUNT.sub("", p).strip() for p in _PHRASE_SEPARATOR.split(message)}
    return sorted(p for p in phrases if p)


def compute_log_request(pod: Obj) -> tuple[str, bool] | None:
    """Which container's log tells most (the one that failed, else the first) and whether it is the
    previous instance's; None when no container has started, so there is no log to ask for."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for cs in sorted(statuses, key=lambda c: (int(c.get("restartCount") or 0) == 0, bool(c.get("ready")))):
        state = cs.get("state") or {}
        if int(cs.get("restartCount") or 0) > 0 and (cs.get("lastState") or {}).get("terminated"):
            return str(cs.get("name")), True
        if state.get("running") or state.get("terminated"):
            return str(cs.get("name")), False
    return None


def compute_involved(events: Iterable[Obj], kind: str, name: str, uid: str | None = None) -> list[Obj]:
    """The Events about one object, oldest first. A recreated pod keeps its name but not its uid, so
    an Event carrying another uid is about a predecessor and is left out."""
    mine = []
    for event in events:
        ref = event.get("involvedObject") or event.get("regarding") or {}
        if ref.get("kind") != kind or ref.get("name") != name:
            continue
        if uid and ref.get("uid") and ref.get("uid") != uid:
            continue
        mine.append(event)
    return sorted(mine, key=compute_event_time)


def compute_event_time(event: Obj) -> str:
    series = event.get("series") or {}
    return str(
        event.get("lastTimestamp")
        or series.get("lastObservedTime")
        or event.get("eventTime")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )


def render_age(timestamp: str, now: datetime | None) -> str:
    if not timestamp or now is None:
        return "-"
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "-"
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def render_events(events: list[Obj], now: datetime | None, indent: str, title: str = "events") -> list[str]:
    """The last few Events, like the table at the end of `kubectl describe`."""
    if not events:
        return [f"{indent}{title}: none"]
    shown = events[-MAX_EVENTS:]
    more = f" (last {len(shown)} of {len(events)})" if len(events) > len(shown) else ""
    lines = [f"{indent}{title}{more}:"]
    for event in shown:
        count = int(event.get("count") or (event.get("series") or {}).get("count") or 1)
        times = f" (x{count})" if count > 1 else ""
        text = compute_masked(str(event.get("message") or event.get("note") or "")).strip().splitlines() or [""]
        age = render_age(compute_event_time(event), now)
        kind = event.get("type") or "Normal"
        lines.append(f"{indent}  {age:>4}  {kind:<7}  {event.get('reason') or '-'}{times}: {compute_short(text[0])}")
        lines.extend(f"{indent}          | {compute_short(t, 160)}" for t in text[1 : 1 + MAX_LOG_LINES])
    return lines


def render_container(cs: Obj) -> str:
    state = cs.get("state") or {}
    parts = [f"container {cs.get('name')}:"]
    if "waiting" in state:
        waiting = state["waiting"] or {}
        detail = f" ({compute_short(waiting['message'], 120)})" if waiting.get("message") else ""
        parts.append(f"waiting, {waiting.get('reason') or 'no reason given'}{detail}")
    elif "terminated" in state:
        parts.append(render_termination(state["terminated"] or {}))
    elif "running" in state:
        parts.append("running" + ("" if cs.get("ready") else ", not ready"))
    else:
        parts.append("no state reported")
    parts.append(f"restarts {int(cs.get('restartCount') or 0)}")
    last = (cs.get("lastState") or {}).get("terminated")
    if last:
        parts.append("last " + render_termination(last))
    return " ".join(parts[:1]) + " " + "; ".join(parts[1:])


def render_termination(terminated: Obj) -> str:
    text = f"terminated with exit code {terminated.get('exitCode', '?')}"
    if terminated.get("reason"):
        text += f" ({terminated['reason']})"
    if terminated.get("message"):
        text += f": {compute_short(compute_masked(str(terminated['message'])), 160)}"
    return text


def render_log(pod: Obj, log: LogTail | None, indent: str) -> list[str]:
    if log is None and compute_log_request(pod) is None:
        return [f"{indent}log: none, no container has started"]
    if log is None:
        return [f"{indent}log: not read (only the first pods' logs are read)"]
    which = "previous instance of " if log.previous else ""
    if log.unavailable:
        return [f"{indent}log of {which}{log.container}: unavailable: {compute_short(log.unavailable)}"]
    if not log.lines:
        return [f"{indent}log of {which}{log.container}: empty"]
    lines = [f"{indent}log of {which}{log.container} (last {len(log.lines)} lines):"]
    return lines + [f"{indent}  | {compute_short(compute_masked(line), 200)}" for line in log.lines]


def render_pod(pod: Obj, events: list[Obj], log: LogTail | None, now: datetime | None, indent: str = "  ") -> list[str]:
    """One pod: phase and scheduling, every container's state, then its Events and log tail."""
    meta, status = pod["metadata"], pod.get("status") or {}
    node = (pod.get("spec") or {}).get("nodeName") or "no node"
    head = f"{indent}pod {meta['name']} ({node}): {status.get('phase') or 'Unknown'}"
    if not compute_pod_ready(pod) and status.get("phase") == "Running":
        head += ", not ready"
    if meta.get("deletionTimestamp"):
        head += ", being deleted"
    lines = [head]
    inner = indent + "  "
    if status.get("reason") or status.get("message"):
        lines.append(f"{inner}{status.get('reason') or 'status'}: {compute_short(status.get('message') or '')}")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            why = cond.get("message") or cond.get("reason") or "unschedulable"
            lines.append(f"{inner}not scheduled: {compute_short(why)}")
    lines.extend(f"{inner}{render_container(cs)}" for cs in status.get("containerStatuses") or [])
    lines.extend(render_events(events, now, inner))
    lines.extend(render_log(pod, log, inner))
    return lines
