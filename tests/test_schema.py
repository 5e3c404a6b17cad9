"""The generated CRDs: no drift, structural, described, within budget, and faithful to the inputs.

Pure: no cluster. The API server's own verdict comes from tests/integration/test_crds.py.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import celpy
import pydantic
import pytest
import yaml

from ome_operator.api import KINDS
from ome_operator.api.base import OmeModel, Quantity, Resource, Unstructured, desc
from ome_operator.api.load import check_rules, parse_object
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
from ome_operator.schema.files import CRD_DIR, FIX_COMMAND, HEADER, TEMPLATE_DIR

REPO = Path(__file__).resolve().parents[1]
# OME's own files; a clone without ../shared beside it uses the byte-identical golden copies.
REFERENCE = REPO.parent / "shared" / "reference" / "ome"
if not REFERENCE.is_dir():
    REFERENCE = REPO / "tests" / "golden" / "kimi-k2-reference" / "input"
PLURALS = ["clusterbasemodels", "basemodels", "clusterservingruntimes", "servingruntimes", "inferenceservices"]


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


# --- the committed files ---------------------------------------------------------------------------------------------


def test_committed_files_match_the_api_models() -> None:
    problems = drift(REPO)
    assert not problems, (
        "the generated CRDs are out of date with ome_operator/api:\n  "
        + "\n  ".join(problems)
        + f"\nrun `{FIX_COMMAND}` and commit crds/ and charts/ome-crd/"
    )


def test_one_crd_per_kind_in_both_places() -> None:
    names = sorted(f"{plural}.ome.io.yaml" for plural in PLURALS)
    assert sorted(p.name for p in (REPO / CRD_DIR).glob("*.yaml")) == names
    assert sorted(p.name for p in (REPO / TEMPLATE_DIR).glob("*.yaml")) == names
    for path, text in generated_files().items():
        assert text.startswith(HEADER), path


def test_generation_is_deterministic() -> None:
    assert generated_files() == generated_files()


@pytest.mark.parametrize("plural", PLURALS)
def test_each_crd_is_within_the_size_budget(plural: str) -> None:
    for directory in (CRD_DIR, TEMPLATE_DIR):
        size = (REPO / directory / f"{plural}.ome.io.yaml").stat().st_size
        assert size <= MAX_CRD_BYTES, f"{directory}/{plural}: {size} bytes > {MAX_CRD_BYTES}"


def test_each_crd_fits_kubectl_client_side_apply() -> None:
    # `kubectl apply` without --server-side copies the object into the last-applied-configuration
    # annotation, and all annotations of an object together are capped at 256 KiB.
    for kind, crd in committed_crds().items():
        size = len(json.dumps(crd, separators=(",", ":")))
        assert size < 256 * 1024, f"{kind}: {size} bytes of JSON"


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
        template = load_yaml(path)
        assert template["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}, path.name
        plain = load_yaml(REPO / CRD_DIR / path.name)
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


def rules(kind: str) -> dict[str, dict[str, str]]:
    return {rule["fieldPath"]: rule for rule in root_schema(kind).get("x-kubernetes-validations", [])}


def test_cel_rules_are_present() -> None:
    assert "has(self.spec.engine)" in rules("InferenceService")[".spec.decoder"]["rule"]
    assert "matches" in rules("InferenceService")[".metadata.name"]["rule"]
    for kind in ("ClusterBaseModel", "BaseModel"):
        storage = rules(kind)[".spec.storage.storageUri"]["rule"]
        for scheme in ("hf", "local", "pvc"):
            assert scheme in storage
        for scheme in ("oci", "s3", "gs", "az"):  # OME's, not served by the downloader yet
            assert scheme not in storage
    for kind in ("ClusterServingRuntime", "ServingRuntime"):
        assert "modelSizeRange.max" in rules(kind)[".spec.modelSizeRange"]["rule"]


def test_worker_size_and_replicas_cannot_be_negative() -> None:
    for kind in ("ClusterServingRuntime", "ServingRuntime", "InferenceService"):
        bounded = {path: node.get("minimum") for path, node in walk_properties(root_schema(kind))}
        sizes = [path for path in bounded if path.endswith(".worker.size") or path.endswith("Replicas")]
        assert sizes, kind
        assert all(bounded[path] == 0 for path in sizes), {p: bounded[p] for p in sizes}


# --- structural and described ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("plural", PLURALS)
def test_schema_is_structural(plural: str) -> None:
    crd = load_yaml(REPO / CRD_DIR / f"{plural}.ome.io.yaml")
    assert structural_problems(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]) == []


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
    ],
)
def test_structural_checker_catches_what_the_api_server_rejects(schema: dict[str, Any], problem: str) -> None:
    problems = structural_problems(schema)
    assert any(problem in p for p in problems), problems


@pytest.mark.parametrize("plural", PLURALS)
def test_every_property_has_a_description(plural: str) -> None:
    crd = load_yaml(REPO / CRD_DIR / f"{plural}.ome.io.yaml")
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert schema["description"]
    # metadata is the one exception: the API server forbids anything on it but name restrictions.
    missing = [path for path, node in walk_properties(schema) if not node.get("description") and path != ".metadata"]
    assert not missing, f"properties without a description: {missing}"


def test_pass_through_pod_fields_keep_unknown_fields() -> None:
    runtime = root_schema("ClusterServingRuntime")["properties"]["spec"]
    engine = runtime["properties"]["engineConfig"]
    for node in (
        runtime,
        engine,
        engine["properties"]["leader"],
        engine["properties"]["worker"],
        engine["properties"]["runner"],
        engine["properties"]["leader"]["properties"]["runner"],
        runtime["properties"]["routerConfig"],
        root_schema("InferenceService")["properties"]["spec"],
    ):
        assert node.get("x-kubernetes-preserve-unknown-fields") is True, node["description"]
    for kind in KINDS:
        assert "x-kubernetes-preserve-unknown-fields" not in root_schema(kind), "the envelope must prune"


# --- inputs apply unchanged ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("document", list(input_documents()))
def test_input_validates_and_nothing_is_pruned(document: dict[str, Any]) -> None:
    result = check_object(document, root_schema(document["kind"]))
    assert result.errors == [], "the API server would reject this object"
    assert result.pruned == [], "the API server would silently drop these fields"


def test_reference_inputs_were_found() -> None:
    # Guards the parametrized test above against passing vacuously on a moved reference directory.
    reference = sorted(p.values[0]["kind"] for p in input_documents() if str(p.id).startswith("ome/"))
    assert reference == ["ClusterBaseModel", "ClusterServingRuntime", "InferenceService"]


def test_checker_reports_rejections_and_pruning() -> None:
    isvc = {
        "apiVersion": "ome.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "x"},
        "spec": {
            "model": {"name": "m", "kind": "Nope"},
            "engine": {"minReplicas": -1, "worker": {"size": "3"}, "anyPodSpecField": {"kept": True}},
        },
        "typo": 1,
    }
    result = check_object(isvc, root_schema("InferenceService"))
    assert any(e.startswith("spec.model.kind: must be one of") for e in result.errors), result.errors
    assert any(e.startswith("spec.engine.minReplicas: must be >= 0") for e in result.errors), result.errors
    assert any(e.startswith("spec.engine.worker.size: must be integer") for e in result.errors), result.errors
    assert result.pruned == ["typo"]
    model = {"apiVersion": "ome.io/v1beta1", "kind": "BaseModel", "metadata": {"name": "m"}, "spec": {"storage": {}}}
    assert check_object(model, root_schema("BaseModel")).errors == ["spec.storage.storageUri: required"]


# --- CEL rules agree with the offline checks in ome_operator/api/load.py -----------------------------------------------


def reference(kind: str) -> dict[str, Any]:
    for param in input_documents():
        doc: dict[str, Any] = param.values[0]
        if str(param.id).startswith("ome/") and doc["kind"] == kind:
            return copy.deepcopy(doc)
    raise AssertionError(kind)


def cel_failures(document: dict[str, Any]) -> set[str]:
    """fieldPaths of the root CEL rules this object breaks, evaluated like the API server does."""
    env = celpy.Environment()
    failed = set()
    for rule in root_schema(document["kind"])["x-kubernetes-validations"]:
        result = env.program(env.compile(rule["rule"])).evaluate({"self": celpy.json_to_cel(document)})
        assert not isinstance(result, celpy.CELEvalError), f"{rule['rule']}: {result}"
        if not result:
            failed.add(rule["fieldPath"].lstrip("."))
    return failed


def python_failures(document: dict[str, Any]) -> set[str]:
    obj, problems = parse_object(document)
    assert obj is not None, problems
    cel_paths = {rule["fieldPath"].lstrip(".") for rule in root_schema(document["kind"])["x-kubernetes-validations"]}
    return {p.path for p in check_rules(obj)} & cel_paths


def variants() -> Iterator[Any]:
    def variant(kind: str, label: str, change: Any) -> Any:
        doc = reference(kind)
        change(doc)
        return pytest.param(doc, id=f"{kind}-{label}")

    yield variant("InferenceService", "reference", lambda d: None)
    yield variant("InferenceService", "uppercase-name", lambda d: d["metadata"].update(name="Kimi"))
    yield variant("InferenceService", "digit-first-name", lambda d: d["metadata"].update(name="1kimi"))
    yield variant("InferenceService", "dotted-name", lambda d: d["metadata"].update(name="kimi.k2"))
    yield variant("InferenceService", "name-64", lambda d: d["metadata"].update(name="k" * 64))
    yield variant("InferenceService", "name-63", lambda d: d["metadata"].update(name="k" * 63))
    yield variant("InferenceService", "decoder-without-engine", lambda d: d["spec"].pop("engine"))
    yield variant("InferenceService", "engine-only", lambda d: d["spec"].pop("decoder"))
    yield variant("ClusterBaseModel", "reference", lambda d: None)
    for uri in ("ftp://host/x", "hf://", "hf:/org/repo", "HF://org/repo", "/raid/models", "pvc://ns:claim/sub"):
        yield variant("ClusterBaseModel", f"uri-{uri}", lambda d, uri=uri: d["spec"]["storage"].update(storageUri=uri))
    for scheme in ("local", "oci", "s3", "gs", "az"):
        yield variant(
            "ClusterBaseModel", scheme, lambda d, s=scheme: d["spec"]["storage"].update(storageUri=f"{s}://x")
        )
    yield variant("ClusterBaseModel", "relative-path", lambda d: d["spec"]["storage"].update(path="raid/models"))
    yield variant("ClusterBaseModel", "no-path", lambda d: d["spec"]["storage"].pop("path"))
    yield variant("ClusterServingRuntime", "reference", lambda d: None)
    yield variant("ClusterServingRuntime", "min-only", lambda d: d["spec"]["modelSizeRange"].pop("max"))
    yield variant("ClusterServingRuntime", "max-only", lambda d: d["spec"]["modelSizeRange"].pop("min"))
    yield variant("ClusterServingRuntime", "no-range", lambda d: d["spec"].pop("modelSizeRange"))
    yield variant("ClusterServingRuntime", "empty-range", lambda d: d["spec"].update(modelSizeRange={}))


@pytest.mark.parametrize("document", list(variants()))
def test_cel_rules_agree_with_the_offline_checks(document: dict[str, Any]) -> None:
    assert cel_failures(document) == python_failures(document)


def test_variants_exercise_every_cel_rule() -> None:
    broken = set()
    for param in variants():
        doc = param.values[0]
        broken |= {(doc["kind"], path) for path in cel_failures(doc)}
    expected = {
        ("InferenceService", "metadata.name"),
        ("InferenceService", "spec.decoder"),
        ("ClusterBaseModel", "spec.storage.storageUri"),
        ("ClusterBaseModel", "spec.storage.path"),
        ("ClusterServingRuntime", "spec.modelSizeRange"),
    }
    assert broken == expected


def test_namespaced_kinds_share_the_cluster_kinds_rules() -> None:
    assert rules("BaseModel") == rules("ClusterBaseModel")
    assert rules("ServingRuntime") == rules("ClusterServingRuntime")


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


class Strict(OmeModel):
    """Prunes unknown fields."""

    model_config = pydantic.ConfigDict(extra="ignore")
    name: str = desc("Required name.")


class ToySpec(OmeModel):
    """Spec."""

    part: Part = desc("The part (field description wins over the docstring).")
    parts: list[Part] | None = desc("More parts.", default=None)
    strict: Strict | None = desc("A strict part.", default=None)


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
    for name in ("amount", "budget"):
        assert part[name] == {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "description": part[name]["description"],
        }


def test_unknown_fields_follow_the_models_extra_setting() -> None:
    spec = toy_spec()
    assert spec["x-kubernetes-preserve-unknown-fields"] is True
    assert spec["properties"]["part"]["x-kubernetes-preserve-unknown-fields"] is True
    assert "x-kubernetes-preserve-unknown-fields" not in spec["properties"]["strict"]
    assert spec["properties"]["strict"]["required"] == ["name"]
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


def test_field_level_cel_rules_pass_through() -> None:
    class Ranged(OmeModel):
        """A range."""

        model_config = pydantic.ConfigDict(
            json_schema_extra={"x-kubernetes-validations": [{"rule": "self.lo <= self.hi", "message": "lo > hi"}]}
        )
        lo: int = desc("Low.")
        hi: int = desc("High.")

    class WithRange(Resource):
        crd = dataclasses.replace(KINDS["BaseModel"].crd, validations=(), status_subresource=False)
        spec: Ranged = desc("The range.")

    crd = custom_resource_definition(WithRange)
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["x-kubernetes-validations"] == [{"rule": "self.lo <= self.hi", "message": "lo > hi"}]
