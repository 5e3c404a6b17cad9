"""Reading ome.io objects from YAML, with problems reported as `Kind/name: field.path: reason`.

Everything the API server checks is checked here too, so `render` and `plan` reject offline
exactly what `kubectl apply` would reject, with the same paths: unknown fields and types (the
closed, strict models and the vendored Kubernetes definitions, see base.py), bounds, and the CEL
rules, whose Python twins sit beside them (base.Rule) and run in `check_rules`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import yaml

from .base import ADMISSION, API_VERSION, DNS_1123_SUBDOMAIN, GROUP, MAX_SUBDOMAIN, OmeModel, Resource, class_rules
from .inferenceservice import InferenceService
from .model import BaseModel, ClusterBaseModel
from .runtime import ClusterServingRuntime, ServingRuntime

KIND_TYPES: dict[str, type[Resource]] = {
    cls.crd.kind: cls for cls in (ClusterBaseModel, BaseModel, ClusterServingRuntime, ServingRuntime, InferenceService)
}

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# What pydantic calls the errors the API server words differently.
_REASONS = {"extra_forbidden": "unknown field", "missing": "Required value"}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, printed as `error: Kind/name: field.path: reason`."""

    kind: str
    name: str
    path: str
    reason: str

    def __str__(self) -> str:
        return f"error: {self.kind}/{self.name}: {self.path}: {self.reason}"


@dataclass
class Loaded:
    objects: list[Resource]
    problems: list[Problem]
    ignored: list[str]  # "<source>: <apiVersion> <kind>" of documents that are not ome.io


def iter_yaml_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files named on the command line, and every *.yaml/*.yml under named directories, sorted."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
        else:
            yield path


def load_paths(paths: Iterable[str | Path]) -> Loaded:
    result = Loaded(objects=[], problems=[], ignored=[])
    for file in iter_yaml_files(paths):
        try:
            text = file.read_text()
        except OSError as exc:
            result.problems.append(Problem("File", str(file), "-", exc.strerror or str(exc)))
            continue
        _load_text(text, str(file), result)
    return result


def load_text(text: str, source: str = "<input>") -> Loaded:
    result = Loaded(objects=[], problems=[], ignored=[])
    _load_text(text, source, result)
    return result


def _load_text(text: str, source: str, result: Loaded) -> None:
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        result.problems.append(Problem("File", source, "-", f"not valid YAML: {_yaml_error(exc)}"))
        return
    for doc in documents:
        if doc is None:
            continue
        if not isinstance(doc, dict):
            result.problems.append(Problem("File", source, "-", "a YAML document is not a mapping"))
            continue
        api_version, kind = doc.get("apiVersion"), doc.get("kind")
        if not isinstance(api_version, str) or not api_version.startswith(f"{GROUP}/"):
            result.ignored.append(f"{source}: {api_version} {kind}")
            continue
        obj, problems = parse_object(doc)
        result.problems.extend(problems)
        if obj is not None and not problems:
            result.objects.append(obj)


def parse_object(doc: dict[str, Any]) -> tuple[Resource | None, list[Problem]]:
    """Validate one ome.io document: schema first, then the cross-field rules of the CRD."""
    kind = str(doc.get("kind"))
    meta = doc.get("metadata")
    name = str(meta.get("name")) if isinstance(meta, dict) and meta.get("name") else "<unnamed>"
    if doc.get("apiVersion") != API_VERSION:
        return None, [Problem(kind, name, "apiVersion", f"unsupported version, expected {API_VERSION}")]
    cls = KIND_TYPES.get(kind)
    if cls is None:
        known = ", ".join(sorted(KIND_TYPES))
        return None, [Problem(kind, name, "kind", f"unknown kind, expected one of {known}")]
    try:
        obj = cls.model_validate(doc, context=ADMISSION)
    except pydantic.ValidationError as exc:
        problems: list[Problem] = []
        for err in exc.errors(include_url=False):
            problem = Problem(kind, name, _loc(err["loc"]), _REASONS.get(err["type"], _one_line(err["msg"])))
            if problem not in problems:
                problems.append(problem)
        return None, problems
    return obj, check_rules(obj)


def check_rules(obj: Resource) -> list[Problem]:
    """The CRD's CEL rules in Python (each Rule's twin), plus the name checks the API server makes itself."""
    problems: list[Problem] = []

    def add(path: str, reason: str) -> None:
        problems.append(Problem(obj.crd.kind, obj.name, path, reason))

    # InferenceService names have their own, stricter rule (a Rule on the class).
    if not isinstance(obj, InferenceService) and not (
        re.search(DNS_1123_SUBDOMAIN, obj.name) and len(obj.name) <= MAX_SUBDOMAIN
    ):
        add("metadata.name", "must be a DNS subdomain: lowercase letters, digits, '-' and '.'")
    if obj.crd.scope == "Namespaced" and obj.namespace is not None and not _is_dns_label(obj.namespace):
        add("metadata.namespace", "must be a DNS label")
    for path, node in _walk(obj, ""):
        for rule in class_rules(type(node)):
            if not rule.holds(node):
                add(_join(path, rule.field_path.lstrip(".")), rule.message)
    return problems


def _walk(node: OmeModel, path: str) -> Iterator[tuple[str, OmeModel]]:
    """Every API object inside `node` (itself first) with its field path, as the API server spells it."""
    yield path, node
    for name, info in type(node).model_fields.items():
        key = _join(path, info.alias or name)
        yield from _walk_value(getattr(node, name), key)


def _walk_value(value: object, path: str) -> Iterator[tuple[str, OmeModel]]:
    if isinstance(value, OmeModel):
        yield from _walk(value, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk_value(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk_value(item, f"{path}.{key}")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path and name else path or name


def _is_dns_label(value: str) -> bool:
    return bool(DNS_1123_LABEL.match(value)) and len(value) <= 63


def _yaml_error(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return _one_line(str(exc))


def _loc(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "-"


def _one_line(text: str) -> str:
    return " ".join(text.split())
