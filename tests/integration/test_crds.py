"""The generated CRDs against the real kube-apiserver: accepted, established, and enforcing.

The offline tests (tests/test_schema.py) restate the API server's rules; these prove them: the
server accepts the schemas as structural and compiles the CEL rules within its cost budget, OME's
reference objects and our catalog come back from a server-side dry run with nothing lost, and every
case of the offline tables is refused (or accepted) by the server at the same field path, with
kubectl's default strict field validation.
"""

from __future__ import annotations

import copy
import functools
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
from ome_operator.schema.crd import MAX_CRD_BYTES
from ome_operator.schema.files import json_size
from tests.test_schema import CEL_CASES, OPENAPI_CASES, Change

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO.parent / "shared" / "reference" / "ome"
if not REFERENCE.is_dir():
    REFERENCE = REPO / "tests" / "golden" / "kimi-k2-reference" / "input"
CRD_FILES = sorted((REPO / "crds").glob("*.yaml"))
NAMESPACED = ("BaseModel", "ServingRuntime", "InferenceService")


# The CRDs are megabytes of YAML: libyaml reads them three times faster than PyYAML.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def committed_crd(name: str) -> dict[str, Any]:
    crd: dict[str, Any] = yaml.load((REPO / "crds" / f"{name}.yaml").read_text(), Loader=LOADER)
    return crd


def crd_names() -> list[str]:
    return [path.name.removesuffix(".yaml") for path in CRD_FILES]


@pytest.fixture(scope="module")
def ome_crds(cluster: ClusterHandle) -> Iterator[ClusterHandle]:
    """The CRDs applied and Established; removed afterwards only if this module created them."""
    existing = set(cluster.kubectl("get", "crd", "-o", "name").stdout.split())
    created = [name for name in crd_names() if f"customresourcedefinition.apiextensions.k8s.io/{name}" not in existing]
    args = ["apply", "--server-side", "--force-conflicts", "--field-manager=ome-crd-test"]
    cluster.kubectl(*args, *(f"-f={path}" for path in CRD_FILES), timeout=120)
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
    for prefix, base in (("ome", REFERENCE), ("config", REPO / "config")):
        for path in sorted(base.rglob("*.y*ml")):
            for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
                if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("ome.io/"):
                    params.append(pytest.param(doc, id=f"{prefix}/{path.relative_to(base)}#{index}"))
    return params


def reference(kind: str) -> dict[str, Any]:
    for param in input_documents():
        if str(param.id).startswith("ome/") and param.values[0]["kind"] == kind:
            return copy.deepcopy(param.values[0])
    raise AssertionError(kind)


def dry_run_create(
    cluster: ClusterHandle, document: dict[str, Any], namespace: str, *, rename: bool = True
) -> subprocess.CompletedProcess[str]:
    """Create the object on the server without storing it (strict field validation, kubectl's default).

    A unique name keeps cluster-scoped objects from clashing with ones other tests created.
    """
    doc = copy.deepcopy(document)
    if rename:
        doc["metadata"]["name"] = f"crd-test-{uuid.uuid4().hex[:8]}"
    if doc["kind"] in NAMESPACED:
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


def differences(stored: Any, written: Any, path: str = "") -> tuple[list[str], list[tuple[str, Any]]]:
    """(paths written but not stored, (path, value) stored but not written)."""
    lost: list[str] = []
    added: list[tuple[str, Any]] = []
    if isinstance(stored, dict) and isinstance(written, dict):
        for key in written:
            if key not in stored:
                lost.append(f"{path}.{key}")
            else:
                sub_lost, sub_added = differences(stored[key], written[key], f"{path}.{key}")
                lost += sub_lost
                added += sub_added
        added += [(f"{path}.{key}", stored[key]) for key in stored if key not in written]
    elif isinstance(stored, list) and isinstance(written, list) and len(stored) == len(written):
        for index, (s, w) in enumerate(zip(stored, written, strict=True)):
            sub_lost, sub_added = differences(s, w, f"{path}[{index}]")
            lost += sub_lost
            added += sub_added
    elif stored != written:
        lost.append(f"{path} (changed to {stored!r})")
    return lost, added


@pytest.mark.parametrize("document", input_documents())
def test_input_applies_without_losing_a_field(
    ome_crds: ClusterHandle, namespace: str, document: dict[str, Any]
) -> None:
    proc = dry_run_create(ome_crds, document, namespace)
    assert proc.returncode == 0, proc.stderr
    stored = json.loads(proc.stdout)
    lost, added = differences(stored["spec"], document["spec"])
    assert lost == [], "the API server dropped or changed these fields"
    # The one default a CRD must carry: a list-map key that is not required (Kubernetes' own).
    assert all(path.endswith(".protocol") and value == "TCP" for path, value in added), added


def _case_params(cases: list[Any]) -> list[Any]:
    return [pytest.param(*case, id=f"{case[0]}-{case[1]}") for case in cases]


@pytest.mark.parametrize(("kind", "label", "change", "broken"), _case_params(CEL_CASES))
def test_the_api_server_enforces_every_cel_rule(
    ome_crds: ClusterHandle, namespace: str, kind: str, label: str, change: Change, broken: set[tuple[str, str]]
) -> None:
    doc = reference(kind)
    change(doc)
    proc = dry_run_create(
        ome_crds, doc, namespace, rename=doc["metadata"]["name"] == reference(kind)["metadata"]["name"]
    )
    if not broken:
        assert proc.returncode == 0, proc.stderr
        return
    assert proc.returncode != 0, "the API server accepted an object the offline checks refuse"
    for path, message in broken:
        assert f"{path}: Invalid value" in proc.stderr, proc.stderr
        assert message in proc.stderr, proc.stderr


@pytest.mark.parametrize(("kind", "label", "change", "path"), _case_params(OPENAPI_CASES))
def test_the_api_server_refuses_what_the_loader_refuses(
    ome_crds: ClusterHandle, namespace: str, kind: str, label: str, change: Change, path: str | None
) -> None:
    doc = reference(kind)
    change(doc)
    proc = dry_run_create(ome_crds, doc, namespace)
    if path is None:
        assert proc.returncode == 0, proc.stderr
        return
    assert proc.returncode != 0, "the API server accepted an object the offline loader refuses"
    # "unknown field" for strict field validation; "<path>: Invalid value", or "... in <path>" for
    # an int32 overflow, for the schema's value validations.
    named = (f'unknown field "{path}"', f"{path}: ", f"in {path}\n")
    assert any(text in proc.stderr for text in named), proc.stderr


def test_kubectl_apply_refuses_a_typo_naming_the_field(ome_crds: ClusterHandle, namespace: str) -> None:
    isvc = reference("InferenceService")
    isvc["metadata"].update(name="typo", namespace=namespace)
    isvc["spec"]["engin"] = isvc["spec"].pop("engine")
    proc = ome_crds.kubectl("apply", "-f", "-", stdin=json.dumps(isvc), check=False)
    assert proc.returncode != 0
    assert 'unknown field "spec.engin"' in proc.stderr, proc.stderr

    runtime = reference("ClusterServingRuntime")
    runtime["metadata"]["name"] = f"typo-{uuid.uuid4().hex[:8]}"
    leader = runtime["spec"]["engineConfig"]["leader"]["runner"]
    leader["imagee"] = leader.pop("image")
    proc = ome_crds.kubectl("apply", "-f", "-", stdin=json.dumps(runtime), check=False)
    assert proc.returncode != 0
    assert 'unknown field "spec.engineConfig.leader.runner.imagee"' in proc.stderr, proc.stderr


def test_inferenceservice_name_must_be_a_dns_1035_label(ome_crds: ClusterHandle, namespace: str) -> None:
    doc = reference("InferenceService")
    doc["metadata"].update(name="kimi.k2", namespace=namespace)
    proc = ome_crds.kubectl("create", "--dry-run=server", "-f", "-", stdin=json.dumps(doc), check=False)
    assert proc.returncode != 0
    assert "metadata.name: Invalid value" in proc.stderr and "must be a DNS-1035 label" in proc.stderr


def test_objects_round_trip_through_storage(ome_crds: ClusterHandle, namespace: str) -> None:
    # Stored and read back (not only a dry run): the Kimi K2 runtime keeps every field.
    runtime = reference("ClusterServingRuntime")
    runtime["metadata"]["name"] = f"crd-test-{uuid.uuid4().hex[:8]}"
    ome_crds.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(runtime))
    try:
        stored = json.loads(
            ome_crds.kubectl("get", "clusterservingruntime", runtime["metadata"]["name"], "-o", "json").stdout
        )
        lost, added = differences(stored["spec"], runtime["spec"])
        assert lost == []
        assert all(path.endswith(".protocol") for path, _ in added), added
    finally:
        ome_crds.kubectl("delete", "clusterservingruntime", runtime["metadata"]["name"], check=False)


def test_kubectl_get_isvc_shows_the_printer_columns(ome_crds: ClusterHandle, namespace: str) -> None:
    doc = reference("InferenceService")
    doc["metadata"].update(name="columns", namespace=namespace)
    ome_crds.kubectl("create", "-f", "-", stdin=json.dumps(doc))
    header = ome_crds.kubectl("get", "isvc", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "READY", "REASON", "URL", "MODEL", "RUNTIME", "GPUS", "AGE"]


def test_the_size_budget_is_what_the_api_server_stores(ome_crds: ClusterHandle) -> None:
    # A CRD as large as MAX_CRD_BYTES (the InferenceService CRD padded under another name) is
    # stored: the budget is what etcd accepts, not a guess.
    crd = copy.deepcopy(committed_crd("inferenceservices.ome.io"))
    suffix = uuid.uuid4().hex[:8]
    crd["metadata"]["name"] = f"budget{suffix}s.example.com"
    crd["spec"]["group"] = "example.com"
    crd["spec"]["names"] = {
        "kind": f"Budget{suffix}",
        "listKind": f"Budget{suffix}List",
        "plural": f"budget{suffix}s",
        "singular": f"budget{suffix}",
    }
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema["description"] = ""
    schema["description"] = "x" * (MAX_CRD_BYTES - json_size(crd))
    assert json_size(crd) == MAX_CRD_BYTES
    proc = ome_crds.kubectl("create", "-f", "-", stdin=json.dumps(crd), check=False, timeout=120)
    # Waited for: tearing a CRD this size down costs the API server seconds of CPU, which would
    # otherwise land on the next test.
    ome_crds.kubectl("delete", "crd", crd["metadata"]["name"], check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_client_side_apply_cannot_carry_the_big_crds(ome_crds: ClusterHandle) -> None:
    # Why the README says `kubectl apply --server-side -f crds/`: client-side apply copies the
    # object into an annotation, and annotations are capped at 256 KiB.
    proc = ome_crds.kubectl(
        "apply", "--dry-run=server", "-f", str(REPO / "crds" / "inferenceservices.ome.io.yaml"), check=False
    )
    assert proc.returncode != 0
    assert "Too long" in proc.stderr, proc.stderr


def test_helm_chart_renders_the_crds_with_the_keep_policy() -> None:
    helm = str(find_bin_dir() / "helm")
    chart = str(REPO / "charts" / "ome-crd")
    lint = subprocess.run([helm, "lint", chart], capture_output=True, text=True, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    rendered = subprocess.run([helm, "template", "ome-crd", chart], capture_output=True, text=True, check=True).stdout
    docs = [d for d in yaml.load_all(rendered, Loader=LOADER) if d]
    assert sorted(d["metadata"]["name"] for d in docs) == sorted(crd_names())
    assert all(d["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for d in docs)
    for doc in docs:
        plain = committed_crd(doc["metadata"]["name"])
        assert {**doc, "metadata": plain["metadata"]} == plain
