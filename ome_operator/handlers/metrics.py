"""Prometheus metrics of the operator (served on /metrics by prometheus-client)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("ome_reconcile_total", "Reconcile passes by kind.", ["kind"])
RECONCILE_ERRORS = Counter("ome_reconcile_errors_total", "Reconcile passes that failed, by kind.", ["kind"])
RECONCILE_SECONDS = Histogram(
    "ome_reconcile_duration_seconds",
    "Time of one reconcile pass, by kind.",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
OBJECTS = Gauge(
    "ome_objects", "Objects by kind and state (InferenceService: Ready status; models: state).", ["kind", "state"]
)
DOWNLOAD_JOBS = Gauge("ome_download_jobs", "Model download Jobs by phase.", ["phase"])
DOWNLOAD_COMPLETED_BYTES = Gauge(
    "ome_download_completed_bytes",
    "Bytes of a model verified on a node so far (its download Job's progress).",
    ["model", "node"],
)
DOWNLOAD_TOTAL_BYTES = Gauge(
    "ome_download_total_bytes", "Bytes of a model a node's download Job must hold.", ["model", "node"]
)
DOWNLOAD_SPEED = Gauge(
    "ome_download_speed_bytes_per_second", "Download throughput of a model on a node.", ["model", "node"]
)
QUEUE_DEPTH = Gauge("ome_work_queue_depth", "Objects waiting for or in a reconcile pass.")


class StateBook:
    """The last state of every object, turned into the OBJECTS gauge."""

    def __init__(self) -> None:
        self._states: dict[tuple[str, str], str] = {}

    def set(self, kind: str, key: str, state: str | None) -> None:
        if state is None:
            self._states.pop((kind, key), None)
        else:
            self._states[(kind, key)] = state
        counts: dict[tuple[str, str], int] = {}
        for (k, _), s in self._states.items():
            counts[(k, s)] = counts.get((k, s), 0) + 1
        OBJECTS.clear()
        for (k, s), n in counts.items():
            OBJECTS.labels(kind=k, state=s).set(n)


RECONCILES_DEFERRED = Counter(
    "ome_reconcile_deferred_total",
    "Reconcile passes put off because the API server was unavailable or throttling, by kind.",
    ["kind"],
)
