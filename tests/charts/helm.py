"""Rendering charts/ome-resources with the helm binary that `make cluster-bins` builds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from devtools.helm import CHART, run_helm
from devtools.helm import CRD_CHART as CRD_CHART  # for the chart tests, with the rest of the chart facts

RELEASE = "ome"
NAMESPACE = "ome"


def template_args(values: dict[str, Any] | None, values_file: Path | None) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds"]
    if values_file is not None:
        args += ["--values", str(values_file)]
    if values:
        # --set-json keeps types (an int stays an int, a list stays a list) without a temp file.
        args += [f"--set-json={key}={json.dumps(value)}" for key, value in values.items()]
    return args


def render_text(values: dict[str, Any] | None = None, values_file: Path | None = None) -> str:
    return run_helm(*template_args(values, values_file)).stdout


def render(values: dict[str, Any] | None = None, values_file: Path | None = None) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(render_text(values, values_file)) if doc]


def render_error(values: dict[str, Any]) -> str:
    """helm's message for values the chart refuses (the command must fail)."""
    proc = run_helm(*template_args(values, None), check=False)
    assert proc.returncode != 0, f"helm template accepted {values}"
    return proc.stderr


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def expand_rules(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    """A role's rights as (apiGroup, resource, verb, resourceName) tuples; "" means any name."""
    rights = set()
    for rule in rules:
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                for verb in rule.get("verbs") or []:
                    for name in rule.get("resourceNames") or [""]:
                        rights.add((group, resource, verb, name))
    return rights
