"""`ome-operator render` and `plan` on OME's Kimi K2 files give the 128-GPU 1P1D topology."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ome_operator.cli import main

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "tests" / "golden" / "kimi-k2-reference" / "input"
SHARED = REPO.parent / "shared" / "reference" / "ome"


def render(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    assert main(["render", "-f", str(REFERENCE), *args]) == 0
    return list(yaml.safe_load_all(capsys.readouterr().out))


def env_of(sts: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_golden_copies_are_omes_files_unchanged() -> None:
    if not SHARED.is_dir():
        pytest.skip("../shared/reference/ome is not beside this checkout")
    for copy in REFERENCE.iterdir():
        original = next(SHARED.rglob(copy.name))
        assert copy.read_bytes() == original.read_bytes(), copy.name


def test_reference_renders_the_1p1d_topology(capsys: pytest.CaptureFixture[str]) -> None:
    objects = render(capsys)
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    expect = {
        "kimi-k2-instruct-engine-0": (1, "32", "4"),
        "kimi-k2-instruct-engine-0-worker": (3, "32", "4"),
        "kimi-k2-instruct-decoder-0": (1, "96", "12"),
        "kimi-k2-instruct-decoder-0-worker": (11, "96", "12"),
    }
    statefulsets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "StatefulSet"}
    assert set(statefulsets) == set(expect)
    for name, (replicas, parallelism, group) in expect.items():
        sts = statefulsets[name]
        assert sts["spec"]["replicas"] == replicas
        env = env_of(sts)
        assert env["PARALLELISM_SIZE"] == parallelism and env["LWS_GROUP_SIZE"] == group
        limits = sts["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert str(limits["nvidia.com/gpu"]) == "8"
    role = by_name[("Role", "kimi-k2-instruct-router")]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    assert ("RoleBinding", "kimi-k2-instruct-router") in by_name
    assert ("ServiceAccount", "kimi-k2-instruct-router") in by_name
    assert by_name[("Deployment", "kimi-k2-instruct-router")]["spec"]["replicas"] == 1
    entry = by_name[("Service", "kimi-k2-instruct")]
    assert entry["metadata"]["namespace"] == "kimi-k2-instruct"
    assert entry["spec"]["ports"][0]["port"] == 80


def test_render_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "-f", str(REFERENCE), "-o", "name"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "statefulset/kimi-k2-instruct/kimi-k2-instruct-decoder-0-worker" in lines
    assert "service/kimi-k2-instruct/kimi-k2-instruct" in lines


def test_plan_shows_128_gpus_on_16_nodes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "-f", str(REFERENCE)]) == 0
    out = capsys.readouterr().out
    assert "engine (prefill):  1 group × 4 nodes × 8 GPUs = 32 GPUs" in out
    assert "decoder (decode):  1 group × 12 nodes × 8 GPUs = 96 GPUs" in out
    assert "2 components, 128 GPUs on 16 nodes, $294.40/hour at $2.30/GPU-hour" in out


def test_plan_warns_when_weights_do_not_fit(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    known = (
        "  vendor: moonshotai\n  modelParameterSize: 1.5T\n  quantization: fp8\n"
        "  modelArchitecture: DeepseekV3ForCausalLM\n"
        "  modelFormat: {name: safetensors, version: '1.0.0'}\n"
        "  modelFramework: {name: transformers, version: '4.48.3'}"
    )
    for path in REFERENCE.iterdir():
        text = path.read_text().replace("  vendor: moonshotai", known)
        # One prefill pod of 8 GPUs instead of a group of 4: 1.5T fp8 weights are 175 GiB per GPU.
        text = text.replace("  engine:\n    minReplicas: 1", "  engine:\n    minReplicas: 1\n    worker: {size: 0}")
        (tmp_path / path.name).write_text(text)
    assert main(["plan", "-f", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "WARNING: engine needs 174.6 GiB of weights per GPU, more than the 141 GiB of an H200" in out
    assert "decoder (decode):  1 group × 12 nodes × 8 GPUs = 96 GPUs; weights 14.6 GiB/GPU" in out
