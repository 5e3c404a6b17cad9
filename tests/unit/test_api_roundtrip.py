"""Every ome.io file we ship or take from OME loads into the API models and back without loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ome_operator.api import KINDS, load_paths

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
    obj = KINDS[doc["kind"]].model_validate(doc)
    assert obj.to_dict() == doc


def test_every_shipped_file_is_valid() -> None:
    loaded = load_paths(SOURCES)
    assert loaded.problems == []
    assert len(loaded.objects) >= 18
