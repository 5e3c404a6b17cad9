"""The pure SGLang/router command-line checker (ome_operator.render.engine_args) and its tables."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ome_operator.render.engine_args import (
    Problem,
    check_args,
    check_command,
    check_container,
    check_pod,
    check_router_command,
    check_sglang_command,
    expand_k8s,
    find_command,
    load_table,
)

REPO = Path(__file__).resolve().parents[1]
LAUNCH = ["python3", "-m", "sglang.launch_server"]
ROUTER = ["python3", "-m", "sglang_router.launch_router"]
OK = [*LAUNCH, "--model-path", "/raid/models/m", "--tp-size", "8"]


def load_generator() -> ModuleType:
    """hack/sglang_flags.py as a module (its top level only defines things)."""
    spec = importlib.util.spec_from_file_location("sglang_flags_generator", REPO / "hack" / "sglang_flags.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def kinds(args: list[str], **kw: Any) -> list[str]:
    return [p.kind for p in check_args(args, **kw)]


# --- $(VAR) expansion: Kubernetes' rules ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "1"),
        ("$(A):5757", "1:5757"),
        ("x$(A)y$(B)z", "x1y22z"),
        ("$(UNDEFINED)", "$(UNDEFINED)"),
        ("$$(A)", "$(A)"),
        ("$$", "$"),
        ("$(A", "$(A"),
        ("a$", "a$"),
        ("$A", "$A"),
        ("$(A)$(A)", "11"),
        ("", ""),
    ],
)
def test_expand_k8s(text: str, expected: str) -> None:
    assert expand_k8s(text, {"A": "1", "B": "22"}) == expected


# --- finding the server's arguments -----------------------------------------------------------


def test_find_command_python_module() -> None:
    found = find_command([*LAUNCH, "--model-path", "$(MODEL_PATH)"], {"MODEL_PATH": "/m"})
    assert found is not None and found.parser == "sglang" and found.args == ("--model-path", "/m")


def test_find_command_sglang_serve_and_router() -> None:
    serve = find_command(["sglang", "serve", "--model-path", "/m"])
    assert serve is not None and serve.parser == "sglang" and serve.args == ("--model-path", "/m")
    router = find_command([*ROUTER, "--policy", "random"])
    assert router is not None and router.parser == "router" and router.args == ("--policy", "random")


def test_find_command_in_shell_script() -> None:
    script = "nvidia-smi && exec python3 -m sglang.launch_server --model-path $MODEL_PATH --tp-size ${TP} ; echo done"
    found = find_command(["/bin/sh", "-c", script], {"MODEL_PATH": "/raid/m", "TP": "4"})
    assert found is not None
    assert found.args == ("--model-path", "/raid/m", "--tp-size", "4")


def test_find_command_other_containers() -> None:
    assert find_command(["nginx", "-g", "daemon off;"]) is None
    assert check_command(["nginx"]) == []
    assert check_container({"name": "sidecar", "image": "busybox"}) == []
    assert check_sglang_command(["python3", "-m", "vllm.entrypoints.openai.api_server"]) == [
        "no '-m sglang.launch_server' in the command line"
    ]


# --- accepted command lines -------------------------------------------------------------------


def test_accepts_a_valid_command() -> None:
    assert check_sglang_command(OK) == []


def test_substitutes_variables_before_checking() -> None:
    argv = [*LAUNCH, "--model-path", "$(MODEL_PATH)", "--tp-size", "$(PARALLELISM_SIZE)"]
    assert check_sglang_command(argv, {"MODEL_PATH": "/m", "PARALLELISM_SIZE": "32"}) == []
    # a defined variable with a bad value is caught after substitution
    assert check_sglang_command(argv, {"MODEL_PATH": "/m", "PARALLELISM_SIZE": "lots"}) == [
        "--tp-size: invalid int value 'lots'"
    ]
    # an undefined one is left for the kubelet, and not type-checked
    assert check_sglang_command(argv, {"MODEL_PATH": "/m"}) == []


def test_equals_form_negative_numbers_and_lists() -> None:
    assert kinds(["--model-path=/m", "--mem-fraction-static=0.85"]) == []
    assert kinds(["--model-path", "/m", "--max-total-tokens", "-1"]) == []
    assert kinds(["--model-path", "/m", "--cuda-graph-bs-decode", "1", "2", "4", "480"]) == []
    assert kinds(["--model-path", "/m", "--served-model-name", "a name with spaces"]) == []


# --- what the checker catches -----------------------------------------------------------------


def test_unknown_flag_with_hint() -> None:
    problems = check_sglang_command([*OK, "--enable-deepep-moe"])
    assert problems == ["--enable-deepep-moe: unknown flag in sglang 0.5.23; use --moe-a2a-backend deepep"]


def test_unknown_flag_swallows_its_value() -> None:
    problems = check_args(["--model-path", "/m", "--no-such-flag", "7"])
    assert [p.kind for p in problems] == ["unknown"]


def test_ambiguous_abbreviation() -> None:
    problems = check_args(["--model-path", "/m", "--cuda-graph-bs", "480"])
    assert [p.kind for p in problems] == ["ambiguous"]
    assert "--cuda-graph-bs-decode" in problems[0].message and "--cuda-graph-bs-prefill" in problems[0].message
    assert kinds(["--model-path", "/m", "--cuda-graph-max-bs", "480"]) == ["ambiguous"]


def test_unique_abbreviation_accepted_unless_strict() -> None:
    args = ["--model-path", "/m", "--mem-frac", "0.9"]
    assert kinds(args) == []
    assert kinds(args, abbreviations=False) == ["abbreviation"]
    # the value is still checked against the flag it abbreviates
    assert kinds(["--model-path", "/m", "--mem-frac", "most"]) == ["bad-type"]


def test_deprecated_flags() -> None:
    problems = check_args(["--model-path", "/m", "--enable-dp-attention", "--disable-cuda-graph"])
    assert [p.kind for p in problems] == ["deprecated", "deprecated"]
    assert "use --attn-dp-size <dp-size>" in problems[0].message
    # deprecated only in its help text
    assert kinds(["--model-path", "/m", "--enable-flashinfer-allreduce-fusion"]) == ["deprecated"]


def test_internal_flag() -> None:
    assert kinds(["--model-path", "/m", "--forward-pass-metrics-worker-id", "3"]) == ["internal"]


def test_missing_values() -> None:
    assert kinds(["--model-path", "/m", "--tp-size"]) == ["missing-value"]
    assert kinds(["--model-path", "/m", "--tp-size", "--trust-remote-code"]) == ["missing-value"]
    assert kinds(["--model-path", "/m", "--cuda-graph-bs-decode"]) == ["missing-value"]


def test_extra_values() -> None:
    assert kinds(["--model-path", "/m", "--tp-size", "8", "16"]) == ["extra-value"]
    assert kinds(["--model-path", "/m", "--trust-remote-code", "yes"]) == ["extra-value"]
    assert kinds(["stray", "--model-path", "/m"]) == ["extra-value"]
    assert kinds(["--model-path", "/m", "--trust-remote-code=yes"]) == ["explicit-value"]


def test_choices_and_types() -> None:
    problems = check_args(["--model-path", "/m", "--deepep-mode", "fast"])
    assert [p.kind for p in problems] == ["bad-choice"]
    assert "low_latency" in problems[0].message
    assert kinds(["--model-path", "/m", "--deepep-mode", "low_latency"]) == []
    assert kinds(["--model-path", "/m", "--tp-size", "eight"]) == ["bad-type"]
    assert kinds(["--model-path", "/m", "--mem-fraction-static", "high"]) == ["bad-type"]
    assert kinds(["--model-path", "/m", "--cuda-graph-bs-decode", "1", "x"]) == ["bad-type"]


def test_missing_required() -> None:
    assert kinds(["--tp-size", "8"]) == ["missing-required"]
    assert kinds(["--model", "/m"]) == []  # alias
    assert kinds(["--tp-size", "8"], require=False) == []


def test_reports_every_problem_not_only_the_first() -> None:
    argv = [*OK, "--enable-deepep-moe", "--cuda-graph-bs", "480", "--deepep-mode", "x", "--enable-dp-attention"]
    assert [p.kind for p in check_args(argv[3:])] == ["unknown", "ambiguous", "bad-choice", "deprecated"]


def test_container_and_pod() -> None:
    container = {
        "name": "ome-container",
        "command": LAUNCH,
        "args": ["--model-path", "$(MODEL_PATH)", "--dist-init-addr", "$(ADDR)", "--nnodes", "$(N)"],
        "env": [
            {"name": "HOST", "value": "leader-0.svc"},
            {"name": "ADDR", "value": "$(HOST):5757"},
            {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['x']"}}},
        ],
    }
    assert check_container(container, {"MODEL_PATH": "/m"}) == []
    assert check_container(container, {"MODEL_PATH": "/m", "N": "four"}) == ["--nnodes: invalid int value 'four'"]
    pod = {"containers": [container, {"name": "side", "command": [*LAUNCH, "--model-path", "/m", "--bogus"]}]}
    assert check_pod(pod, {"MODEL_PATH": "/m"}) == ["container side: --bogus: unknown flag in sglang 0.5.23"]


def test_router_commands() -> None:
    argv = [
        *ROUTER,
        "--pd-disaggregation",
        "--policy",
        "random",
        "--service-discovery",
        "--service-discovery-namespace",
        "$(NAMESPACE)",
        "--service-discovery-port",
        "30000",
        "--prefill-selector",
        "component=engine ome.io/inferenceservice=$(INFERENCESERVICE_NAME)",
    ]
    assert check_router_command(argv, {"NAMESPACE": "ns"}) == []
    (bad_policy,) = check_router_command([*ROUTER, "--policy", "fastest"])
    assert bad_policy.startswith("--policy: invalid choice 'fastest'")
    assert check_router_command([*ROUTER, "--service-discovery-port", "http"]) == [
        "--service-discovery-port: invalid int value 'http'"
    ]
    assert check_router_command(OK) == ["expected a router command line, found a sglang one"]


# --- the tables -------------------------------------------------------------------------------


def test_tables_come_from_the_pinned_versions() -> None:
    generator = load_generator()
    sglang, router = load_table("sglang"), load_table("router")
    assert (sglang.package, sglang.version) == ("sglang", generator.SGLANG_VERSION)
    assert (router.package, router.version) == ("sglang-router", generator.ROUTER_VERSION)
    assert f"sglang=={generator.SGLANG_VERSION}" in generator.PINS
    assert len(sglang.options) > 400 and len(router.options) > 50
    spec = sglang.options["--tp-size"]
    assert (spec.dest, spec.nargs, spec.value_kind, spec.aliases) == (
        "tp_size",
        None,
        "int",
        ("--tensor-parallel-size",),
    )
    assert "--enable-deepep-moe" not in sglang.options
    assert sglang.allow_abbrev


REAL_ERROR_KINDS: dict[str, set[str]] = {
    "unrecognized arguments": {"unknown", "extra-value"},
    "ambiguous option": {"ambiguous"},
    "expected": {"missing-value"},
    "invalid choice": {"bad-choice"},
    "invalid int value": {"bad-type"},
    "invalid float value": {"bad-type"},
    "ignored explicit argument": {"explicit-value"},
    "arguments are required": {"missing-required"},
}
NOT_ARGPARSE_ERRORS = {"deprecated", "internal", "abbreviation"}


@pytest.mark.parametrize("parser", ["sglang", "router"])
def test_checker_agrees_with_the_real_parser_on_recorded_probes(parser: str) -> None:
    """Each table carries command lines the real parser judged at generation time."""
    table = load_table(parser)  # type: ignore[arg-type]
    assert table.probes
    for probe in table.probes:
        problems: list[Problem] = check_args(probe["argv"], table)
        errors = [p for p in problems if p.kind not in NOT_ARGPARSE_ERRORS]
        assert (not errors) == probe["ok"], (probe, [str(p) for p in problems])
        if not probe["ok"]:
            expected = next(kinds for text, kinds in REAL_ERROR_KINDS.items() if text in probe["error"])
            assert errors[0].kind in expected, (probe, [str(p) for p in problems])
        deprecated = [p for p in problems if p.kind == "deprecated"]
        if probe["warnings"]:  # the real parser warned about a deprecated flag
            assert deprecated, probe


def test_router_table_matches_the_installed_router_parser() -> None:
    """sglang-router is installed in the dev environment: compare the table with its real parser."""
    router_args = pytest.importorskip("sglang_router.router_args")
    installed = importlib.metadata.version("sglang-router")
    table = load_table("router")
    if installed != table.version:
        pytest.skip(f"installed sglang-router {installed} is not the table's {table.version}")
    generator = load_generator()
    parser = argparse.ArgumentParser(prog="launch_router.py")
    router_args.RouterArgs.add_cli_args(parser, use_router_prefix=False)
    live = generator.describe_parser(parser)
    committed = generator.json.loads((REPO / "ome_operator" / "render" / "sglang_router_flags.json").read_text())
    assert live["options"] == committed["options"]
