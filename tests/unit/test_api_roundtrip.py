"""Every ome.io file we ship or take from OME loads into the API models and back without loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ome_operator.api import KINDS, load_paths
from ome_operator.api.base import ADMISSION

REPO = Path(__file__).resolve().parents[2]
SOURCES = [REPO / "config", REPO / "tests" / "golden" / "kimi-k2-reference" / "input"]
SHARED = REPO.parent / "shared" / "reference" / "ome"
if SHARED.is_dir():
    SOURCES.append(SHARED)


def documents() -> list[Any]:
    found = []
    for base in SOURCES:
        for path in sorted(base.rglob("*.yaml")):
            for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
                if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("ome.io/"):
                    found.append(pytest.param(doc, id=f"{path.relative_to(base.parent)}#{index}"))
    return found


@pytest.mark.parametrize("doc", documents())
def test_loads_without_loss(doc: dict[str, Any]) -> None:
    # As read back from the cluster, and as the offline loader admits it (every check the API server makes).
    for context in (None, ADMISSION):
        obj = KINDS[doc["kind"]].model_validate(doc, context=context)
        assert obj.to_dict() == doc


def runtimes_with_an_engine() -> list[Any]:
    return [
        p
        for p in documents()
        if p.values[0]["kind"].endswith("ServingRuntime") and "engineConfig" in p.values[0]["spec"]
    ]


@pytest.mark.parametrize("doc", runtimes_with_an_engine())
def test_kubernetes_fields_the_operator_does_not_declare_are_kept(doc: dict[str, Any]) -> None:
    # A PodSpec field no view declares (hostAliases) and a Container one (lifecycle) survive a round trip.
    changed = {**doc, "spec": {**doc["spec"], "engineConfig": dict(doc["spec"]["engineConfig"])}}
    engine = changed["spec"]["engineConfig"]
    engine["hostAliases"] = [{"ip": "127.0.0.1", "hostnames": ["leader"]}]
    engine["runner"] = {**(engine.get("runner") or {}), "lifecycle": {"preStop": {"sleep": {"seconds": 5}}}}
    obj = KINDS[doc["kind"]].model_validate(changed, context=ADMISSION)
    assert obj.to_dict() == changed


def test_every_shipped_file_is_valid() -> None:
    loaded = load_paths(SOURCES)
    assert loaded.problems == []
    assert len(loaded.objects) >= 18
