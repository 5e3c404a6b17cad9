"""The generated CRDs against the real kube-apiserver: accepted, established, and enforcing.

The offline tests (tests/test_schema.py) restate the API server's rules; these prove them: the
server accepts the schemas as structural and compiles the CEL rules within its cost budget, OME's
reference objects and our catalog come back from a server-side dry run with nothing pruned, and bad
objects are rejected with the CEL rule's own message.
"""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.cluster import find_bin_dir
from devtools.cluster_testing import ClusterHandle, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO.parent / "shared" / "reference" / "ome"
CRD_FILES = sorted((REPO / "crds").glob("*.yaml"))


def crd_names() -> list[str]:
    return [yaml.safe_load(path.read_text())["metadata"]["name"] for path in CRD_FILES]


@pytest.fixture(scope="module")
def ome_crds(cluster: ClusterHandle) -> Iterator[ClusterHandle]:
    """The CRDs applied and Established; removed afterwards only if this module created them."""
    existing = set(cluster.kubectl("get", "crd", "-o", "name").stdout.split())
    created = [name for name in crd_names() if f"customresourcedefinition.apiextensions.k8s.io/{name}" not in existing]
    args = ["apply", "--server-side", "--force-conflicts", "--field-manager=ome-crd-test"]
    cluster.kubectl(*args, *(f"-f={path}" for path in CRD_FILES))
    for name in crd_names():
        wait_for(
            lambda name=name: _established(cluster, name),
            timeout=30,
            what=f"CRD {name} Established",
        )
    yield cluster
    if created:
        cluster.kubectl("delete", "crd", "--wait=false", *created, check=False)


def _established(cluster: ClusterHandle, name: str) -> bool:
    crd = json.loads(cluster.kubectl("get", "crd", name, "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in crd.get("status", {}).get("conditions", [])}
    return conditions.get("Established") == "True" and conditions.get("NamesAccepted") == "True"


def input_documents() -> list[Any]:
    params = []
    for base in (REFERENCE, REPO / "config"):
        for path in sorted(base.rglob("*.y*ml")):
            for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
                if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("ome.io/"):
                    params.append(pytest.param(doc, id=f"{path.relative_to(base.parent)}#{index}"))
    return params


def dry_run_create(
    cluster: ClusterHandle, document: dict[str, Any], namespace: str
) -> subprocess.CompletedProcess[str]:
    """Create the object on the server without storing it; a unique name avoids clashing with other tests."""
    doc = copy.deepcopy(document)
    doc["metadata"]["name"] = f"crd-test-{uuid.uuid4().hex[:8]}"
    if doc["kind"] in ("BaseModel", "ServingRuntime", "InferenceService"):
        doc["metadata"]["namespace"] = namespace
    else:
        doc["metadata"].pop("namespace", None)
    # A CRD is served a moment after it is Established; retry only on "not found" for the kind.
    result: dict[str, subprocess.CompletedProcess[str]] = {}

    def attempt() -> bool:
        proc = cluster.kubectl(
            "create", "--dry-run=server", "-o", "json", "-f", "-", stdin=json.dumps(doc), check=False
        )
        result["proc"] = proc
        return "the server could not find the requested resource" not in proc.stderr

    wait_for(attempt, timeout=30, what=f"{doc['kind']} served")
    return result["proc"]


@pytest.fixture(scope="module")
def namespace(ome_crds: ClusterHandle) -> Iterator[str]:
    with ome_crds.temp_namespace("crds") as name:
        yield name


@pytest.mark.parametrize("document", input_documents())
def test_input_applies_without_losing_a_field(
    ome_crds: ClusterHandle, namespace: str, document: dict[str, Any]
) -> None:
    proc = dry_run_create(ome_crds, document, namespace)
    assert proc.returncode == 0, proc.stderr
    stored = json.loads(proc.stdout)
    # Exact equality: nothing pruned, nothing defaulted, quantities kept as written.
    assert stored["spec"] == document["spec"]


def reference(kind: str) -> dict[str, Any]:
    for param in input_documents():
        if str(param.id).startswith("ome/") and param.values[0]["kind"] == kind:
            return copy.deepcopy(param.values[0])
    raise AssertionError(kind)


def _without_engine(doc: dict[str, Any]) -> None:
    doc["spec"].pop("engine")


def _ftp_uri(doc: dict[str, Any]) -> None:
    doc["spec"]["storage"]["storageUri"] = "ftp://example/model"


def _relative_path(doc: dict[str, Any]) -> None:
    doc["spec"]["storage"]["path"] = "raid/models"


def _min_only(doc: dict[str, Any]) -> None:
    doc["spec"]["modelSizeRange"].pop("max")


def _negative_workers(doc: dict[str, Any]) -> None:
    doc["spec"]["engineConfig"]["worker"]["size"] = -1


BAD = [
    pytest.param("InferenceService", _without_engine, "a decoder requires an engine", id="decoder-without-engine"),
    pytest.param("ClusterBaseModel", _ftp_uri, "storageUri must start with one of hf://", id="ftp-storage-uri"),
    pytest.param("ClusterBaseModel", _relative_path, "storage.path must be an absolute path", id="relative-path"),
    pytest.param("ClusterServingRuntime", _min_only, "modelSizeRange needs both min and max", id="min-only"),
    pytest.param("ClusterServingRuntime", _negative_workers, "should be greater than or equal to 0", id="worker-size"),
]


@pytest.mark.parametrize(("kind", "change", "message"), BAD)
def test_bad_object_is_rejected_with_the_rule_message(
    ome_crds: ClusterHandle, namespace: str, kind: str, change: Any, message: str
) -> None:
    doc = reference(kind)
    change(doc)
    proc = dry_run_create(ome_crds, doc, namespace)
    assert proc.returncode != 0, "the API server accepted an invalid object"
    assert message in proc.stderr


def test_inferenceservice_name_must_be_a_dns_1035_label(ome_crds: ClusterHandle, namespace: str) -> None:
    doc = reference("InferenceService")
    doc["metadata"].update(name="kimi.k2", namespace=namespace)
    proc = ome_crds.kubectl("create", "--dry-run=server", "-f", "-", stdin=json.dumps(doc), check=False)
    assert proc.returncode != 0
    assert "name must be a DNS-1035 label" in proc.stderr


def test_kubectl_get_isvc_shows_the_printer_columns(ome_crds: ClusterHandle, namespace: str) -> None:
    doc = reference("InferenceService")
    doc["metadata"].update(name="columns", namespace=namespace)
    ome_crds.kubectl("create", "-f", "-", stdin=json.dumps(doc))
    header = ome_crds.kubectl("get", "isvc", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "READY", "REASON", "URL", "MODEL", "RUNTIME", "GPUS", "AGE"]


def test_helm_chart_renders_the_crds_with_the_keep_policy() -> None:
    helm = str(find_bin_dir() / "helm")
    chart = str(REPO / "charts" / "ome-crd")
    lint = subprocess.run([helm, "lint", chart], capture_output=True, text=True, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    rendered = subprocess.run([helm, "template", "ome-crd", chart], capture_output=True, text=True, check=True).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert sorted(d["metadata"]["name"] for d in docs) == sorted(crd_names())
    assert all(d["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for d in docs)
