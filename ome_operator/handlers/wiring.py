"""kopf wiring only: every event becomes a key on the work queue; the queue calls reconcile.

kopf watches the parents (models, InferenceServices) and runs peering: it tells us which parents
this replica serves. Everything the reconcilers read comes from the watch-backed cache in kube/,
and the cache's events re-queue what they affect: a changed parent itself, a child's owner, the
InferenceServices of a changed runtime, the models on a relabelled node. Only parents kopf has
delivered are queued from cache events, so a standby replica (kopf paused by peering) reconciles
nothing, and a replica that pauses forgets them until kopf delivers them again.

No kopf handler needs a finalizer (no deletion handler, no kopf timer: the resync is ours), so
deleting a parent never waits for the operator, also when it is uninstalled. What a deletion
leaves behind is swept instead: node labels of models that no longer exist are removed by the
sweep that runs after every model deletion, at start-up and on every resync; children, Jobs and
their ConfigMaps go by owner references.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from ome_operator.api import GROUP, VERSION
from ome_operator.kube.client import ApiUnavailable, Kube
from ome_operator.kube.informer import Scope
from ome_operator.reconcile.isvc import reconcile_inference_service
from ome_operator.reconcile.model import ModelOutcome, reconcile_model
from ome_operator.reconcile.sweep import sweep_model_labels
from ome_operator.render import names
from ome_operator.render.context import Settings

from . import metrics
from .queue import WorkQueue

log = logging.getLogger(__name__)
Key = tuple[str, str | None, str]
MANAGED = {"app.kubernetes.io/managed-by": names.MANAGED_BY}
CHILD_KINDS = (
    "StatefulSet",
    "Deployment",
    "Service",
    "ServiceAccount",
    "ConfigMap",
    "Pod",
    "Job",
    "Role",
    "RoleBinding",
)
PARENT_KINDS = ("InferenceService", "ClusterBaseModel", "BaseModel")
MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={names.MANAGED_BY}"
# Children change in bursts (a StatefulSet's pods become Ready one by one): one pass per burst.
CHILD_DELAY = 0.1
# The node-label sweep: one key, so a burst of model deletions costs one sweep.
SWEEP: Key = ("NodeLabelSweep", None, "models")
SWEEP_DELAY = 1.0


def cache_scopes(namespaces: list[str], operator_namespace: str) -> list[Scope]:
    """What the cache holds: all parents and runtimes, all nodes, and only the children (and pods)
    carrying our managed-by label, selected by the API server, so other pods never reach us."""
    scopes = [Scope("ClusterBaseModel"), Scope("ClusterServingRuntime"), Scope("Node")]
    parent_namespaces: list[str | None] = list(namespaces) or [None]
    # With namespaces given, cluster-model download Jobs run in the operator's namespace too.
    child_namespaces: list[str | None] = [*sorted({*namespaces, operator_namespace})] if namespaces else [None]
    for ns in parent_namespaces:
        scopes += [Scope("InferenceService", ns), Scope("BaseModel", ns), Scope("ServingRuntime", ns)]
    for ns in child_namespaces:
        scopes += [Scope(kind, ns, MANAGED_SELECTOR) for kind in CHILD_KINDS]
    return scopes


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Operator:
    """The running operator's state: the client, settings, the queue, and what uses what."""

    kube: Kube
    settings: Settings
    resync_seconds: float = 60.0
    workers: int = 4
    namespaces: list[str] = field(default_factory=list)  # empty: all
    queue: WorkQueue = field(init=False)
    # Set while kopf says this replica acts (standalone, or not paused by peering).
    active: threading.Event = field(default_factory=threading.Event)
    passes: dict[Key, float] = field(default_factory=dict)  # running passes: key -> start (monotonic)
    uses: dict[Key, tuple[str | None, str | None]] = field(default_factory=dict)  # isvc -> (model, runtime)
    seen: set[Key] = field(default_factory=set)  # parents kopf delivered: the ones this replica serves
    models: set[Key] = field(default_factory=set)
    download_phases: dict[Key, dict[str, int]] = field(default_factory=dict)
    node_labels: dict[str, dict[str, str] | None] = field(default_factory=dict)
    node_ready: dict[str, str | None] = field(default_factory=dict)  # Ready condition status; None: deleted
    progress_series: dict[Key, set[tuple[str, str]]] = field(default_factory=dict)
    states: metrics.StateBook = field(default_factory=metrics.StateBook)
    now: Callable[[], str] = utc_now

    def __post_init__(self) -> None:
        self.queue = WorkQueue(self.reconcile_key, workers=self.workers)

    def reconcile_key(self, key: Hashable) -> None:
        kind, namespace, name = cast(Key, key)
        if not self.active.is_set():
            return  # paused by peering: kopf delivers every parent again when this replica resumes
        self.kube.wait_synced()  # a pass over a half-filled cache would report missing runtimes
        metrics.RECONCILES.labels(kind=kind).inc()
        self.passes[cast(Key, key)] = time.monotonic()
        with metrics.RECONCILE_SECONDS.labels(kind=kind).time():
            try:
                self._reconcile(kind, namespace, name)
            except ApiUnavailable as exc:
                # The API server is down or throttling, which the gate has said once: no traceback
                # per object, and the pass runs again once the gate opens (jittered, so the
                # objects do not all return at the same moment).
                metrics.RECONCILES_DEFERRED.labels(kind=kind).inc()
                log.debug("reconcile of %s deferred: %s", key, exc.reason)
                self.queue.add(key, max(1.0, exc.retry_in) * random.uniform(1.0, 1.5))
            except Exception:
                metrics.RECONCILE_ERRORS.labels(kind=kind).inc()
                raise
            finally:
                self.passes.pop(cast(Key, key), None)
                metrics.QUEUE_DEPTH.set(self.queue.pending())

    def running_passes(self) -> list[tuple[Key, float]]:
        return list(self.passes.items())

    # --- who acts: kopf's peering decides ------------------------------------------------
    def activate(self) -> None:
        if not self.active.is_set():
            self.active.set()
            self.queue.add(SWEEP, SWEEP_DELAY)

    def deactivate(self) -> None:
        """Stop acting on cache events; kopf delivers every parent again when it resumes."""
        self.active.clear()
        self.seen.clear()
        self.models.clear()

    def resync(self, stop: threading.Event) -> None:
        """Every resync period, each parent this replica serves is passed again (spread over the
        period's first half so they do not all run at once), and the node labels are swept."""
        while not stop.wait(self.resync_seconds):
            if not self.active.is_set():
                continue
            for key in list(self.seen):
                self.queue.add(key, random.uniform(0, self.resync_seconds / 2))
            self.queue.add(SWEEP, SWEEP_DELAY)

    def _reconcile(self, kind: str, namespace: str | None, name: str) -> None:
        key = (kind, namespace, name)
        if key == SWEEP:
            sweep_model_labels(self.kube, self.namespaces)
            return
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
            self.add_seen(("InferenceService", namespace, labels[names.LABEL_ISVC]), CHILD_DELAY)
        model = labels.get(names.LABEL_MODEL)
        if model:
            scope, _, model_name = model.partition(".")
            if scope == "cluster":
                self.add_seen(("ClusterBaseModel", None, model_name), CHILD_DELAY)
            else:
                self.add_seen(("BaseModel", scope, model_name), CHILD_DELAY)

    def add_seen(self, key: Key, delay: float | None = None) -> None:
        if key in self.seen:
            self.queue.add(key, delay)

    def on_cache_event(self, type: str, obj: Any) -> None:
        """Called from the cache's watch threads for every change it applies."""
        kind, meta = obj.get("kind"), obj["metadata"]
        if kind in PARENT_KINDS:
            key: Key = (kind, None if kind == "ClusterBaseModel" else meta.get("namespace"), meta["name"])
            self.add_seen(key)
            if kind == "InferenceService":
                self.enqueue_models_of(key, obj, type)
            else:
                self.enqueue_services_using(model=key[2])
            if type == "DELETED":
                self.seen.discard(key)
                self.models.discard(key)
                if kind != "InferenceService" and self.active.is_set():
                    self.queue.add(SWEEP, SWEEP_DELAY)
        elif kind in ("ClusterServingRuntime", "ServingRuntime"):
            # OME does not re-roll InferenceServices when a runtime changes; we do.
            self.enqueue_services_using(runtime=meta["name"])
        elif kind == "Node":
            # A new, removed or relabelled node may become (or stop being) a download target;
            # status-only updates (heartbeats) are ignored.
            labels = None if type == "DELETED" else dict(meta.get("labels") or {})
            if self.node_labels.get(meta["name"]) != labels:
                self.node_labels[meta["name"]] = labels
                for model_key in list(self.models):
                    self.queue.add(model_key, delay=1.0)
            self.enqueue_on_node_loss(type, obj)
        else:
            self.enqueue_owner_of(obj)

    def enqueue_on_node_loss(self, type: str, node: Any) -> None:
        """A deleted node, or one that stopped being Ready, may have taken pods of a group with it: the
        InferenceServices look again (a pass that sees a NotReady node schedules its own second look
        for when the grace has passed)."""
        name = node["metadata"]["name"]
        conditions = (node.get("status") or {}).get("conditions") or []
        ready = (
            None if type == "DELETED" else next((c.get("status") for c in conditions if c.get("type") == "Ready"), None)
        )
        before = self.node_ready.get(name, "True")
        self.node_ready[name] = ready
        if ready == before or (ready == "True" and before is not None):
            return
        for key in list(self.uses):
            self.queue.add(key, delay=1.0)

    def enqueue_models_of(self, key: Key, body: Any, type: str | None) -> None:
        """The model lists who uses it (condition InUse): let it see this InferenceService come and go."""
        model = ((body.get("spec") or {}).get("model") or {}).get("name")
        known = self.uses.get(key, (None, None))[0]
        # Status-only updates (most MODIFIED events) do not change who uses which model.
        if model and (type != "MODIFIED" or model != known):
            self.add_seen(("ClusterBaseModel", None, model))
            self.add_seen(("BaseModel", key[1], model))


def build_registry(op: Operator) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    def parent(plural: str, kind: str, namespaced: bool) -> None:
        def key_of(body: Any) -> Key:
            meta = body["metadata"]
            return (kind, meta.get("namespace") if namespaced else None, meta["name"])

        @kopf.on.event(GROUP, VERSION, plural, registry=registry)
        def on_event(body: Any, type: str | None, **_: Any) -> None:
            # The cache's own events drive the passes; kopf says which parents are ours, and
            # the first delivery (the cache may have listed the object before kopf did) queues it.
            key = key_of(body)
            if key in op.seen and type != "DELETED":
                return
            op.queue.add(key)
            if kind == "InferenceService":
                op.enqueue_models_of(key, body, type)
            else:
                op.enqueue_services_using(model=key[2])
            if type == "DELETED":
                op.seen.discard(key)
                op.models.discard(key)
                if kind != "InferenceService":
                    op.queue.add(SWEEP, SWEEP_DELAY)
            else:
                op.seen.add(key)
                if kind != "InferenceService":
                    op.models.add(key)

    parent("inferenceservices", "InferenceService", True)
    parent("clusterbasemodels", "ClusterBaseModel", False)
    parent("basemodels", "BaseModel", True)
    return registry
