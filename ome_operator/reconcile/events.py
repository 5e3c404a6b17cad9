"""Kubernetes Events for what a user should notice: Ready transitions, group restarts, failures."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ome_operator.kube.client import Kube
from ome_operator.render.names import short_hash

Obj = dict[str, Any]
COMPONENT = "ome-operator"


def record_event(kube: Kube, involved: Obj, event_type: str, reason: str, message: str) -> None:
    """Create an Event about `involved`; Events are advisory, so failures to record are ignored."""
    meta = involved["metadata"]
    namespace = meta.get("namespace") or "default"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    name = f"{meta['name']}.{short_hash(reason + message + now, 12)}"
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": meta["name"],
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        },
        "type": event_type,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "reportingComponent": COMPONENT,
    }
    try:
        kube.create(event)
    except Exception:  # an Event that cannot be recorded must not stop reconciliation
        return
