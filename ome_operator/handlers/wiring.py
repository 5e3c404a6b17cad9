"""kopf wiring only: every event becomes a key on the work queue; the queue calls reconcile.

Parents (models, InferenceServices) are watched for every event and resynced by a timer; children
carrying our managed-by label are watched so a deleted or edited child is restored within seconds;
runtime, model and node changes re-queue the InferenceServices and models they affect.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from ome_operator.api import GROUP, VERSION
from ome_operator.kube.client import Kube
from ome_operator.reconcile.isvc import reconcile_inference_service
from ome_operator.reconcile.model import ModelOutcome, cleanup_model, reconcile_model
from ome_operator.render import names
from ome_operator.render.context import Settings

from . import metrics
from .queue import WorkQueue

log = logging.getLogger(__name__)
Key = tuple[str, str | None, str]
MANAGED = {"app.kubernetes.io/managed-by": names.MANAGED_BY}
CHILDREN = (
    ("apps", "v1", "statefulsets"),
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("", "v1", "serviceaccounts"),
    ("", "v1", "configmaps"),
    ("", "v1", "pods"),
    ("batch", "v1", "jobs"),
    ("rbac.authorization.k8s.io", "v1", "roles"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings"),
)


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Operator:
    """The running operator's state: the client, settings, the queue, and what uses what."""

    kube: Kube
    settings: Settings
    resync_seconds: float = 60.0
    workers: int = 4
    queue: WorkQueue = field(init=False)
    uses: dict[Key, tuple[str | None, str | None]] = field(default_factory=dict)  # isvc -> (model, runtime)
    models: set[Key] = field(default_factory=set)
    download_phases: dict[Key, dict[str, int]] = field(default_factory=dict)
    node_labels: dict[str, dict[str, str] | None] = field(default_factory=dict)
    progress_series: dict[Key, set[tuple[str, str]]] = field(default_factory=dict)
    states: metrics.StateBook = field(default_factory=metrics.StateBook)
    now: Callable[[], str] = utc_now

    def __post_init__(self) -> None:
        self.queue = WorkQueue(self.reconcile_key, workers=self.workers)

    def reconcile_key(self, key: Hashable) -> None:
        kind, namespace, name = cast(Key, key)
        metrics.RECONCILES.labels(kind=kind).inc()
        with metrics.RECONCILE_SECONDS.labels(kind=kind).time():
            try:
                self._reconcile(kind, namespace, name)
            except Exception:
                metrics.RECONCILE_ERRORS.labels(kind=kind).inc()
                raise
            finally:
                metrics.QUEUE_DEPTH.set(self.queue.pending())

    def _reconcile(self, kind: str, namespace: str | None, name: str) -> None:
        key = (kind, namespace, name)
        if kind == "InferenceService":
            outcome = reconcile_inference_service(self.kube, namespace or "default", name, self.settings, self.now)
            self.states.set(kind, f"{namespace}/{name}", outcome.ready if outcome else None)
            if outcome is None:
                self.uses.pop(key, None)
            else:
                self.uses[key] = (outcome.model, outcome.runtime)
            return
        result = reconcile_model(self.kube, kind, namespace, name, self.settings, self.now)
        self.states.set(kind, f"{namespace or ''}/{name}", result.state if result else None)
        if result is None:
            self.download_phases.pop(key, None)
        else:
            self.download_phases[key] = result.phases
        self._publish_progress(key, result)
        totals: dict[str, int] = {}
        for phases in self.download_phases.values():
            for phase, count in phases.items():
                totals[phase] = totals.get(phase, 0) + count
        for phase in ("Pending", "Running", "Succeeded", "Failed"):
            metrics.DOWNLOAD_JOBS.labels(phase=phase).set(totals.get(phase, 0))

    def _publish_progress(self, key: Key, result: ModelOutcome | None) -> None:
        """Per-node download gauges; series of nodes or models that went away are removed."""
        gauges = (metrics.DOWNLOAD_COMPLETED_BYTES, metrics.DOWNLOAD_TOTAL_BYTES, metrics.DOWNLOAD_SPEED)
        fields = ("completedBytes", "totalBytes", "speedBytesPerSec")
        previous = self.progress_series.pop(key, set())
        current: set[tuple[str, str]] = set()
        if result is not None:
            for node, snapshot in result.progress.items():
                for gauge, name in zip(gauges, fields, strict=True):
                    gauge.labels(model=result.label, node=node).set(float(snapshot.get(name) or 0))
                current.add((result.label, node))
            self.progress_series[key] = current
        for series in previous - current:
            for gauge in gauges:
                gauge.remove(*series)

    # --- what re-queues what -------------------------------------------------------------
    def enqueue_services_using(self, model: str | None = None, runtime: str | None = None) -> None:
        for key, (uses_model, uses_runtime) in list(self.uses.items()):
            if (model is not None and uses_model == model) or (runtime is not None and uses_runtime in (runtime, None)):
                self.queue.add(key)

    def enqueue_owner_of(self, body: Any) -> None:
        meta = body.get("metadata") or {}
        labels = meta.get("labels") or {}
        namespace = meta.get("namespace")
        if names.LABEL_ISVC in labels and labels.get("app.kubernetes.io/component") != "model-download":
            self.queue.add(("InferenceService", namespace, labels[names.LABEL_ISVC]))
        model = labels.get(names.LABEL_MODEL)
        if model:
            scope, _, model_name = model.partition(".")
            if scope == "cluster":
                self.queue.add(("ClusterBaseModel", None, model_name))
            else:
                self.queue.add(("BaseModel", scope, model_name))


def build_registry(op: Operator) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    def parent(plural: str, kind: str, namespaced: bool) -> None:
        def key_of(body: Any) -> Key:
            meta = body["metadata"]
            return (kind, meta.get("namespace") if namespaced else None, meta["name"])

        @kopf.on.event(GROUP, VERSION, plural, registry=registry)
        def on_event(body: Any, type: str | None, **_: Any) -> None:
            key = key_of(body)
            op.queue.add(key)
            if kind == "InferenceService":
                # The model lists who uses it (condition InUse): let it see this one come and go.
                model = ((body.get("spec") or {}).get("model") or {}).get("name")
                known = op.uses.get(key, (None, None))[0]
                # Status-only updates (most MODIFIED events) do not change who uses which model.
                if model and (type != "MODIFIED" or model != known):
                    op.queue.add(("ClusterBaseModel", None, model))
                    op.queue.add(("BaseModel", key[1], model))
            else:
                op.models.add(key)
                op.enqueue_services_using(model=key[2])
                if type == "DELETED":
                    op.models.discard(key)

        @kopf.timer(GROUP, VERSION, plural, interval=op.resync_seconds, registry=registry)
        def on_timer(body: Any, **_: Any) -> None:
            op.queue.add(key_of(body))

    parent("inferenceservices", "InferenceService", True)
    parent("clusterbasemodels", "ClusterBaseModel", False)
    parent("basemodels", "BaseModel", True)

    def model_deletion(plural: str, kind: str) -> None:
        @kopf.on.delete(GROUP, VERSION, plural, registry=registry)
        def on_delete(name: str, namespace: str | None, **_: Any) -> None:
            cleanup_model(op.kube, kind, namespace, name)
            op.enqueue_services_using(model=name)

    model_deletion("clusterbasemodels", "ClusterBaseModel")
    model_deletion("basemodels", "BaseModel")

    for plural in ("clusterservingruntimes", "servingruntimes"):

        @kopf.on.event(GROUP, VERSION, plural, registry=registry)
        def on_runtime(name: str, **_: Any) -> None:
            # OME does not re-roll InferenceServices when a runtime changes; we do.
            op.enqueue_services_using(runtime=name)

    for group, version, plural in CHILDREN:

        @kopf.on.event(group, version, plural, labels=MANAGED, registry=registry)
        def on_child(body: Any, **_: Any) -> None:
            op.enqueue_owner_of(body)

    @kopf.on.event("", "v1", "nodes", registry=registry)
    def on_node(type: str | None, body: Any, **_: Any) -> None:
        # A new, removed or relabelled node may become (or stop being) a download target;
        # status-only updates (heartbeats) are ignored.
        name = body["metadata"]["name"]
        labels = None if type == "DELETED" else dict(body["metadata"].get("labels") or {})
        if op.node_labels.get(name) != labels:
            op.node_labels[name] = labels
            for key in list(op.models):
                op.queue.add(key, delay=1.0)

    return registry
