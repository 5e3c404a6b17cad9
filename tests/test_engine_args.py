"""The pure SGLang/router command-line checker (ome_operator.render.engine_args) and its tables."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ome_operator.render.engine_args import (
    REFUSALS,
    RETIRED_HINTS,
    FlagFinding,
    Problem,
    accepted_by_some_version,
    accepting_versions,
    check_args,
    check_command,
    check_container,
    check_engine_command,
    check_engine_container,
    check_pod,
    check_router_command,
    check_sglang_command,
    default_sglang_version,
    expand_k8s,
    find_command,
    flag_replacements,
    image_sglang_version,
    image_tag,
    load_table,
    sglang_versions,
    sglang_versions_for_image,
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


# --- the tables ---------------------------------------------------------------------------------


def test_tables_come_from_the_pinned_versions() -> None:
    generator = load_generator()
    assert sglang_versions() == tuple(r.version for r in generator.RELEASES)
    assert {"0.4.9.post2", "0.5.5", "0.5.23"} <= set(sglang_versions())
    assert default_sglang_version() == generator.CURRENT.version == generator.SGLANG_VERSION
    for release in generator.RELEASES:
        table = load_table("sglang", release.version)
        assert (table.package, table.version) == ("sglang", release.version)
        assert f"sglang=={release.version}" in release.pins
        raw = generator.json.loads(release.out.read_text())
        assert raw["pins"] == list(release.pins) and raw["torch_stub_version"] == release.torch
        assert raw["stubbed_modules"] and {m.split(".")[0] for m in raw["stubbed_modules"]} <= {"torch", "triton"}
        assert len(table.options) > 150 and table.allow_abbrev
        assert "python3 -m sglang.launch_server" in table.entry_points
        spec = table.options["--tp-size"]
        # (0.4.9.post2 and 0.5.5 declare it as --tensor-parallel-size/--tp-size, dest tensor_parallel_size)
        assert (spec.nargs, spec.value_kind, spec.aliases) == (None, "int", ("--tensor-parallel-size",))
        assert spec.dest in ("tp_size", "tensor_parallel_size")
    sglang, router = load_table("sglang"), load_table("router")
    assert sglang == load_table("sglang", default_sglang_version())
    assert (router.package, router.version) == ("sglang-router", generator.ROUTER_VERSION)
    assert len(sglang.options) > 400 and len(router.options) > 50
    assert "--enable-deepep-moe" not in sglang.options
    with pytest.raises(KeyError):
        load_table("sglang", "0.0.1")


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
TABLES = [("sglang", v) for v in sglang_versions()] + [("router", None)]


@pytest.mark.parametrize(("parser", "version"), TABLES, ids=[f"{p}-{v or 'router'}" for p, v in TABLES])
def test_checker_agrees_with_the_real_parser_on_recorded_probes(parser: str, version: str | None) -> None:
    """Each table carries command lines its real parser judged at generation time."""
    table = load_table(parser, version)  # type: ignore[arg-type]
    assert table.probes
    for probe in table.probes:
        problems: list[Problem] = check_args(probe["argv"], table)
        errors = [p for p in problems if p.kind not in NOT_ARGPARSE_ERRORS]
        assert (not errors) == probe["ok"], (probe, [str(p) for p in problems])
        assert {p.kind for p in errors} <= REFUSALS
        if not probe["ok"]:
            expected = next(kinds for text, kinds in REAL_ERROR_KINDS.items() if text in probe["error"])
            assert errors[0].kind in expected, (probe, [str(p) for p in problems])
        deprecated = [p for p in problems if p.kind == "deprecated"]
        if probe["warnings"]:  # the real parser warned about a deprecated flag
            assert deprecated, probe


# --- which release an image runs --------------------------------------------------------------

ALL = sglang_versions()


@pytest.mark.parametrize(
    ("image", "tag", "named", "chosen"),
    [
        ("docker.io/lmsysorg/sglang:v0.5.5", "v0.5.5", "0.5.5", ("0.5.5",)),
        ("lmsysorg/sglang:v0.5.5-cu126", "v0.5.5-cu126", "0.5.5", ("0.5.5",)),
        ("lmsysorg/sglang:0.4.9.post2-cu128-b200", "0.4.9.post2-cu128-b200", "0.4.9.post2", ("0.4.9.post2",)),
        ("lmsysorg/sglang:v0.4.9.post2", "v0.4.9.post2", "0.4.9.post2", ("0.4.9.post2",)),
        ("lmsysorg/sglang:v0.5.23", "v0.5.23", "0.5.23", ("0.5.23",)),
        ("lmsysorg/sglang:v0.5.23@sha256:" + "0" * 64, "v0.5.23", "0.5.23", ("0.5.23",)),
        ("registry.example:5000/lmsysorg/sglang:v0.5.5_rocm", "v0.5.5_rocm", "0.5.5", ("0.5.5",)),
        # no version, or one without a table: every release we know
        ("docker.io/lmsysorg/sglang:dev", "dev", None, ALL),
        ("lmsysorg/sglang:latest", "latest", None, ALL),
        ("lmsysorg/sglang", None, None, ALL),
        ("lmsysorg/sglang@sha256:" + "0" * 64, None, None, ALL),
        ("registry.example:5000/lmsysorg/sglang", None, None, ALL),
        ("lmsysorg/sglang:v0.5.6-cu129", "v0.5.6-cu129", "0.5.6", ALL),
        ("lmsysorg/sglang:v0.5.55", "v0.5.55", "0.5.55", ALL),  # not 0.5.5
        ("lmsysorg/sglang:v0.5.5.post1", "v0.5.5.post1", "0.5.5.post1", ALL),  # not 0.5.5
        ("lmsysorg/sglang:v0.5", "v0.5", "0.5", ALL),
        ("lmsysorg/sglang:nightly-0.5.5", "nightly-0.5.5", None, ALL),
        ("", None, None, ALL),
        (None, None, None, ALL),
    ],
)
def test_versions_for_image(image: str | None, tag: str | None, named: str | None, chosen: tuple[str, ...]) -> None:
    assert image_tag(image) == tag
    assert image_sglang_version(image) == named
    assert sglang_versions_for_image(image) == chosen


# --- per release: what the real parsers said, as findings ---------------------------------------


def real_verdicts(argv: list[str]) -> dict[str, Mapping[str, Any]]:
    """The real parser's recorded verdict on argv, per release (every table carries the same probes)."""
    verdicts = {}
    for version in ALL:
        (probe,) = [p for p in load_table("sglang", version).probes if p["argv"] == argv]
        verdicts[version] = probe
    return verdicts


PROBES = [p["argv"] for p in load_table("sglang").probes]


@pytest.mark.parametrize("argv", PROBES, ids=[" ".join(a) for a in PROBES])
def test_accepting_versions_are_the_real_parsers(argv: list[str]) -> None:
    """For an image that names no release, the releases that accept a probe are exactly those
    whose real parser accepted it; for an image that names one, that one's verdict."""
    verdicts = real_verdicts(argv)
    real = tuple(v for v in ALL if verdicts[v]["ok"])
    assert accepting_versions("lmsysorg/sglang:dev", [*LAUNCH, *argv]) == real
    assert accepted_by_some_version(None, [*LAUNCH, *argv]) == bool(real)
    for version in ALL:
        image = f"lmsysorg/sglang:v{version}-cu126"
        assert accepting_versions(image, [*LAUNCH, *argv]) == ((version,) if verdicts[version]["ok"] else ())
        findings = check_engine_command(image, [*LAUNCH, *argv])
        assert any(f.refused_by == (version,) for f in findings) == (not verdicts[version]["ok"]), findings
        if verdicts[version]["warnings"]:
            assert any(f.kind == "deprecated" and f.accepted_by == (version,) for f in findings), findings
    findings = check_engine_command("lmsysorg/sglang:dev", [*LAUNCH, *argv])
    refusing = {v for f in findings for v in f.refused_by}
    assert refusing == {v for v in ALL if not verdicts[v]["ok"]}, findings
    assert all(f.refused_by and f.kind in REFUSALS for f in findings), findings


# Flags whose fate differs between releases; the verdicts asserted are the recorded real ones.
CHANGED = [
    (["--model-path", "/m", "--enable-deepep-moe"], "--enable-deepep-moe", "--moe-a2a-backend deepep"),
    (["--model-path", "/m", "--enable-ep-moe"], "--enable-ep-moe", "--ep-size <n>"),
    (["--model-path", "/m", "--cuda-graph-bs", "480"], "--cuda-graph-bs", "--cuda-graph-bs-decode"),
    (["--model-path", "/m", "--moe-a2a-backend", "deepep"], "--moe-a2a-backend", None),
    (["--model-path", "/m", "--attn-dp-size", "8"], "--attn-dp-size", None),
    (["--model-path", "/m", "--enable-tf32-matmul"], "--enable-tf32-matmul", None),
]


@pytest.mark.parametrize(("argv", "flag", "replacement"), CHANGED, ids=[c[1] for c in CHANGED])
def test_flag_findings_across_releases(argv: list[str], flag: str, replacement: str | None) -> None:
    verdicts = real_verdicts(argv)
    accepted = tuple(v for v in ALL if verdicts[v]["ok"])
    refused = tuple(v for v in ALL if not verdicts[v]["ok"])
    assert accepted and refused, f"{flag} is no longer a flag whose fate differs: {verdicts}"
    (finding,) = check_engine_command("lmsysorg/sglang:dev", [*LAUNCH, *argv])
    assert (finding.flag, finding.accepted_by, finding.refused_by) == (flag, accepted, refused)
    expected_kind = next(iter(REAL_ERROR_KINDS[t] for t in REAL_ERROR_KINDS if t in verdicts[refused[-1]]["error"]))
    assert finding.kind in expected_kind
    assert finding.message.startswith(f"{flag} is refused by SGLang {', '.join(refused)}: ")
    assert f"accepted by {', '.join(accepted)}" in finding.message
    if replacement is None:
        assert finding.replacement is None
    else:
        assert finding.replacement is not None and replacement in finding.replacement
        assert finding.message.endswith(f"; use {finding.replacement}")
    assert str(finding) == finding.message
    # an image that names a release that accepts it: nothing to say
    assert check_engine_command(f"lmsysorg/sglang:v{accepted[-1]}", [*LAUNCH, *argv]) == []
    (pinned,) = check_engine_command(f"lmsysorg/sglang:v{refused[-1]}", [*LAUNCH, *argv])
    assert (pinned.accepted_by, pinned.refused_by) == ((), (refused[-1],))


def test_enable_deepep_moe_message() -> None:
    argv = [*LAUNCH, "--model-path", "/m", "--enable-deepep-moe"]
    verdicts = real_verdicts(argv[3:])
    accepted = [v for v in ALL if verdicts[v]["ok"]]
    refused = [v for v in ALL if not verdicts[v]["ok"]]
    (finding,) = check_engine_command(None, argv)
    assert finding == FlagFinding(
        flag="--enable-deepep-moe",
        kind="unknown",
        accepted_by=tuple(accepted),
        refused_by=tuple(refused),
        replacement="--moe-a2a-backend deepep",
        message=f"--enable-deepep-moe is refused by SGLang {', '.join(refused)}: unknown flag "
        f"(accepted by {', '.join(accepted)}); use --moe-a2a-backend deepep",
    )
    # pinned to the newest release: the last one that had it is named
    (newest,) = check_engine_command(f"lmsysorg/sglang:v{ALL[-1]}", argv)
    assert f"(last accepted by {accepted[-1]})" in newest.message


def test_deprecation_is_a_finding_only_for_a_pinned_release() -> None:
    argv = ["--model-path", "/m", "--enable-dp-attention"]
    verdicts = real_verdicts(argv)
    warned = [v for v in ALL if verdicts[v]["warnings"]]
    assert warned and all(verdicts[v]["ok"] for v in ALL)
    assert check_engine_command("lmsysorg/sglang:dev", [*LAUNCH, *argv]) == []
    (finding,) = check_engine_command(f"lmsysorg/sglang:v{warned[-1]}", [*LAUNCH, *argv])
    assert (finding.kind, finding.accepted_by, finding.refused_by) == ("deprecated", (warned[-1],), ())
    recorded = load_table("sglang", warned[-1]).options["--enable-dp-attention"].deprecated or {}
    assert finding.replacement == recorded["replacement"]
    assert finding.message == f"--enable-dp-attention: deprecated in SGLang {warned[-1]}; use {finding.replacement}"
    # a release that accepts it silently
    quiet = [v for v in ALL if not verdicts[v]["warnings"]]
    assert check_engine_command(f"lmsysorg/sglang:v{quiet[0]}", [*LAUNCH, *argv]) == []


def test_refusal_next_to_a_deprecation_in_another_release() -> None:
    # --enable-dp-attention with a flag only the newest release has
    argv = ["--model-path", "/m", "--enable-dp-attention", "--enable-tf32-matmul"]
    findings = check_engine_command("lmsysorg/sglang:latest", [*LAUNCH, *argv])
    assert [f.flag for f in findings] == ["--enable-tf32-matmul"]


def test_findings_are_in_command_line_order_and_stable() -> None:
    argv = [
        *LAUNCH,
        "--enable-deepep-moe",
        "--tp-size",
        "eight",
        "--cuda-graph-bs",
        "480",
        "--deepep-mode",
        "bogus",
        "stray",
    ]
    findings = check_engine_command(None, argv)
    # the value after --deepep-mode's one value is a finding of its own
    assert [(f.flag, f.kind) for f in findings] == [
        ("--enable-deepep-moe", "unknown"),
        ("--tp-size", "bad-type"),
        ("--cuda-graph-bs", "ambiguous"),
        ("--deepep-mode", "bad-choice"),
        ("--deepep-mode", "extra-value"),
        ("--model-path", "missing-required"),
    ]
    assert findings == check_engine_command(None, argv)
    for i in (1, 3, 4, 5):  # every release refuses these
        assert (findings[i].accepted_by, findings[i].refused_by) == ((), ALL), findings[i]
    assert "'stray'" in findings[4].message
    assert [f.flag for f in check_engine_command(None, [*LAUNCH, "stray", "--model-path", "/m", "--", "x"])] == [
        "stray",
        "--",
    ]


def test_variables_and_other_command_lines() -> None:
    argv = [*LAUNCH, "--model-path", "$(MODEL_PATH)", "--tp-size", "$(TP)"]
    assert check_engine_command(None, argv, {"MODEL_PATH": "/m", "TP": "8"}) == []
    (bad,) = check_engine_command("lmsysorg/sglang:v0.5.5", argv, {"MODEL_PATH": "/m", "TP": "lots"})
    assert (bad.flag, bad.kind, bad.refused_by) == ("--tp-size", "bad-type", ("0.5.5",))
    assert check_engine_command(None, argv) == []  # undefined: left for the kubelet
    assert check_engine_command(None, ["nginx", "-g", "daemon off;"]) == []
    assert check_engine_command(None, [*ROUTER, "--policy", "bogus"]) == []  # the router is not the server
    assert check_engine_command(None, []) == []
    assert not accepted_by_some_version(None, ["nginx"])
    assert accepting_versions(None, [*ROUTER]) == ()


def test_unknown_release_is_said() -> None:
    (finding,) = check_engine_command("lmsysorg/sglang:v0.5.6", [*OK, "--no-such-flag"])
    assert finding.refused_by == ALL
    assert finding.message.endswith(f"(the image names SGLang 0.5.6, which has no table: checked {', '.join(ALL)})")
    (pinned,) = check_engine_command("lmsysorg/sglang:v0.5.5", [*OK, "--no-such-flag"])
    assert "has no table" not in pinned.message


def test_sglang_serve_needs_a_release_that_has_it() -> None:
    serve = ["sglang", "serve", "--model-path", "/m"]
    has = [v for v in ALL if "sglang serve" in load_table("sglang", v).entry_points]
    lacks = [v for v in ALL if v not in has]
    assert has and lacks  # 0.4.9.post2 ships no `sglang` console script
    (finding,) = check_engine_command(None, serve)
    assert (finding.flag, finding.kind, finding.refused_by) == ("sglang serve", "not-a-command", tuple(lacks))
    assert finding.replacement == "-m sglang.launch_server"
    assert accepting_versions(None, serve) == tuple(has)
    assert not accepted_by_some_version(f"lmsysorg/sglang:v{lacks[0]}", serve)
    assert accepted_by_some_version(
        f"lmsysorg/sglang:v{lacks[0]}", ["python3", "-m", "sglang.launch_server", *serve[2:]]
    )


def test_check_engine_container_reads_image_command_args_env() -> None:
    container = {
        "name": "ome-container",
        "image": "docker.io/lmsysorg/sglang:v0.5.5-cu126",
        "command": LAUNCH,
        "args": ["--model-path", "$(MODEL_PATH)", "--tp-size", "$(TP)", "--enable-deepep-moe"],
        "env": [{"name": "TP", "value": "eight"}],
    }
    findings = check_engine_container(container, {"MODEL_PATH": "/m"})
    assert [(f.flag, f.refused_by) for f in findings] == [
        ("--tp-size", ("0.5.5",)),
        ("--enable-deepep-moe", ("0.5.5",)),
    ]
    assert check_engine_container({"name": "side", "image": "busybox", "command": ["sleep", "inf"]}) == []
    strict = check_engine_container(
        {"image": "lmsysorg/sglang:v0.5.23", "command": [*OK, "--mem-frac", "0.9"]}, abbreviations=False
    )
    assert [(f.kind, f.replacement) for f in strict] == [("abbreviation", "--mem-fraction-static")]


def test_replacements_come_from_the_tables_and_the_hints() -> None:
    replacements = flag_replacements()
    for flag, hint in RETIRED_HINTS.items():
        assert replacements[flag] == hint
    recorded = {
        option: spec.deprecated["replacement"]
        for v in ALL
        for option, spec in load_table("sglang", v).options.items()
        if spec.deprecated and spec.deprecated.get("replacement")
    }
    assert recorded, "no table records a deprecated flag's replacement any more"
    for flag, replacement in recorded.items():
        assert replacements[flag] == replacement
    # the retired flags really are gone from the current release (else the hint is stale)
    for flag in RETIRED_HINTS:
        assert flag not in load_table("sglang").options
        assert any(flag in load_table("sglang", v).options for v in ALL), flag


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
