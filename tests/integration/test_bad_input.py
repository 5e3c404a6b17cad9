"""The bad-input campaign on the local cluster: refused at admission, or reported, never silently wrong.

A stratified sample of the generated invalid variants (tests/badinput/generate.py) is applied with
`kubectl apply` (strict field validation, kubectl's default). Each must be refused by the API server
with the field named, or be reported within 30 s by a condition that names the field. The operator
must stay up, log no traceback for bad input, and keep its traffic for objects it cannot serve low.
"""

from __future__ import annotations

import concurrent.futures
import copy
import datetime
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.cluster_testing import ClusterHandle
from devtools.operator import OPERATOR_USER, OperatorProcess, apply_crds, write_operator_kubeconfig
from tests.badinput.generate import Variant, variants

from .operator_env import running_operator

pytestmark = pytest.mark.integration
NS = "badinput"
SAMPLE = 200
REPORT_TIMEOUT = 30.0
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def operator(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    apply_crds(cluster)
    kubeconfig = write_operator_kubeconfig(cluster, tmp_path_factory.mktemp("bad-input") / "kubeconfig")
    log = tmp_path_factory.mktemp("bad-input-log") / "operator.log"
    cluster.kubectl("create", "namespace", NS, check=False)
    with running_operator(kubeconfig, log) as op:
        yield op
    cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def sample(all_variants: list[Variant]) -> list[Variant]:
    """Round-robin over the classes so the rare ones (cross-field, names, URIs) are all in."""
    rng = random.Random(20261201)
    by_class: dict[str, list[Variant]] = {}
    for variant in all_variants:
        by_class.setdefault(variant.klass, []).append(variant)
    for group in by_class.values():
        rng.shuffle(group)
    picked: list[Variant] = []
    while len(picked) < SAMPLE and any(by_class.values()):
        for klass in sorted(by_class):
            if by_class[klass] and len(picked) < SAMPLE:
                picked.append(by_class[klass].pop())
    return picked


def isolate(variant: Variant, index: int) -> list[Obj]:
    """The variant's three objects under names of their own, the model held on a single node."""
    model, runtime, isvc = (copy.deepcopy(d) for d in variant.docs)
    unique = f"bad-{index}"
    for doc in (model, runtime):
        if variant.klass != "bad-name" or doc["kind"] != variant.kind:
            doc["metadata"]["name"] = unique
    isvc["metadata"]["namespace"] = NS
    if variant.klass != "bad-name" or variant.kind != "InferenceService":
        isvc["metadata"]["name"] = unique
    spec = isvc.get("spec")
    if isinstance(spec, dict):
        if isinstance(spec.get("model"), dict) and spec["model"].get("name"):
            spec["model"]["name"] = model["metadata"]["name"]
        if isinstance(spec.get("runtime"), dict) and spec["runtime"].get("name"):
            spec["runtime"]["name"] = runtime["metadata"]["name"]
    storage = (model.get("spec") or {}).get("storage")
    if isinstance(storage, dict) and "nodeSelector" not in storage:
        storage["nodeSelector"] = {"kubernetes.io/hostname": "h200-000"}
    return [model, runtime, isvc]


def names_field(text: str, path: str) -> bool:
    """The answer names the field: its full path, or (for the API server's wording) its last segment."""
    last = path.rsplit(".", 1)[-1].split("[", 1)[0]
    return path in text or (f'"{last}"' in text or f".{last}" in text or f"{last}:" in text)


def reported(cluster: ClusterHandle, docs: list[Obj], path: str) -> str | None:
    """The first condition message, on the InferenceService or the model, that names the field."""
    model, _, isvc = docs
    targets = [
        ("inferenceservice", isvc["metadata"]["name"], NS),
        ("clusterbasemodel", model["metadata"]["name"], None),
    ]
    for kind, name, namespace in targets:
        args = ["get", kind, name] + (["-n", namespace] if namespace else [])
        result = cluster.kubectl(*args, "-o", "json", check=False)
        if result.returncode != 0:
            continue
        obj = yaml.safe_load(result.stdout)
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond.get("status") != "True" and names_field(str(cond.get("message", "")), path):
                return f"{kind} {cond['type']}={cond['status']} {cond.get('reason')}: {cond.get('message')}"
    return None


def delete(cluster: ClusterHandle, docs: list[Obj]) -> None:
    model, runtime, isvc = docs
    cluster.kubectl("delete", "inferenceservice", isvc["metadata"]["name"], "-n", NS, "--wait=false", check=False)
    cluster.kubectl("delete", "clusterservingruntime", runtime["metadata"]["name"], "--wait=false", check=False)
    cluster.kubectl("delete", "clusterbasemodel", model["metadata"]["name"], "--wait=false", check=False)


def operator_requests(cluster: ClusterHandle, since: str, names: set[str]) -> int:
    count = 0
    for event in cluster.audit_events():
        if event.get("stage") != "ResponseComplete" or event.get("user", {}).get("username") != OPERATOR_USER:
            continue
        if event.get("requestReceivedTimestamp", "") >= since and event.get("objectRef", {}).get("name") in names:
            count += 1
    return count


def try_variant(cluster: ClusterHandle, variant: Variant, index: int) -> tuple[str, str, list[Obj] | None]:
    """(outcome, what was wrong or "", the objects when they were accepted and reported)."""
    docs = isolate(variant, index)
    result = cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs), check=False)
    if result.returncode != 0:
        delete(cluster, docs)
        if names_field(result.stderr, variant.path):
            return "rejected at admission", "", None
        return (
            "rejected, field not named",
            f"{variant.case}: refused without naming the field: {result.stderr[:300]}",
            None,
        )
    deadline = time.monotonic() + REPORT_TIMEOUT
    while time.monotonic() < deadline:
        if reported(cluster, docs, variant.path) is not None:
            return "reported in status", "", docs
        time.sleep(0.5)
    delete(cluster, docs)
    return "silently wrong", f"{variant.case}: accepted and never reported", None


def test_every_sampled_variant_is_refused_or_reported(
    cluster: ClusterHandle, operator: OperatorProcess, tmp_path: Path
) -> None:
    picked = sample(variants())
    assert len(picked) >= SAMPLE
    outcomes: Counter[str] = Counter()
    wrong: list[str] = []
    kept: list[list[Obj]] = []  # accepted and reported: left in place to measure the operator's traffic
    # kubectl round trips dominate; a few at a time keep the run short without loading the API server much.
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(try_variant, cluster, v, i) for i, v in enumerate(picked)]
        for future in futures:
            outcome, problem, docs = future.result()
            outcomes[outcome] += 1
            if problem:
                wrong.append(problem)
            if docs is not None:
                kept.append(docs)
    assert operator.proc is not None and operator.proc.poll() is None, "the operator died"

    # Traffic for objects the operator cannot serve, over a minute of idling (resync every 20 s here).
    since = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    time.sleep(60)
    names = {d["metadata"]["name"] for docs in kept for d in docs}
    per_object = operator_requests(cluster, since, names) / max(1, len(kept))
    for docs in kept:
        delete(cluster, docs)

    log = operator.log_path.read_text()
    print(
        f"\nbad-input campaign (cluster): tried {len(picked)}; {dict(outcomes)}; "
        f"{len(kept)} reported objects cost {per_object:.1f} requests per object per minute"
    )
    assert "Traceback" not in log, "the operator logged a traceback for bad input"
    assert wrong == [], f"{len(wrong)} variants silently wrong:\n" + "\n".join(wrong[:40])
    assert per_object <= 10, f"{per_object:.1f} requests per minute for an object the operator cannot serve"
