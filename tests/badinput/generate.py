"""Invalid variants of real objects, generated from the committed CRD schemas. Deterministic.

Each variant starts from a valid document (OME's Kimi K2 files and our catalog) and makes exactly one
change that the API's own schema, or a rule it documents, says is invalid: an unknown field (a typo of
a real key), a wrong type, a number outside its bounds, a missing required field, a value outside an
enum, a storage URI the downloader does not serve, an over-long or non-DNS name, a cross-field
contradiction. A variant records the field it broke, so a test can check that the answer names it.
Only changes the schema itself calls invalid are made: a mutation that might be valid (an empty
optional string, a null) is not generated, so "silently accepted" is always a bug.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
Obj = dict[str, Any]
INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Variant:
    case: str  # short id: "<source>/<class>/<path>"
    kind: str  # the kind of the mutated document
    klass: str  # unknown-field, wrong-type, out-of-range, missing-required, bad-enum, bad-uri, bad-name, cross-field
    path: str  # the field the answer must name, e.g. spec.engine.minReplicas
    docs: tuple[Obj, ...]  # model, runtime, isvc (the mutated one among them)


@functools.cache
def schemas() -> dict[str, Obj]:
    """kind -> openAPIV3Schema of the committed CRDs."""
    result = {}
    for path in sorted((REPO / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        result[crd["spec"]["names"]["kind"]] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return result


def _load(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d and str(d.get("apiVersion", "")).startswith("ome.io/")]


def base_triples() -> list[tuple[str, tuple[Obj, Obj, Obj]]]:
    """(source name, (model, runtime, isvc)) triples that are valid as shipped."""
    reference = REPO / "tests" / "golden" / "kimi-k2-reference" / "input"
    triples = [
        (
            "ome-kimi-k2",
            (
                _load(reference / "Kimi-K2-Instruct.yaml")[0],
                _load(reference / "kimi-k2-pd-rt.yaml")[0],
                _load(reference / "kimi-k2-pd.yaml")[0],
            ),
        )
    ]
    catalog = [
        (
            "qwen3",
            "models/Qwen/Qwen3-0.6B.yaml",
            "runtimes/srt/Qwen/qwen3-0-6b-rt.yaml",
            "samples/isvc/Qwen/qwen3-0-6b.yaml",
        ),
        (
            "llama-pd",
            "models/meta-llama/Llama-3.2-1B-Instruct.yaml",
            "runtimes/srt/meta/llama-3-2-1b-instruct-pd-rt.yaml",
            "samples/isvc/meta/llama-3-2-1b-instruct-pd.yaml",
        ),
    ]
    for name, model, runtime, isvc in catalog:
        config = REPO / "config"
        triples.append((name, (_load(config / model)[0], _load(config / runtime)[0], _load(config / isvc)[0])))
    return triples


def _type_of(schema: Obj) -> str | None:
    if schema.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    t = schema.get("type")
    return str(t) if t else None


def _wrong_value(schema: Obj) -> Any:
    """A value of a type the schema refuses, and that pydantic's lax mode does not coerce either."""
    kind = _type_of(schema)
    if kind == "string":
        return {"not": "a string"}
    if kind in ("integer", "number"):
        return "not-a-number"
    if kind == "boolean":
        return "maybe"
    if kind == "array":
        return "not-a-list"
    if kind == "object":
        return ["not", "an", "object"]
    if kind == "int-or-string":
        return ["not", "a", "quantity"]
    return None


Parts = tuple[str | int, ...]


def display(parts: Parts) -> str:
    """("spec", "engine", "env", 0, "name") -> "spec.engine.env[0].name", as the API server writes paths."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _walk(node: Any, schema: Obj, parts: Parts) -> Iterator[tuple[Parts, Any, Obj]]:
    """(path parts, value, schema) for every node that has a schema."""
    yield parts, node, schema
    if isinstance(node, dict) and schema.get("properties"):
        for key, value in node.items():
            child = schema["properties"].get(key)
            if child is not None:
                yield from _walk(value, child, (*parts, key))
    elif isinstance(node, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, value in node.items():
            yield from _walk(value, schema["additionalProperties"], (*parts, key))
    elif isinstance(node, list) and isinstance(schema.get("items"), dict):
        for index, value in enumerate(node):
            yield from _walk(value, schema["items"], (*parts, index))


def _get(doc: Obj, parts: Parts) -> Any:
    node: Any = doc
    for part in parts:
        node = node[part]
    return node


def _set(doc: Obj, parts: Parts, value: Any, *, delete: bool = False) -> None:
    parent = _get(doc, parts[:-1])
    if delete:
        del parent[parts[-1]]
    else:
        parent[parts[-1]] = value


def _typo(key: str) -> str:
    """A plausible typo: the key with its last letter doubled (`image` -> `imagee`)."""
    return key + key[-1]


def schema_mutations(doc: Obj) -> Iterator[tuple[str, str, Obj]]:
    """(class, path, mutated doc) for every schema-level mutation of one document."""
    schema = schemas()[doc["kind"]]
    for parts, value, node_schema in list(_walk(doc.get("spec"), schema["properties"]["spec"], ("spec",))):
        kind = _type_of(node_schema)
        closed = node_schema.get("properties") and not node_schema.get("x-kubernetes-preserve-unknown-fields")
        if isinstance(value, dict) and closed:
            for key in sorted(value)[:2]:
                typo = _typo(key)
                if typo in node_schema["properties"]:
                    continue
                mutated = copy.deepcopy(doc)
                target = _get(mutated, parts)
                target[typo] = target.pop(key)
                yield "unknown-field", display((*parts, typo)), mutated
            for key in node_schema.get("required", []):
                if key in value:
                    mutated = copy.deepcopy(doc)
                    _set(mutated, (*parts, key), None, delete=True)
                    yield "missing-required", display((*parts, key)), mutated
        wrong = _wrong_value(node_schema)
        if wrong is not None and len(parts) > 1:
            mutated = copy.deepcopy(doc)
            _set(mutated, parts, wrong)
            yield "wrong-type", display(parts), mutated
        if kind == "integer" and isinstance(value, int) and not isinstance(value, bool):
            for bad in _out_of_range(node_schema):
                mutated = copy.deepcopy(doc)
                _set(mutated, parts, bad)
                yield "out-of-range", display(parts), mutated
        if "enum" in node_schema and isinstance(value, str):
            mutated = copy.deepcopy(doc)
            _set(mutated, parts, value + "-bogus")
            yield "bad-enum", display(parts), mutated


def _out_of_range(schema: Obj) -> list[int]:
    """Values past the schema's own bounds; past int32 only where the field is an int32."""
    values = []
    if "minimum" in schema:
        values.append(int(schema["minimum"]) - 1)
    if "maximum" in schema:
        values.append(int(schema["maximum"]) + 1)
    elif schema.get("format") == "int32":
        values.append(INT32_MAX + 1)
    return sorted(set(values))


def rule_mutations(model: Obj, runtime: Obj, isvc: Obj) -> Iterator[tuple[str, str, int, Obj]]:
    """(class, path, index of the mutated doc in the triple, mutated doc) for documented rules."""
    for uri in ("s3://", "oci://", "gs://", "az://", "ftp://x/y", "hf://"):
        mutated = copy.deepcopy(model)
        mutated["spec"]["storage"]["storageUri"] = uri
        yield "bad-uri", "spec.storage.storageUri", 0, mutated
    for path in ("relative/path", "/raid/../etc"):
        mutated = copy.deepcopy(model)
        mutated["spec"]["storage"]["path"] = path
        yield "bad-uri", "spec.storage.path", 0, mutated
    for name in ("a" * 64, "Bad_Name", "ünïcode", "-leading", "1starts-with-digit"):
        mutated = copy.deepcopy(isvc)
        mutated["metadata"]["name"] = name
        yield "bad-name", "metadata.name", 2, mutated
    for name in ("m" * 254, "Bad_Model", "ünïcode"):
        mutated = copy.deepcopy(model)
        mutated["metadata"]["name"] = name
        yield "bad-name", "metadata.name", 0, mutated
    spec = isvc["spec"]
    for component in ("engine", "decoder", "router"):
        if component in spec:
            mutated = copy.deepcopy(isvc)
            mutated["spec"][component]["minReplicas"] = 5
            mutated["spec"][component]["maxReplicas"] = 2
            yield "cross-field", f"spec.{component}", 2, mutated
    mutated = copy.deepcopy(isvc)
    for component in ("engine", "decoder", "router"):
        mutated["spec"].pop(component, None)
    yield "cross-field", "spec", 2, mutated
    if "decoder" in spec:
        mutated = copy.deepcopy(isvc)
        mutated["spec"].pop("engine")
        yield "cross-field", "spec.decoder", 2, mutated
    mutated = copy.deepcopy(isvc)
    mutated["spec"]["model"]["name"] = ""
    yield "cross-field", "spec.model.name", 2, mutated
    mutated = copy.deepcopy(runtime)
    mutated["spec"]["modelSizeRange"] = {"min": "1B"}
    yield "cross-field", "spec.modelSizeRange", 1, mutated


def variants() -> list[Variant]:
    result: list[Variant] = []
    for source, triple in base_triples():
        for index, doc in enumerate(triple):
            for klass, path, mutated in schema_mutations(doc):
                docs = list(triple)
                docs[index] = mutated
                result.append(Variant(f"{source}/{doc['kind']}/{klass}/{path}", doc["kind"], klass, path, tuple(docs)))
        for klass, path, index, mutated in rule_mutations(*triple):
            docs = list(triple)
            docs[index] = mutated
            result.append(
                Variant(
                    f"{source}/{triple[index]['kind']}/{klass}/{path}/{len(result)}",
                    triple[index]["kind"],
                    klass,
                    path,
                    tuple(docs),
                )
            )
    return result
