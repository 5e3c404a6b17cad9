"""What a converged cluster looks like, reduced to what the campaign compares across runs.

A snapshot maps one key per object to what must be equal between an uninterrupted run and an
interrupted one: owner references, the rendered hash, condition types/status/reasons. Names that
carry random suffixes (a Deployment's pods) are folded into counts per owner, so two correct runs
give equal snapshots and a duplicate shows up as an extra key or a higher count.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ome_operator.api.model import PROGRESS_EXPECTED_KEY

from .env import ISVC, MODEL, NS, ChaosEnv

MANAGED = "app.kubernetes.io/managed-by=ome-operator"
NS_KINDS = (
    "statefulsets",
    "deployments",
    "services",
    "serviceaccounts",
    "roles",
    "rolebindings",
    "configmaps",
    "jobs",
    "roles",
    "rolebindings",
)
MODEL_LABEL_PREFIX = "models.ome.io/"
HASH_ANNOTATION = "ome.io/rendered-hash"
Snapshot = dict[str, Any]


def _owners(obj: dict[str, Any]) -> list[str]:
    refs = obj["metadata"].get("ownerReferences") or []
    return sorted(f"{r['kind']}/{r['name']}{'*' if r.get('controller') else ''}" for r in refs)


def _conditions(obj: dict[str, Any] | None) -> list[str]:
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    return sorted(f"{c['type']}={c.get('status')}/{c.get('reason', '')}" for c in conds)


def _live(obj: dict[str, Any]) -> bool:
    return not obj["metadata"].get("deletionTimestamp")


# Set by the API server or by controllers, so different between two correct runs.
SERVER_SET = {"clusterIP", "clusterIPs", "controller-uid", "batch.kubernetes.io/controller-uid", "selector"}


def _scrub(value: Any, uids: set[str]) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v, uids) for k, v in value.items() if k not in SERVER_SET}
    if isinstance(value, list):
        return [_scrub(v, uids) for v in value]
    if isinstance(value, str) and value in uids:
        return "<parent-uid>"
    return value


def content_digest(resource: str, obj: dict[str, Any], uids: set[str]) -> str:
    """What the operator rendered into the object, comparable across runs. The operator's own
    ome.io/rendered-hash covers the owner references' UIDs, which differ whenever the parents are
    recreated, so the campaign checks the annotation is there and compares the content itself."""
    body = {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}
    meta = obj["metadata"]
    # By the listed resource, not obj["kind"]: the items of a list answer carry no kind.
    if resource == "configmaps" and str(meta.get("name", "")).endswith("-download"):
        # A download progress ConfigMap: the Jobs write its data (progress, peer records, file
        # claims), different on every run; the operator renders only the list of expected nodes.
        data = body.pop("data", None) or {}
        if PROGRESS_EXPECTED_KEY in data:
            body["data"] = {PROGRESS_EXPECTED_KEY: data[PROGRESS_EXPECTED_KEY]}
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k not in SERVER_SET}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != HASH_ANNOTATION}
    annotations.pop("deprecated.daemonset.template.generation", None)
    annotations.pop("deployment.kubernetes.io/revision", None)
    scrubbed = _scrub({"body": body, "labels": labels, "annotations": annotations}, uids)
    return hashlib.sha256(json.dumps(scrubbed, sort_keys=True).encode()).hexdigest()[:12]


def take_snapshot(env: ChaosEnv) -> Snapshot:
    snap: Snapshot = {}
    uids = {
        o["metadata"]["uid"]
        for kind in ("inferenceservices", "clusterbasemodels", "clusterservingruntimes")
        for o in env.items(kind)
    }
    for kind in NS_KINDS:
        for obj in env.items(kind, selector=MANAGED):
            if not _live(obj):
                continue
            meta = obj["metadata"]
            snap[f"{kind}/{meta.get('namespace')}/{meta['name']}"] = {
                "owners": _owners(obj),
                "hash": bool((meta.get("annotations") or {}).get(HASH_ANNOTATION)),
                "content": content_digest(kind, obj, uids),
            }
    for obj in env.items("replicasets", NS):
        if _live(obj) and int(obj["spec"].get("replicas") or 0) > 0:
            snap[f"replicasets/{NS}/{obj['metadata']['name']}"] = {"owners": _owners(obj)}
    for pod in env.items("pods", NS):
        if not _live(pod):
            continue
        owners = _owners(pod)
        if any(o.startswith("ReplicaSet/") for o in owners):
            key = f"pods/{NS}/{owners[0]}:count"
            snap[key] = snap.get(key, 0) + 1
        else:
            phase = (pod.get("status") or {}).get("phase")
            snap[f"pods/{NS}/{pod['metadata']['name']}"] = {"owners": owners, "phase": phase}
    isvc = env.isvc()
    if isvc is not None:
        status = isvc.get("status") or {}
        snap[f"inferenceservice/{NS}/{ISVC}"] = {
            "conditions": _conditions(isvc),
            "finalizers": sorted(isvc["metadata"].get("finalizers") or []),
            "gpus": status.get("gpus"),
            "url": status.get("url"),
        }
    for model in env.items("clusterbasemodels", name=MODEL):
        status = model.get("status") or {}
        snap[f"clusterbasemodel/{MODEL}"] = {
            "conditions": _conditions(model),
            "state": status.get("state"),
            "nodes": status.get("nodesSummary"),
            "finalizers": sorted(model["metadata"].get("finalizers") or []),
        }
    labels = sorted(
        f"{node['metadata']['name']}:{key}={value}"
        for node in env.items("nodes")
        for key, value in (node["metadata"].get("labels") or {}).items()
        if key.startswith(MODEL_LABEL_PREFIX)
    )
    snap["node-labels"] = labels
    return snap


def compare(baseline: Snapshot, got: Snapshot) -> tuple[list[str], int]:
    """Differences (human-readable) and the number of duplicates among them (objects or pods that
    the uninterrupted run did not have)."""
    diffs: list[str] = []
    duplicates = 0
    for key in sorted(set(baseline) | set(got)):
        want, have = baseline.get(key), got.get(key)
        if want == have:
            continue
        if want is None:
            duplicates += have if isinstance(have, int) else 1
            diffs.append(f"extra {key}: {have}")
        elif have is None:
            diffs.append(f"missing {key}: {want}")
        else:
            if isinstance(want, int) and isinstance(have, int) and have > want:
                duplicates += have - want
            diffs.append(f"differs {key}: want {want} got {have}")
    return diffs, duplicates


def find_leaks(env: ChaosEnv) -> list[str]:
    """What an uninstall-free deletion must leave behind: nothing of ours anywhere."""
    leaks: list[str] = []
    for kind in ("statefulsets", "deployments", "services", "serviceaccounts", "configmaps", "jobs", "pods"):
        for obj in env.items(kind, selector=MANAGED):
            leaks.append(f"{kind}/{obj['metadata'].get('namespace')}/{obj['metadata']['name']}")
    for kind in ("roles", "rolebindings"):
        for obj in env.items(kind, selector=MANAGED):
            leaks.append(f"{kind}/{obj['metadata'].get('namespace')}/{obj['metadata']['name']}")
    for node in env.items("nodes"):
        for key in node["metadata"].get("labels") or {}:
            if key.startswith(MODEL_LABEL_PREFIX):
                leaks.append(f"node-label {node['metadata']['name']}:{key}")
    for kind in ("inferenceservices", "clusterbasemodels", "basemodels"):
        for obj in env.items(kind):
            fins = obj["metadata"].get("finalizers") or []
            leaks.append(f"{kind}/{obj['metadata']['name']} still present (finalizers {fins})")
    return leaks
