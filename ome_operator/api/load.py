"""Reading ome.io objects from YAML, with problems reported as `Kind/name: field.path: reason`.

The same checks the CRD enforces with CEL rules are repeated here, so `render` and `plan` reject
offline exactly what the API server would reject.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import yaml

from .base import API_VERSION, GROUP, Resource
from .inferenceservice import InferenceService
from .model import BaseModel, ClusterBaseModel
from .runtime import ClusterServingRuntime, ServingRuntime
from .storage_uri import SERVED_SCHEMES as STORAGE_SCHEMES

KIND_TYPES: dict[str, type[Resource]] = {
    cls.crd.kind: cls for cls in (ClusterBaseModel, BaseModel, ClusterServingRuntime, ServingRuntime, InferenceService)
}

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


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
        obj = cls.model_validate(doc)
    except pydantic.ValidationError as exc:
        return None, [
            Problem(kind, name, _loc(err["loc"]), _one_line(err["msg"])) for err in exc.errors(include_url=False)
        ]
    return obj, check_rules(obj)


def check_rules(obj: Resource) -> list[Problem]:
    """The CRD's CEL rules, in Python (kept in step by tests/test_schema.py)."""
    problems: list[Problem] = []

    def add(path: str, reason: str) -> None:
        problems.append(Problem(obj.crd.kind, obj.name, path, reason))

    if isinstance(obj, InferenceService):
        # Its name becomes Service and label values: the stricter DNS-1035 label rule applies.
        if not DNS_1035.match(obj.name) or len(obj.name) > 63:
            add("metadata.name", "must be a DNS-1035 label: lowercase letters, digits, '-', starting with a letter")
    elif not DNS_1123_SUBDOMAIN.match(obj.name) or len(obj.name) > 253:
        add("metadata.name", "must be a DNS subdomain: lowercase letters, digits, '-' and '.'")
    if obj.crd.scope == "Namespaced" and obj.namespace is not None and not _is_dns_label(obj.namespace):
        add("metadata.namespace", "must be a DNS label")
    if isinstance(obj, InferenceService) and obj.spec.decoder is not None and obj.spec.engine is None:
        add("spec.decoder", "a decoder requires an engine (prefill) component")
    if isinstance(obj, ClusterBaseModel | BaseModel):
        uri = obj.spec.storage.storage_uri
        scheme = uri.split("://", 1)[0] if "://" in uri else ""
        if scheme not in STORAGE_SCHEMES or not uri.split("://", 1)[1]:
            schemes = ", ".join(f"{s}://" for s in STORAGE_SCHEMES)
            add(
                "spec.storage.storageUri",
                f"unsupported storage URI {uri!r}: must start with one of {schemes}",
            )
        path = obj.spec.storage.path
        if path is not None and not path.startswith("/"):
            add("spec.storage.path", "must be an absolute path")
    if isinstance(obj, ClusterServingRuntime | ServingRuntime):
        size_range = obj.spec.model_size_range
        if size_range is not None and (size_range.min is None) != (size_range.max is None):
            add("spec.modelSizeRange", "needs both min and max")
    return problems


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
