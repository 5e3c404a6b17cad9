"""Golden tests: each case under tests/golden/<case>/ holds its input and the expected output.

A case has `input/` (YAML files) or `inputs.txt` (paths relative to the repository root), and
expects either `expected.yaml` + `plan.txt` (valid input) or `errors.txt` (invalid input, exit 1).
`pytest tests/golden --update-golden` rewrites the expectations; reviewers read the YAML diff.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ome_operator.cli import main
from ome_operator.render.names import MAX_NAME, MAX_STATEFULSET_NAME

from ..conftest import REPO

GOLDEN = Path(__file__).parent
NODES = ["gpu-node-0", "gpu-node-1"]
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "input").is_dir() or (p / "inputs.txt").is_file())


def case_inputs(case: Path) -> list[str]:
    """Input paths relative to the repository root, so error messages in golden files are portable."""
    if (case / "input").is_dir():
        return [str((case / "input").relative_to(REPO))]
    return (case / "inputs.txt").read_text().split()


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def check_or_update(path: Path, actual: str, update: bool) -> None:
    if update:
        path.write_text(actual)
        return
    assert path.exists(), f"{path} missing: run `pytest tests/golden --update-golden` and review it"
    expected = path.read_text()
    assert actual == expected, (
        f"{path} differs from the output: run `pytest tests/golden --update-golden` and review the diff"
    )


@pytest.mark.parametrize("case", CASES)
def test_golden(
    case: str, capsys: pytest.CaptureFixture[str], update_golden: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    directory = GOLDEN / case
    inputs = [arg for path in case_inputs(directory) for arg in ("-f", path)]
    node_args = [arg for node in NODES for arg in ("--node", node)]
    code, out, err = run_cli(capsys, "render", *inputs, *node_args)
    if (directory / "errors.txt").exists() or (update_golden and code != 0):
        assert code == 1, f"expected exit 1 for invalid input, got {code}"
        assert out == ""
        assert "Traceback" not in err
        for line in err.splitlines():
            assert re.match(r"^error: [A-Za-z]+/[^:]+: [^:]+: .+", line), line
        check_or_update(directory / "errors.txt", err, update_golden)
        return
    assert code == 0, err
    check_or_update(directory / "expected.yaml", out, update_golden)
    code, plan, err = run_cli(capsys, "plan", *inputs, *node_args)
    assert code == 0, err
    check_or_update(directory / "plan.txt", plan, update_golden)
    check_properties(inputs + node_args, out, capsys)


def check_properties(args: list[str], out: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Properties every rendered case must have, whatever its shape."""
    _, again, _ = run_cli(capsys, "render", *args)
    assert again == out, "rendering twice must give identical output"
    objects = list(yaml.safe_load_all(out))
    assert objects
    for obj in objects:
        meta = obj["metadata"]
        where = f"{obj['kind']}/{meta['name']}"
        assert_no_none(obj, where)
        assert len(meta["name"]) <= MAX_NAME, where
        assert re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", meta["name"]), where
        if obj["kind"] == "StatefulSet":
            assert len(meta["name"]) <= MAX_STATEFULSET_NAME, where
        owners = meta.get("ownerReferences") or []
        assert len(owners) == 1 and owners[0]["controller"] is True, f"{where}: one controller ownerReference"
        labels = meta.get("labels") or {}
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"):
            assert key in labels, f"{where}: label {key}"
        assert labels.get("app.kubernetes.io/managed-by") == "ome-operator", where
        template = (obj.get("spec") or {}).get("template")
        if template is not None:
            selector = obj["spec"].get("selector", {}).get("matchLabels")
            pod_labels = template["metadata"]["labels"]
            if selector is not None:
                assert selector.items() <= pod_labels.items(), f"{where}: selector must match the pod labels"
            for container in template["spec"]["containers"]:
                for port in container.get("ports") or []:
                    assert port.get("protocol"), f"{where}: container port without protocol"
    check_service_selectors(objects)


def check_service_selectors(objects: list[dict[str, Any]]) -> None:
    """Every Service selects at least one rendered pod template, and only this InferenceService's pods."""
    templates = [
        (o["metadata"]["namespace"], o["spec"]["template"]["metadata"]["labels"])
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet")
    ]
    for svc in (o for o in objects if o["kind"] == "Service"):
        selector = svc["spec"]["selector"]
        assert "ome.io/inferenceservice" in selector, svc["metadata"]["name"]
        matches = [
            labels
            for ns, labels in templates
            if ns == svc["metadata"]["namespace"] and selector.items() <= labels.items()
        ]
        assert matches, f"Service {svc['metadata']['name']} selects no rendered pod"


def assert_no_none(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            assert item is not None, f"{where}: {key} is None"
            assert_no_none(item, where)
    elif isinstance(value, list):
        for item in value:
            assert_no_none(item, where)
