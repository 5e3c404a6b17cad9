"""The generated CRDs: no drift, structural, typed, bounded, within budget, and faithful to the inputs.

Pure: no cluster. The API server's own verdict comes from tests/integration/test_crds.py. Every
admission rule is checked both ways here: the CRD (OpenAPI keywords through `check_object`, CEL
rules through cel-python) and the offline loader (`parse_object`) must refuse the same objects at
the same field paths, and accept the same objects.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import functools
import gzip
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import celpy
import pydantic
import pytest
import yaml

from ome_operator.api import KINDS
from ome_operator.api.base import (
    K8S_REFINEMENTS,
    K8sObject,
    OmeModel,
    Quantity,
    Resource,
    Unstructured,
    class_rules,
    desc,
    embedded_definition,
    kubernetes_definitions,
)
from ome_operator.api.limits import MAX_REPLICAS, MAX_WORKER_SIZE
from ome_operator.api.load import check_rules, parse_object
from ome_operator.api.pod import NON_POD_KEYS
from ome_operator.schema import (
    MAX_CRD_BYTES,
    SchemaError,
    check_object,
    custom_resource_definition,
    drift,
    generated_files,
    openapi_schema,
    structural_problems,
)
from ome_operator.schema.crd import CLIENT_SIDE_APPLY_LIMIT, ETCD_MAX_REQUEST_BYTES
from ome_operator.schema.files import CRD_DIR, FIX_COMMAND, HEADER, TEMPLATE_DIR, json_size
from ome_operator.schema.kubernetes import (
    KUBERNETES_VERSION,
    VENDOR_COMMAND,
    find_source,
    referenced_definitions,
    vendored_path,
    vendoring_drift,
)
from ome_operator.schema.openapi import kubernetes_paths

REPO = Path(__file__).resolve().parents[1]
# OME's own files; a clone without ../shared beside it uses the byte-identical golden copies.
REFERENCE = REPO.parent / "shared" / "reference" / "ome"
if not REFERENCE.is_dir():
    REFERENCE = REPO / "tests" / "golden" / "kimi-k2-reference" / "input"
PLURALS = ["clusterbasemodels", "basemodels", "clusterservingruntimes", "servingruntimes", "inferenceservices"]
INT32 = 2**31 - 1


def load_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@functools.cache
def committed_crds() -> dict[str, dict[str, Any]]:
    """kind -> the CRD as committed under crds/ (tests must not modify it)."""
    crds = {}
    for path in sorted((REPO / CRD_DIR).glob("*.yaml")):
        crd = load_yaml(path)
        crds[crd["spec"]["names"]["kind"]] = crd
    return crds


def root_schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = committed_crds()[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


@functools.cache
def k8s_paths(kind: str) -> frozenset[str]:
    return frozenset(kubernetes_paths(KINDS[kind]))


def input_documents() -> Iterator[Any]:
    """Every ome.io document in OME's reference files and our config/ catalog, as written."""
    for prefix, base in (("ome", REFERENCE), ("config", REPO / "config")):
        for path in sorted(base.rglob("*.y*ml")):
            for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
                if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("ome.io/"):
                    label = f"{prefix}/{path.relative_to(base)}#{index}"
                    yield pytest.param(doc, id=label)


def walk_properties(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, schema) of every declared property, through arrays and maps."""
    for name, child in (schema.get("properties") or {}).items():
        yield f"{path}.{name}", child
        yield from walk_properties(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk_properties(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk_properties(schema["additionalProperties"], f"{path}{{}}")


def own_nodes(kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every property declared by our API models (not inlined from a Kubernetes definition)."""
    return ((path, node) for path, node in walk_properties(root_schema(kind)) if path not in k8s_paths(kind))


# --- the committed files ---------------------------------------------------------------------------------------------


@functools.cache
def fresh_files() -> dict[Path, str]:
    return generated_files()


def test_committed_files_match_the_api_models() -> None:
    problems = drift(REPO)
    assert not problems, (
        "the generated CRDs are out of date with ome_operator/api:\n  "
        + "\n  ".join(problems)
        + f"\nrun `{FIX_COMMAND}` and commit crds/ and charts/ome-crd/"
    )


def test_vendored_kubernetes_definitions_match_the_pinned_release() -> None:
    source = find_source()
    if source is None:
        pytest.skip(f"k8s.io/kubernetes@{KUBERNETES_VERSION} is not in the Go module cache (make cluster-bins)")
    assert vendoring_drift(source) == [], f"run `{VENDOR_COMMAND}` and commit {vendored_path().name}"


def test_vendored_definitions_are_exactly_what_the_api_names() -> None:
    # Offline half of the drift check: a K8s(...) naming a definition that was never vendored, or
    # a definition left behind by a removed field, fails without the Kubernetes sources.
    definitions = kubernetes_definitions()
    reachable: set[str] = set()
    pending = sorted(referenced_definitions())
    while pending:
        name = pending.pop()
        assert name in definitions, f"{name} is not vendored: run `{VENDOR_COMMAND}`"
        if name not in reachable:
            reachable.add(name)
            pending.extend(re.findall(r'"\$ref": "([^"]+)"', json.dumps(definitions[name])))
    assert reachable == set(definitions)


def test_pinned_kubernetes_version_is_the_one_the_cluster_runs() -> None:
    script = (REPO / "hack" / "build-cluster-bins.sh").read_text()
    assert f"KUBE_VERSION=${{KUBE_VERSION:-{KUBERNETES_VERSION}}}" in script
    assert json.loads(vendored_path().read_text())["kubernetesVersion"] == KUBERNETES_VERSION


def test_one_crd_per_kind_in_both_places() -> None:
    names = sorted(f"{plural}.ome.io.yaml" for plural in PLURALS)
    assert sorted(p.name for p in (REPO / CRD_DIR).glob("*.yaml")) == names
    assert sorted(p.name for p in (REPO / TEMPLATE_DIR).glob("*.yaml")) == names
    for path, text in fresh_files().items():
        assert text.startswith(HEADER), path


def test_generation_is_deterministic() -> None:
    assert generated_files() == fresh_files()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_crd_is_within_the_size_budget(kind: str) -> None:
    size = json_size(committed_crds()[kind])
    assert size <= MAX_CRD_BYTES, f"{kind}: {size} bytes of JSON > {MAX_CRD_BYTES}"


def test_the_budget_is_what_the_api_server_stores() -> None:
    # etcd refuses a larger request; the margin holds managedFields, status and the Helm annotation.
    assert MAX_CRD_BYTES <= ETCD_MAX_REQUEST_BYTES - 64 * 1024


def test_runtime_and_inferenceservice_crds_need_server_side_apply() -> None:
    # Recorded so a change of size is a decision: these exceed client-side apply's annotation
    # limit, so the README says `kubectl apply --server-side -f crds/` (helm is unaffected).
    too_big = sorted(kind for kind, crd in committed_crds().items() if json_size(crd) > CLIENT_SIDE_APPLY_LIMIT)
    assert too_big == ["ClusterServingRuntime", "InferenceService", "ServingRuntime"]


def test_the_helm_release_fits_in_its_secret() -> None:
    # Helm stores a release as base64(gzip(JSON)) in one Secret (at most 1 MiB of data), with every
    # template base64-encoded inside the JSON and the rendered manifest beside them.
    templates = [text for path, text in fresh_files().items() if path.parent == TEMPLATE_DIR]
    release = json.dumps(
        {
            "chart": {"templates": [{"data": base64.b64encode(t.encode()).decode()} for t in templates]},
            "manifest": "\n---\n".join(templates),
        }
    )
    stored = len(base64.b64encode(gzip.compress(release.encode())))
    assert stored < 1024 * 1024 * 3 // 4, f"{stored} bytes: the ome-crd release would crowd its Secret's 1 MiB"


def test_helm_chart_keeps_crds_on_uninstall() -> None:
    chart = yaml.safe_load((REPO / "charts/ome-crd/Chart.yaml").read_text())
    assert (chart["name"], chart["version"], chart["appVersion"], chart["apiVersion"]) == (
        "ome-crd",
        "0.1.0",
        "0.1.0",
        "v2",
    )
    assert chart["description"]
    assert yaml.safe_load((REPO / "charts/ome-crd/values.yaml").read_text()) == {}
    for path in sorted((REPO / TEMPLATE_DIR).glob("*.yaml")):
        # The templates are JSON after the header comment (YAML reads them too, more slowly).
        header, body = path.read_text().split("\n", 1)
        assert f"{header}\n" == HEADER
        template = json.loads(body)
        assert template["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}, path.name
        plain = committed_crds()[template["spec"]["names"]["kind"]]
        assert {**template, "metadata": plain["metadata"]} == plain, "chart and crds/ differ beyond the annotation"


# --- CRD shape -------------------------------------------------------------------------------------------------------


def test_names_scopes_and_versions() -> None:
    crds = committed_crds()
    expected_scope = {
        "ClusterBaseModel": "Cluster",
        "BaseModel": "Namespaced",
        "ClusterServingRuntime": "Cluster",
        "ServingRuntime": "Namespaced",
        "InferenceService": "Namespaced",
    }
    assert sorted(crds) == sorted(expected_scope)
    for kind, crd in crds.items():
        spec = crd["spec"]
        assert spec["group"] == "ome.io"
        assert spec["scope"] == expected_scope[kind]
        assert spec["names"]["kind"] == kind
        assert spec["names"]["listKind"] == f"{kind}List"
        assert spec["names"]["singular"] == kind.lower()
        assert crd["metadata"]["name"] == f"{spec['names']['plural']}.ome.io"
        assert "ome" in spec["names"]["categories"]
        [version] = spec["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1beta1", True, True)
    assert crds["InferenceService"]["spec"]["names"]["shortNames"] == ["isvc"]


def test_status_subresource_where_the_operator_writes_status() -> None:
    crds = committed_crds()
    for kind in ("ClusterBaseModel", "BaseModel", "InferenceService"):
        assert crds[kind]["spec"]["versions"][0]["subresources"] == {"status": {}}, kind


def printer_columns(kind: str) -> dict[str, dict[str, Any]]:
    version = committed_crds()[kind]["spec"]["versions"][0]
    return {column["name"]: column for column in version["additionalPrinterColumns"]}


def test_inferenceservice_printer_columns_say_whether_it_is_up_and_why_not() -> None:
    columns = printer_columns("InferenceService")
    assert list(columns) == ["Ready", "Reason", "URL", "Model", "Runtime", "GPUs", "Age"]
    assert columns["Ready"]["jsonPath"] == ".status.conditions[?(@.type=='Ready')].status"
    assert columns["Reason"]["jsonPath"] == ".status.conditions[?(@.type=='Ready')].reason"
    assert columns["GPUs"]["type"] == "integer"
    assert columns["Age"]["type"] == "date"


@pytest.mark.parametrize("kind", ["ClusterBaseModel", "BaseModel"])
def test_model_printer_columns(kind: str) -> None:
    columns = printer_columns(kind)
    for name in ("State", "Ready", "Size", "Architecture", "Progress", "Age"):
        assert name in columns, name


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_printer_columns_point_at_declared_fields(kind: str) -> None:
    # A column pointing at an undeclared field would stay empty forever.
    for column in printer_columns(kind).values():
        path = re.sub(r"\[[^\]]*\]", "[]", column["jsonPath"])
        if path.startswith(".metadata."):
            continue
        node = root_schema(kind)
        for part in path.lstrip(".").split("."):
            name = part.removesuffix("[]")
            assert name in node.get("properties", {}), f"{column['name']}: {column['jsonPath']}"
            node = node["properties"][name]
            if part.endswith("[]"):
                node = node["items"]


def rules_at(kind: str) -> dict[str, list[dict[str, str]]]:
    """Schema path -> the CEL rules on that node."""
    found = {"": root_schema(kind).get("x-kubernetes-validations", [])}
    for path, node in walk_properties(root_schema(kind)):
        if node.get("x-kubernetes-validations"):
            found[path] = node["x-kubernetes-validations"]
    return {path: rules for path, rules in found.items() if rules}


def test_cel_rules_sit_where_they_apply() -> None:
    component_rule = "self.minReplicas <= self.maxReplicas"
    isvc = rules_at("InferenceService")
    assert [r["fieldPath"] for r in isvc[""]] == [".metadata.name"]
    assert [r["fieldPath"] for r in isvc[".spec"]] == [".engine", ".decoder", ".router", ".model"]
    for component in ("engine", "decoder", "router", "predictor"):
        assert any(component_rule in r["rule"] for r in isvc[f".spec.{component}"]), component
    runtime = rules_at("ClusterServingRuntime")
    for component in ("engineConfig", "decoderConfig", "routerConfig"):
        assert any(component_rule in r["rule"] for r in runtime[f".spec.{component}"]), component
    assert "has(self.min) == has(self.max)" in runtime[".spec.modelSizeRange"][0]["rule"]
    storage = rules_at("ClusterBaseModel")[".spec.storage"]
    assert [r["fieldPath"] for r in storage] == [".storageUri", ".path", ".path"]
    assert "^(hf|local|pvc|s3|oci|gs|az)://" in storage[0]["rule"]
    for scheme in ("hf", "local", "pvc", "oci", "s3", "gs", "az"):
        assert f"{scheme}://" in storage[0]["message"], "the message names every accepted form"


def test_every_cel_rule_has_a_message_and_a_field_path_when_it_names_a_field() -> None:
    for kind in KINDS:
        for path, rules in rules_at(kind).items():
            for rule in rules:
                assert rule["message"] and "\n" not in rule["message"], (kind, path)
                if path != ".spec.modelSizeRange":
                    assert rule["fieldPath"].startswith("."), (kind, path, rule)


def test_namespaced_kinds_share_the_cluster_kinds_schema() -> None:
    for namespaced, cluster in (("BaseModel", "ClusterBaseModel"), ("ServingRuntime", "ClusterServingRuntime")):
        assert root_schema(namespaced)["properties"]["spec"] == root_schema(cluster)["properties"]["spec"]


# --- structural, typed, described, bounded ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_schema_is_structural(kind: str) -> None:
    assert structural_problems(root_schema(kind)) == []


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}}, "$ref"),
        ({"type": "object", "properties": {"a": {"description": "x"}}}, "no type"),
        ({"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}, "anyOf"),
        (
            {"type": "object", "properties": {"a": {"type": "object", "properties": {}, "additionalProperties": {}}}},
            "beside properties",
        ),
        ({"type": "object", "properties": {"a": {"type": "array"}}}, "without items"),
        ({"type": "object", "properties": {"metadata": {"type": "object", "description": "m"}}}, "metadata"),
        ({"type": "object", "additionalProperties": {"type": "string"}}, "root"),
        (
            {
                "type": "object",
                "properties": {
                    "a": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["k"],
                        "items": {"type": "object", "properties": {"k": {"type": "string"}}},
                    }
                },
            },
            "must be required or have a default",
        ),
    ],
)
def test_structural_checker_catches_what_the_api_server_rejects(schema: dict[str, Any], problem: str) -> None:
    problems = structural_problems(schema)
    assert any(problem in p for p in problems), problems


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_field_is_typed(kind: str) -> None:
    # Only OME's raw-JSON field keeps unknown content; everything else, Kubernetes types included,
    # is declared field by field.
    free_form = sorted(
        path for path, node in walk_properties(root_schema(kind)) if node.get("x-kubernetes-preserve-unknown-fields")
    )
    assert free_form == ([".spec.modelConfiguration"] if kind.endswith("BaseModel") else [])
    assert "x-kubernetes-preserve-unknown-fields" not in root_schema(kind), "the envelope must prune"


def test_kubernetes_types_are_inlined_as_kubernetes_declares_them() -> None:
    spec = root_schema("ClusterServingRuntime")["properties"]["spec"]["properties"]
    leader = spec["engineConfig"]["properties"]["leader"]["properties"]
    for name in ("hostAliases", "affinity", "tolerations", "securityContext", "volumes", "initContainers", "os"):
        assert name in leader, name
    runner = leader["runner"]["properties"]
    for name in ("livenessProbe", "lifecycle", "securityContext", "envFrom", "volumeMounts", "resizePolicy"):
        assert name in runner, name
    assert "required" not in leader["runner"], "a runner's name is optional (it defaults to ome-container)"
    assert leader["containers"]["items"]["required"] == ["name"]
    assert "containers" not in spec["engineConfig"].get("required", [])
    ports = runner["ports"]
    assert (ports["x-kubernetes-list-type"], ports["x-kubernetes-list-map-keys"]) == (
        "map",
        ["containerPort", "protocol"],
    )
    assert ports["items"]["properties"]["protocol"]["default"] == "TCP", "a list-map key that is not required"
    assert ports["items"]["properties"]["containerPort"] | {} == {"type": "integer", "format": "int32"} | {
        "minimum": 1,
        "maximum": 65535,
    }
    probe_port = runner["livenessProbe"]["properties"]["httpGet"]["properties"]["port"]
    assert probe_port == {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}
    gpus = runner["resources"]["properties"]["limits"]["additionalProperties"]
    assert gpus["x-kubernetes-int-or-string"] and gpus["minimum"] == 0 and gpus["pattern"].startswith("^\\+?")
    template = leader["volumes"]["items"]["properties"]["ephemeral"]["properties"]["volumeClaimTemplate"]
    assert sorted(template["properties"]["metadata"]["properties"]) == ["annotations", "labels"]
    # OME's ServingRuntimePodSpec: only its subset of PodSpec at the runtime's top level.
    assert "hostAliases" not in spec and {"containers", "volumes", "tolerations", "labels"} <= set(spec)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_property_we_declare_has_a_description(kind: str) -> None:
    # Kubernetes' own nodes carry none: their descriptions would triple every CRD's size.
    assert root_schema(kind)["description"]
    missing = [path for path, node in own_nodes(kind) if not node.get("description") and path != ".metadata"]
    assert not missing, f"properties without a description: {missing}"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_integer_has_bounds(kind: str) -> None:
    unbounded = []
    for path, node in walk_properties(root_schema(kind)):
        if node.get("type") != "integer":
            continue
        if path in k8s_paths(kind):
            # Kubernetes' integers are int32 or int64 (the API server enforces the range).
            if node.get("format") not in ("int32", "int64"):
                unbounded.append(path)
        elif "minimum" not in node or ("maximum" not in node and node.get("format") != "int64"):
            unbounded.append(path)
        # The API server reads bounds as float64: larger ones are not exact integers.
        assert node.get("maximum", 0) <= 2**53, path
    assert unbounded == []


def test_documented_maximums() -> None:
    engine = root_schema("InferenceService")["properties"]["spec"]["properties"]["engine"]["properties"]
    assert (engine["minReplicas"]["minimum"], engine["minReplicas"]["maximum"]) == (0, MAX_REPLICAS)
    assert (engine["maxReplicas"]["minimum"], engine["maxReplicas"]["maximum"]) == (0, MAX_REPLICAS)
    assert engine["worker"]["properties"]["size"]["maximum"] == MAX_WORKER_SIZE
    assert engine["scaleTarget"]["minimum"] == 1
    assert engine["scaleMetric"]["enum"] == ["cpu", "memory", "concurrency", "rps", "tps"]


def test_kubernetes_refinements_name_existing_fields() -> None:
    for name, prop in K8S_REFINEMENTS:
        assert name in kubernetes_definitions()
        assert prop is None or prop in kubernetes_definitions()[name]["properties"]


# --- the models behind the schema ------------------------------------------------------------------------------------


def api_models() -> set[type[OmeModel]]:
    seen: set[type[OmeModel]] = set()
    pending: list[type[OmeModel]] = list(KINDS.values())
    while pending:
        cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        for info in cls.model_fields.values():
            pending.extend(t for t in _model_types(info.annotation) if t not in seen)
    return seen


def _model_types(annotation: Any) -> Iterator[type[OmeModel]]:
    if isinstance(annotation, type) and issubclass(annotation, OmeModel):
        yield annotation
    for arg in getattr(annotation, "__args__", ()):
        yield from _model_types(arg)


def test_every_model_is_closed_except_the_kubernetes_views() -> None:
    for cls in api_models():
        extra = cls.model_config.get("extra")
        if issubclass(cls, K8sObject) or cls.__name__ == "ObjectMeta":
            assert extra == "allow", cls
        else:
            assert extra == "forbid", cls
        assert cls.model_config.get("strict") is True, cls


def test_kubernetes_views_declare_only_fields_of_their_definition() -> None:
    # A declared field the definition lacks would be an OME field; these are the only ones.
    for cls in api_models():
        if issubclass(cls, K8sObject):
            properties = embedded_definition(cls.k8s.definition)["properties"]
            declared = {info.alias or name for name, info in cls.model_fields.items()}
            own = set(cls.own_fields().values())
            assert declared - own <= set(properties), cls
            assert not own & set(properties), cls


def test_non_pod_keys_are_the_fields_components_add_to_the_pod_spec() -> None:
    from ome_operator.api.inferenceservice import PredictorSpec, PredictorWorker
    from ome_operator.api.runtime import ComponentSpec, LeaderSpec, RouterSpec, WorkerSpec

    added: set[str] = set()
    for cls in (ComponentSpec, RouterSpec, LeaderSpec, WorkerSpec, PredictorSpec, PredictorWorker):
        added |= set(cls.own_fields().values())
    assert added == set(NON_POD_KEYS)


# --- inputs apply unchanged ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("document", list(input_documents()))
def test_input_validates_and_nothing_is_pruned(document: dict[str, Any]) -> None:
    result = check_object(document, root_schema(document["kind"]))
    assert result.errors == [], "the API server would reject this object"
    assert result.pruned == [], "the API server would silently drop these fields"
    obj, problems = parse_object(document)
    assert problems == [] and obj is not None
    assert obj.to_dict() == document


def test_reference_inputs_were_found() -> None:
    # Guards the parametrized test above against passing vacuously on a moved reference directory.
    reference = sorted(p.values[0]["kind"] for p in input_documents() if str(p.id).startswith("ome/"))
    assert reference == ["ClusterBaseModel", "ClusterServingRuntime", "InferenceService"]


# --- every admission check, both ways --------------------------------------------------------------------------------


def reference(kind: str) -> dict[str, Any]:
    for param in input_documents():
        doc: dict[str, Any] = param.values[0]
        if str(param.id).startswith("ome/") and doc["kind"] == kind:
            return copy.deepcopy(doc)
    raise AssertionError(kind)


def cel_failures(document: dict[str, Any]) -> set[tuple[str, str]]:
    """(path, message) of every CEL rule the object breaks, each evaluated on its node as the API server does."""
    failed: set[tuple[str, str]] = set()
    _cel_walk(document, root_schema(document["kind"]), "", failed)
    return failed


def _cel_walk(value: Any, schema: dict[str, Any], path: str, failed: set[tuple[str, str]]) -> None:
    env = celpy.Environment()
    for rule in schema.get("x-kubernetes-validations", []):
        result = env.program(env.compile(rule["rule"])).evaluate({"self": celpy.json_to_cel(value)})
        assert not isinstance(result, celpy.CELEvalError), f"{rule['rule']}: {result}"
        if not result:
            field = rule.get("fieldPath", "").lstrip(".")
            failed.add((f"{path}.{field}".strip(".") if field else path, rule["message"]))
    if isinstance(value, dict):
        for key, child in value.items():
            if key in (schema.get("properties") or {}):
                _cel_walk(child, schema["properties"][key], f"{path}.{key}".lstrip("."), failed)
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            _cel_walk(item, schema["items"], f"{path}[{index}]", failed)


def rule_messages() -> set[str]:
    return {rule.message for cls in api_models() for rule in class_rules(cls)}


def python_failures(document: dict[str, Any]) -> set[tuple[str, str]]:
    obj, problems = parse_object(document)
    assert obj is not None, problems
    return {(p.path, p.reason) for p in check_rules(obj) if p.reason in rule_messages()}


Change = Callable[[dict[str, Any]], Any]


def set_path(path: str, value: Any) -> Change:
    """A change that sets `a.b[0].c` (creating mappings on the way); a value of DELETE removes it."""

    def change(doc: dict[str, Any]) -> None:
        parts = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]
        node: Any = doc
        for part in parts[:-1]:
            node = node[part] if isinstance(part, int) else node.setdefault(part, {})
        if value is DELETE:
            node.pop(parts[-1])
        else:
            node[parts[-1]] = value

    return change


DELETE = object()


def both(*changes: Change) -> Change:
    def change(doc: dict[str, Any]) -> None:
        for c in changes:
            c(doc)

    return change


ISVC, CBM, CSR = "InferenceService", "ClusterBaseModel", "ClusterServingRuntime"
PREDICTOR = {"model": {"baseModel": "kimi-k2-instruct", "runtime": "srt-kimi-k2-pd"}}
NO_COMPONENTS = both(*(set_path(f"spec.{c}", DELETE) for c in ("engine", "decoder", "router")))
STORAGE_MESSAGE = "unsupported storage URI"
# (kind, label, change, broken rules as (path, start of message)); an empty set means valid.
CEL_CASES: list[tuple[str, str, Change, set[tuple[str, str]]]] = [
    (ISVC, "reference", lambda d: None, set()),
    (ISVC, "uppercase-name", set_path("metadata.name", "Kimi"), {("metadata.name", "must be a DNS-1035")}),
    (ISVC, "digit-first-name", set_path("metadata.name", "1kimi"), {("metadata.name", "must be a DNS-1035")}),
    (ISVC, "dotted-name", set_path("metadata.name", "kimi.k2"), {("metadata.name", "must be a DNS-1035")}),
    (ISVC, "name-64", set_path("metadata.name", "k" * 64), {("metadata.name", "must be a DNS-1035")}),
    (ISVC, "name-63", set_path("metadata.name", "k" * 63), set()),
    (ISVC, "no-component", NO_COMPONENTS, {("spec.engine", "an InferenceService needs an engine")}),
    (ISVC, "predictor-only", both(NO_COMPONENTS, set_path("spec.predictor", PREDICTOR)), set()),
    (
        ISVC,
        "decoder-without-engine",
        both(set_path("spec.engine", DELETE), set_path("spec.router", DELETE)),
        {("spec.decoder", "a decoder requires")},
    ),
    (
        ISVC,
        "decoder-and-router-without-engine",
        set_path("spec.engine", DELETE),
        {("spec.decoder", "a decoder requires"), ("spec.router", "a router requires")},
    ),
    (
        ISVC,
        "decoder-with-predictor",
        both(set_path("spec.engine", DELETE), set_path("spec.predictor", PREDICTOR)),
        {("spec.decoder", "a decoder requires")},
    ),
    (ISVC, "engine-only", both(set_path("spec.decoder", DELETE), set_path("spec.router", DELETE)), set()),
    (
        ISVC,
        "router-without-engine",
        both(set_path("spec.engine", DELETE), set_path("spec.decoder", DELETE)),
        {("spec.router", "a router requires an engine")},
    ),
    (
        ISVC,
        "router-with-predictor",
        both(set_path("spec.engine", DELETE), set_path("spec.decoder", DELETE), set_path("spec.predictor", PREDICTOR)),
        set(),
    ),
    (ISVC, "no-model", set_path("spec.model", DELETE), {("spec.model", "the model to serve is required")}),
    (ISVC, "model-in-predictor", both(set_path("spec.model", DELETE), set_path("spec.predictor", PREDICTOR)), set()),
    *[
        (
            ISVC,
            f"{c}-min-above-max",
            both(set_path(f"spec.{c}.minReplicas", 3), set_path(f"spec.{c}.maxReplicas", 2)),
            {(f"spec.{c}.minReplicas", "minReplicas must not exceed maxReplicas")},
        )
        for c in ("engine", "decoder", "router")
    ],
    (
        ISVC,
        "predictor-min-above-max",
        set_path("spec.predictor", {**PREDICTOR, "minReplicas": 3, "maxReplicas": 2}),
        {("spec.predictor.minReplicas", "minReplicas must not exceed maxReplicas")},
    ),
    (
        ISVC,
        "max-zero-is-unset",
        both(set_path("spec.engine.minReplicas", 3), set_path("spec.engine.maxReplicas", 0)),
        set(),
    ),
    (
        ISVC,
        "min-equals-max",
        both(set_path("spec.engine.minReplicas", 2), set_path("spec.engine.maxReplicas", 2)),
        set(),
    ),
    (ISVC, "min-only", set_path("spec.engine.maxReplicas", DELETE), set()),
    *[
        (
            CSR,
            f"{c}-min-above-max",
            both(set_path(f"spec.{c}.minReplicas", 3), set_path(f"spec.{c}.maxReplicas", 2)),
            {(f"spec.{c}.minReplicas", "minReplicas must not exceed maxReplicas")},
        )
        for c in ("engineConfig", "decoderConfig", "routerConfig")
    ],
    (CSR, "reference", lambda d: None, set()),
    (
        CSR,
        "size-min-only",
        set_path("spec.modelSizeRange.max", DELETE),
        {("spec.modelSizeRange", "modelSizeRange needs")},
    ),
    (
        CSR,
        "size-max-only",
        set_path("spec.modelSizeRange.min", DELETE),
        {("spec.modelSizeRange", "modelSizeRange needs")},
    ),
    (CSR, "no-size-range", set_path("spec.modelSizeRange", DELETE), set()),
    (CSR, "empty-size-range", set_path("spec.modelSizeRange", {}), set()),
    (CBM, "reference", lambda d: None, set()),
    (CBM, "no-storage", set_path("spec.storage", DELETE), set()),
    (CBM, "no-path", set_path("spec.storage.path", DELETE), set()),
    (
        CBM,
        "relative-path",
        set_path("spec.storage.path", "raid/models"),
        {("spec.storage.path", "must be a normalized absolute path")},
    ),
    *[
        (CBM, f"path-{label}", set_path("spec.storage.path", path), {("spec.storage.path", start)})
        for label, path, start in (
            ("root", "/", "must be a normalized absolute path"),
            ("double-slash", "/raid//models/m", "must be a normalized absolute path"),
            ("trailing-slash", "/raid/models/m/", "must be a normalized absolute path"),
            ("dotdot", "/raid/models/../../etc", "must not contain '.' or '..'"),
            ("dotdot-at-end", "/raid/models/m/..", "must not contain '.' or '..'"),
            ("dot", "/raid/models/./m", "must not contain '.' or '..'"),
        )
    ],
    # Normalized and absolute: only the operator's roots can refuse these (a condition, not admission).
    *[
        (CBM, f"path-{label}", set_path("spec.storage.path", path), set())
        for label, path in (("etc", "/etc"), ("dots-in-a-name", "/raid/models/m..v2/.cache"), ("deep", "/a/b/c"))
    ],
    *[
        (CBM, f"uri-{uri}", set_path("spec.storage.storageUri", uri), {("spec.storage.storageUri", STORAGE_MESSAGE)})
        for uri in (
            *("ftp://host/x", "hf://", "hf:/org/repo", "HF://org/repo", "/raid/models"),
            *("oci://", "s3://", "gs://", "az://", "s3:/bucket/key"),
        )
    ],
    *[
        (CBM, f"uri-{uri}", set_path("spec.storage.storageUri", uri), set())
        for uri in (
            *("hf://org/repo@main", "local:///raid/models/kimi", "pvc://ns:claim/sub"),
            *("oci://n/x/b/y/o/z", "s3://bucket/key", "gs://bucket/key", "az://account/container/key"),
        )
    ],
]


def _case_params(cases: list[Any]) -> list[Any]:
    return [pytest.param(*case, id=f"{case[0]}-{case[1]}") for case in cases]


@pytest.mark.parametrize(("kind", "label", "change", "broken"), _case_params(CEL_CASES))
def test_cel_rules_and_the_offline_checks_agree(
    kind: str, label: str, change: Change, broken: set[tuple[str, str]]
) -> None:
    doc = reference(kind)
    change(doc)
    cel, python = cel_failures(doc), python_failures(doc)
    assert cel == python, "the CEL rules and their Python twins disagree"
    assert sorted(path for path, _ in cel) == sorted(path for path, _ in broken)
    for path, start in broken:
        assert any(p == path and message.startswith(start) for p, message in cel), (path, cel)


def test_the_cases_break_every_rule() -> None:
    broken = set()
    for kind, _, change, _ in CEL_CASES:
        doc = reference(kind)
        change(doc)
        broken |= {message for _, message in cel_failures(doc)}
    assert broken == rule_messages()


# (kind, label, change, path of the problem or None when valid, the loader's reason or None)
OPENAPI_CASES: list[tuple[str, str, Change, str | None]] = [
    (ISVC, "unknown-spec-field", set_path("spec.engin", {}), "spec.engin"),
    (ISVC, "unknown-component-field", set_path("spec.engine.minReplica", 1), "spec.engine.minReplica"),
    (ISVC, "unknown-runner-field", set_path("spec.engine.runner", {"imagee": "x"}), "spec.engine.runner.imagee"),
    (
        ISVC,
        "unknown-toleration-field",
        set_path("spec.router.tolerations", [{"effectt": "x"}]),
        "spec.router.tolerations[0].effectt",
    ),
    (ISVC, "unknown-top-level-field", set_path("specc", {}), "specc"),
    (ISVC, "pod-spec-field", set_path("spec.engine.hostAliases", [{"ip": "127.0.0.1"}]), None),
    (ISVC, "wrong-type", set_path("spec.engine.minReplicas", "1"), "spec.engine.minReplicas"),
    (ISVC, "negative-replicas", set_path("spec.engine.minReplicas", -1), "spec.engine.minReplicas"),
    (ISVC, "too-many-replicas", set_path("spec.engine.maxReplicas", MAX_REPLICAS + 1), "spec.engine.maxReplicas"),
    (ISVC, "most-replicas", set_path("spec.engine.maxReplicas", MAX_REPLICAS), None),
    (ISVC, "worker-size-max", set_path("spec.engine.worker", {"size": MAX_WORKER_SIZE}), None),
    (
        ISVC,
        "worker-size-above",
        set_path("spec.engine.worker", {"size": MAX_WORKER_SIZE + 1}),
        "spec.engine.worker.size",
    ),
    (ISVC, "scale-target-zero", set_path("spec.engine.scaleTarget", 0), "spec.engine.scaleTarget"),
    (ISVC, "scale-metric-tps", set_path("spec.engine.scaleMetric", "tps"), None),
    (ISVC, "scale-metric-unknown", set_path("spec.engine.scaleMetric", "qps"), "spec.engine.scaleMetric"),
    (ISVC, "canary-101", set_path("spec.engine.canaryTrafficPercent", 101), "spec.engine.canaryTrafficPercent"),
    (ISVC, "pdb-percent", set_path("spec.engine.maxUnavailable", "25%"), None),
    (ISVC, "pdb-bad-percent", set_path("spec.engine.maxUnavailable", "many"), "spec.engine.maxUnavailable"),
    (ISVC, "empty-model-name", set_path("spec.model.name", ""), "spec.model.name"),
    (ISVC, "model-name-not-dns", set_path("spec.model.name", "Kimi_K2"), "spec.model.name"),
    (ISVC, "model-name-254", set_path("spec.model.name", "k" * 254), "spec.model.name"),
    (ISVC, "model-name-253", set_path("spec.model.name", "k" * 253), None),
    (
        ISVC,
        "two-fine-tuned-weights",
        set_path("spec.model.fineTunedWeights", ["a", "b"]),
        "spec.model.fineTunedWeights",
    ),
    (
        ISVC,
        "runner-port-zero",
        set_path("spec.engine.runner", {"ports": [{"containerPort": 0}]}),
        "spec.engine.runner.ports[0].containerPort",
    ),
    (
        ISVC,
        "runner-port-65536",
        set_path("spec.engine.runner", {"ports": [{"containerPort": 65536}]}),
        "spec.engine.runner.ports[0].containerPort",
    ),
    (ISVC, "host-port-zero", set_path("spec.engine.runner", {"ports": [{"containerPort": 80, "hostPort": 0}]}), None),
    (
        ISVC,
        "duplicate-ports",
        set_path("spec.engine.runner", {"ports": [{"containerPort": 80}, {"containerPort": 80, "protocol": "TCP"}]}),
        "spec.engine.runner.ports[1]",
    ),
    (
        ISVC,
        "negative-gpus",
        set_path("spec.engine.runner", {"resources": {"limits": {"nvidia.com/gpu": -1}}}),
        "spec.engine.runner.resources.limits.nvidia.com/gpu",
    ),
    (
        ISVC,
        "gpus-not-a-quantity",
        set_path("spec.engine.runner", {"resources": {"limits": {"nvidia.com/gpu": "8 GPUs"}}}),
        "spec.engine.runner.resources.limits.nvidia.com/gpu",
    ),
    (
        ISVC,
        "gpus-as-string",
        set_path("spec.engine.runner", {"resources": {"limits": {"nvidia.com/gpu": "8", "memory": "20Gi"}}}),
        None,
    ),
    (ISVC, "int32-overflow", set_path("spec.engine.priority", 2**31), "spec.engine.priority"),
    (
        ISVC,
        "toleration-seconds-type",
        set_path("spec.router.tolerations", [{"tolerationSeconds": "1"}]),
        "spec.router.tolerations[0].tolerationSeconds",
    ),
    (
        ISVC,
        "env-without-name",
        set_path("spec.router.runner", {"env": [{"value": "x"}]}),
        "spec.router.runner.env[0].name",
    ),
    (
        ISVC,
        "container-without-name",
        set_path("spec.engine.containers", [{"image": "x"}]),
        "spec.engine.containers[0].name",
    ),
    (ISVC, "runner-without-name", set_path("spec.engine.runner", {"image": "x"}), None),
    (
        ISVC,
        "predictor-typed",
        set_path("spec.predictor", {"model": {"baseModel": "m", "imagee": "x"}}),
        "spec.predictor.model.imagee",
    ),
    (
        ISVC,
        "keda-typed",
        set_path("spec.kedaConfig", {"enableKeda": True, "scalingThresold": "1"}),
        "spec.kedaConfig.scalingThresold",
    ),
    (CSR, "runtime-pod-subset", set_path("spec.hostAliases", [{"ip": "127.0.0.1"}]), "spec.hostAliases"),
    (CSR, "runtime-legacy-containers", set_path("spec.containers", [{"name": "ome-container", "image": "x"}]), None),
    (
        CSR,
        "priority-zero",
        set_path("spec.supportedModelFormats[0].priority", 0),
        "spec.supportedModelFormats[0].priority",
    ),
    (CSR, "size-range-format", set_path("spec.modelSizeRange.min", "1 T"), "spec.modelSizeRange.min"),
    (CSR, "protocol-unknown", set_path("spec.protocolVersions", ["grpc"]), "spec.protocolVersions[0]"),
    (
        CSR,
        "leader-imagee",
        set_path("spec.engineConfig.leader.runner.imagee", "x"),
        "spec.engineConfig.leader.runner.imagee",
    ),
    (
        CSR,
        "deployment-strategy",
        set_path(
            "spec.routerConfig.deploymentStrategy", {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}}
        ),
        None,
    ),
    (
        CSR,
        "deployment-strategy-typo",
        set_path("spec.routerConfig.deploymentStrategy", {"rollingupdate": {}}),
        "spec.routerConfig.deploymentStrategy.rollingupdate",
    ),
    (CBM, "storage-uri-missing", set_path("spec.storage.storageUri", DELETE), "spec.storage.storageUri"),
    (
        CBM,
        "node-affinity-typed",
        set_path("spec.storage.nodeAffinity", {"required": {}}),
        "spec.storage.nodeAffinity.required",
    ),
    (CBM, "download-policy", set_path("spec.storage.downloadPolicy", "Sometimes"), "spec.storage.downloadPolicy"),
    (CBM, "parameter-size", set_path("spec.modelParameterSize", "1.03T"), None),
    (CBM, "parameter-size-bad", set_path("spec.modelParameterSize", "about 1T"), "spec.modelParameterSize"),
    (CBM, "max-tokens-zero", set_path("spec.maxTokens", 0), "spec.maxTokens"),
    (CBM, "model-configuration-free-form", set_path("spec.modelConfiguration", {"anything": [1, {"x": None}]}), None),
]


@pytest.mark.parametrize(("kind", "label", "change", "path"), _case_params(OPENAPI_CASES))
def test_the_crd_schema_and_the_loader_refuse_the_same_fields(
    kind: str, label: str, change: Change, path: str | None
) -> None:
    doc = reference(kind)
    change(doc)
    result = check_object(doc, root_schema(kind))
    crd_paths = {p.split(": ")[0] for p in result.errors} | set(result.pruned)
    _, problems = parse_object(doc)
    loader_paths = {p.path for p in problems}
    if path is None:
        assert (crd_paths, problems) == (set(), [])
    else:
        assert crd_paths == {path}, result
        assert loader_paths == {path}, problems
        if path in result.pruned:
            assert [p.reason for p in problems] == ["unknown field"]


def test_render_reports_an_unknown_field_with_the_api_servers_path(capsys: pytest.CaptureFixture[str]) -> None:
    from ome_operator.api import load_text

    doc = reference(ISVC)
    doc["spec"]["engin"] = {"minReplicas": 1}
    loaded = load_text(yaml.safe_dump(doc))
    assert [str(p) for p in loaded.problems] == ["error: InferenceService/kimi-k2-instruct: spec.engin: unknown field"]


def test_objects_read_back_from_the_cluster_parse_even_out_of_today_s_bounds() -> None:
    # The API server admitted them (perhaps before a bound existed); the resolver reports the bound.
    doc = reference(ISVC)
    doc["spec"]["engine"]["minReplicas"] = MAX_REPLICAS + 1
    assert KINDS[ISVC].model_validate(doc).spec.engine is not None  # type: ignore[attr-defined]
    assert [p.path for p in parse_object(doc)[1]] == ["spec.engine.minReplicas"]


# --- the converter on small models -----------------------------------------------------------------------------------


class Part(OmeModel):
    """A nested part."""

    size: int | None = desc("How many.", default=None, ge=0, le=10)
    mode: Literal["fast", "slow"] | None = desc("How fast.", default=None)
    amount: Quantity | None = desc("A quantity.", default=None)
    budget: int | str | None = pydantic.Field(
        default=None, description="Int or string.", json_schema_extra={"x-kubernetes-int-or-string": True}
    )
    free: Unstructured | None = desc("Anything.", default=None)
    counts: dict[str, int] | None = desc("A map.", default=None)


class ToySpec(OmeModel):
    """Spec."""

    part: Part = desc("The part (field description wins over the docstring).")
    parts: list[Part] | None = desc("More parts.", default=None)


class Toy(Resource):
    crd = KINDS["ClusterBaseModel"].crd
    spec: ToySpec = desc("The spec.")


def toy_spec() -> dict[str, Any]:
    spec: dict[str, Any] = openapi_schema(Toy)["properties"]["spec"]
    return spec


def test_optional_literal_bounds_and_descriptions_become_plain_openapi() -> None:
    part = toy_spec()["properties"]["part"]
    assert part["description"] == "The part (field description wins over the docstring)."
    assert part["properties"]["size"] == {"type": "integer", "minimum": 0, "maximum": 10, "description": "How many."}
    assert part["properties"]["mode"] == {"type": "string", "enum": ["fast", "slow"], "description": "How fast."}
    assert part["properties"]["counts"]["additionalProperties"] == {"type": "integer"}
    assert part["properties"]["free"]["x-kubernetes-preserve-unknown-fields"] is True
    assert toy_spec()["properties"]["parts"]["items"]["properties"]["size"]["minimum"] == 0


def test_int_or_string_has_the_one_structural_shape() -> None:
    part = toy_spec()["properties"]["part"]["properties"]
    assert part["budget"] == {
        "x-kubernetes-int-or-string": True,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "description": "Int or string.",
    }
    assert part["amount"]["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert part["amount"]["minimum"] == 0 and "pattern" in part["amount"], "a Quantity is a non-negative quantity"


def test_closed_models_prune() -> None:
    spec = toy_spec()
    assert "x-kubernetes-preserve-unknown-fields" not in spec
    assert "x-kubernetes-preserve-unknown-fields" not in spec["properties"]["part"]
    assert spec["required"] == ["part"]
    assert "additionalProperties" not in spec["properties"]["part"]


def test_a_field_without_description_fails_generation() -> None:
    class Bare(Resource):
        crd = KINDS["BaseModel"].crd
        spec: dict[str, str] = pydantic.Field(default_factory=dict)

    with pytest.raises(SchemaError, match=r"\.spec: field has no description"):
        openapi_schema(Bare)


def test_a_non_structural_union_fails_generation() -> None:
    class Mixed(Resource):
        crd = KINDS["BaseModel"].crd
        spec: int | str = desc("Either, without the int-or-string marker.")

    with pytest.raises(SchemaError, match="union of 2 types"):
        openapi_schema(Mixed)


def test_a_rule_naming_an_undeclared_field_fails_generation() -> None:
    from ome_operator.api.base import Rule

    class Ranged(OmeModel):
        """A range."""

        rules = (Rule("self.lo <= self.hi", "lo > hi", ".high", lambda r: True),)
        lo: int = desc("Low.", ge=0, le=1)
        hi: int = desc("High.", ge=0, le=1)

    class WithRange(Resource):
        crd = dataclasses.replace(KINDS["BaseModel"].crd, status_subresource=False)
        spec: Ranged = desc("The range.")

    with pytest.raises(SchemaError, match="names no declared field"):
        custom_resource_definition(WithRange)
