"""The reads behind `explain`: the object, then only the pods, Jobs, Events and logs its failure points at.

Everything goes through a `Reader` (ome_operator.kube.client.Kube satisfies it), so the reads are
tested with a fake. Pods are read whole but only their status is printed; Secrets are never read.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Protocol

from ome_operator.api import reasons as R
from ome_operator.kube.client import ApiException
from ome_operator.render import names

from .compute import (
    COMPONENT_OF,
    MAX_PODS,
    Evidence,
    compute_conditions,
    compute_download_rows,
    compute_failing,
    compute_pods_shown,
)
from .pods import MAX_LOG_LINES, LogTail, compute_log_request

Obj = dict[str, Any]
MAX_LOGS = 3  # each log is a request through the API server to a kubelet: only the pods shown


class Reader(Protocol):
    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj | None: ...

    def read_pod_log(
        self, name: str, namespace: str, container: str | None = None, tail_lines: int = 20, previous: bool = False
    ) -> str: ...

    def list(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> list[Obj]: ...


def observe_log(reader: Reader, pod: Obj) -> LogTail | None:
    """The pod's log tail, or why it cannot be had (the node serves no logs, the container is gone)."""
    request = compute_log_request(pod)
    if request is None:
        return None
    container, previous = request
    meta = pod["metadata"]
    try:
        text = reader.read_pod_log(meta["name"], meta["namespace"], container, MAX_LOG_LINES, previous)
    except ApiException as exc:
        return LogTail(container, previous, unavailable=describe_api_error(exc))
    except Exception as exc:  # the connection to a node's log endpoint is best effort
        return LogTail(container, previous, unavailable=f"{type(exc).__name__}: {exc}")
    lines = tuple(line for line in text.splitlines() if line.strip())
    return LogTail(container, previous, lines[-MAX_LOG_LINES:])


def describe_api_error(exc: ApiException) -> str:
    """The API server's one-line reason (its Status message), without the HTTP dump."""
    message = ""
    try:
        body = json.loads(exc.body or "{}")
        message = str(body.get("message") or "") if isinstance(body, dict) else ""
    except (TypeError, ValueError):
        message = str(exc.body or "").strip()
    return f"{exc.status} {exc.reason}" + (f": {message}" if message else "")


def observe_logs(reader: Reader, pods: list[Obj]) -> dict[str, LogTail]:
    logs: dict[str, LogTail] = {}
    for pod in pods[:MAX_LOGS]:
        tail = observe_log(reader, pod)
        if tail is not None:
            logs[pod["metadata"]["name"]] = tail
    return logs


def observe_events(reader: Reader, namespaces: set[str]) -> list[Obj]:
    """Events of the namespaces involved; filtering by object happens when formatting."""
    events: list[Obj] = []
    for namespace in sorted(namespaces):
        events.extend(reader.list("Event", namespace))
    return events


def observe_model_of(reader: Reader, isvc: Obj) -> Obj | None:
    """The InferenceService's model, looked up as the operator does: a BaseModel in its namespace first."""
    ref = (isvc.get("spec") or {}).get("model") or {}
    name, kind = ref.get("name"), ref.get("kind")
    if not name:
        return None
    if kind in (None, "BaseModel"):
        found = reader.get("BaseModel", name, isvc["metadata"].get("namespace"))
        if found is not None:
            return found
    if kind in (None, "ClusterBaseModel"):
        return reader.get("ClusterBaseModel", name)
    return None


def observe_isvc(reader: Reader, namespace: str, name: str, now: datetime) -> Evidence | None:
    obj = reader.get("InferenceService", name, namespace)
    if obj is None:
        return None
    obj.setdefault("kind", "InferenceService")
    failing = compute_failing(compute_conditions(obj))
    if failing is None and compute_conditions(obj):
        return Evidence(obj, now=now)
    component = COMPONENT_OF.get(str((failing or {}).get("type")))
    pods: list[Obj] = []
    if component:
        selector = f"{names.LABEL_ISVC}={name},{names.LABEL_COMPONENT}={component}"
        pods = sorted(reader.list("Pod", namespace, selector), key=lambda p: p["metadata"]["name"])
    model = observe_model_of(reader, obj) if (failing or {}).get("type") == "ModelReady" else None
    shown = [pod for pod, _ in compute_pods_shown(pods)]
    return Evidence(
        obj,
        pods=pods,
        events=observe_events(reader, {namespace}),
        logs=observe_logs(reader, shown),
        model=model,
        names=observe_names(reader, NAME_LOOKUPS.get(str((failing or {}).get("reason")), ()), namespace),
        now=now,
    )


# A reference to a missing object is most often a typo: list what exists, so a near name can be suggested.
NAME_LOOKUPS = {
    R.MODEL_NOT_FOUND: ("BaseModel", "ClusterBaseModel"),
    R.RUNTIME_NOT_FOUND: ("ServingRuntime", "ClusterServingRuntime"),
}


def observe_names(reader: Reader, kinds: tuple[str, ...], namespace: str) -> list[str]:
    """`Kind name` of every object of these kinds; best effort, since a user may not be allowed to list them."""
    found: list[str] = []
    for kind in kinds:
        try:
            items = reader.list(kind, None if kind.startswith("Cluster") else namespace)
        except ApiException:
            continue
        found.extend(f"{kind} {item['metadata']['name']}" for item in items)
    return found


def observe_model(
    reader: Reader, kind: str, namespace: str | None, name: str, jobs_namespace: str, now: datetime
) -> Evidence | None:
    """A model, its download Jobs and their pods (cluster models download in the operator's namespace)."""
    obj = reader.get(kind, name, namespace if kind == "BaseModel" else None)
    if obj is None:
        return None
    obj.setdefault("kind", kind)
    scope = "cluster" if kind == "ClusterBaseModel" else (namespace or "default")
    where = jobs_namespace if kind == "ClusterBaseModel" else (namespace or "default")
    selector = f"{names.LABEL_MODEL}={scope}.{name}"
    jobs = reader.list("Job", where, selector)
    pods = reader.list("Pod", where, selector)
    shown = [pod for _, _, _, pod in compute_download_rows(jobs, pods) if pod is not None][:MAX_PODS]
    events = observe_events(reader, {where}) if shown else []
    return Evidence(obj, pods=pods, events=events, logs=observe_logs(reader, shown), jobs=jobs, now=now)
