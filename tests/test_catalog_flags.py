"""Every SGLang command line we ship is one the SGLang release its image names accepts; OME's is reported.

The checker runs over ome_operator/render/sglang_flags/<version>.json, the tables generated from the
real ``sglang.srt.server_args`` parsers of sglang 0.4.9.post2, 0.5.5 and 0.5.23 (``make sglang-flags``),
picking the table(s) by each container's image tag. The same command lines are also fed to the real
parsers, in the generator's throwaway venvs (sglang and a few light packages, torch and triton
stubbed; built on first use, about a minute for the three, then cached), and the tables are
regenerated and compared with the committed ones.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ome_operator.render.engine_args import (
    check_args,
    check_command_problems,
    check_engine_command,
    check_engine_container,
    check_pod,
    check_router_command,
    find_command,
    image_sglang_version,
    load_table,
    sglang_versions,
    sglang_versions_for_image,
)

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config"
# OME's published Kimi K2 files: in shared/ next to the repository, and the same three files kept
# in the repository as a golden case's input (so these tests never skip on a fresh clone).
GOLDEN_REFERENCE = REPO / "tests" / "golden" / "kimi-k2-reference" / "input"
SHARED_REFERENCE = REPO.parent / "shared" / "reference" / "ome"
REFERENCE = SHARED_REFERENCE if SHARED_REFERENCE.is_dir() else GOLDEN_REFERENCE
GENERATOR = REPO / "hack" / "sglang_flags.py"
SMG_GENERATOR = REPO / "hack" / "smg_flags.py"

pytestmark = pytest.mark.sglang


@dataclass(frozen=True)
class Runner:
    """One engine/decoder container of a runtime, with the variables its pod would get."""

    source: str  # file: spec.<component>.<role>.runner
    container: dict[str, Any]
    env: dict[str, str]


def runtime_docs(root: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(root.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") in ("ClusterServingRuntime", "ServingRuntime"):
                yield path, doc


def gpus(container: dict[str, Any]) -> int:
    resources = container.get("resources") or {}
    for section in ("limits", "requests"):
        value = (resources.get(section) or {}).get("nvidia.com/gpu")
        if value is not None:
            return int(str(value))
    return 0


def runners(root: Path) -> list[Runner]:
    """Engine and decoder runners (leader, worker, or component-level) of every runtime under root,
    with $(MODEL_PATH), $(PARALLELISM_SIZE) and the LWS_* variables set as the pods get them."""
    found = []
    for path, doc in runtime_docs(root):
        name = doc["metadata"]["name"]
        for component in ("engineConfig", "decoderConfig"):
            spec = (doc.get("spec") or {}).get(component)
            if not spec:
                continue
            short = "engine" if component == "engineConfig" else "decoder"
            multi = "leader" in spec or "worker" in spec
            size = int(((spec.get("worker") or {}).get("size")) or 0)
            roles = ["leader", "worker"] if multi else [None]
            for role in roles:
                runner = dict(spec.get("runner") or {})
                if role:
                    runner.update((spec.get(role) or {}).get("runner") or {})
                if not runner:
                    continue
                env = {"MODEL_PATH": f"/raid/models/{name}"}
                if multi:
                    env |= {
                        "PARALLELISM_SIZE": str(gpus(runner) * (1 + size)),
                        "LWS_LEADER_ADDRESS": f"isvc-{short}-0-leader-0.isvc-{short}.ns.svc.cluster.local",
                        "LWS_GROUP_SIZE": str(1 + size),
                        "LWS_WORKER_INDEX": "0" if role == "leader" else "1",
                    }
                where = f"{component}.{role}.runner" if role else f"{component}.runner"
                found.append(Runner(f"{path.relative_to(root)}: spec.{where}", runner, env))
    return found


def routers(root: Path) -> list[tuple[str, list[str]]]:
    found = []
    for path, doc in runtime_docs(root):
        runner = ((doc.get("spec") or {}).get("routerConfig") or {}).get("runner")
        if runner:
            argv = [str(a) for a in (runner.get("command") or []) + (runner.get("args") or [])]
            found.append((f"{path.relative_to(root)}: spec.routerConfig.runner", argv))
    return found


def argv_of(runner: Runner) -> list[str]:
    c = runner.container
    return [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]


def env_of(runner: Runner) -> dict[str, str]:
    env = dict(runner.env)
    for entry in runner.container.get("env") or []:
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
    return env


OURS = runners(CONFIG)


def test_catalog_has_engine_command_lines() -> None:
    assert len(OURS) >= 12  # Kimi 4, DeepSeek 4, Qwen 1, Llama 70B 1, Llama 1B PD 2
    for runner in OURS:
        command = find_command(argv_of(runner), env_of(runner))
        assert command is not None and command.parser == "sglang", runner.source


@pytest.mark.parametrize("runner", OURS, ids=[r.source for r in OURS])
def test_catalog_engine_flags(runner: Runner) -> None:
    """Nothing unknown, ambiguous, deprecated, internal, abbreviated, or of the wrong arity/type/choice."""
    problems = check_command_problems(argv_of(runner), env_of(runner), expect="sglang", abbreviations=False)
    assert [str(p) for p in problems] == [], f"{runner.source} vs {load_table().label}"


def image_of(runner: Runner) -> str | None:
    image = runner.container.get("image")
    return image if isinstance(image, str) else None


@pytest.mark.parametrize("runner", OURS, ids=[r.source for r in OURS])
def test_catalog_engine_flags_for_the_release_the_image_names(runner: Runner) -> None:
    """Each runner's image names one release there is a table for, and that release's parser
    accepts the command line with nothing to warn about."""
    image = image_of(runner)
    assert image_sglang_version(image) in sglang_versions(), (runner.source, image)
    assert len(sglang_versions_for_image(image)) == 1
    findings = check_engine_command(image, argv_of(runner), env_of(runner), abbreviations=False)
    assert [str(f) for f in findings] == [], runner.source


ROUTERS = routers(CONFIG)
ROUTER_ENV = {"NAMESPACE": "kimi-k2-instruct", "INFERENCESERVICE_NAME": "kimi-k2-instruct"}


@pytest.mark.parametrize(("source", "argv"), ROUTERS, ids=[s for s, _ in ROUTERS])
def test_catalog_router_flags(source: str, argv: list[str]) -> None:
    assert check_router_command(argv, ROUTER_ENV, abbreviations=False) == [], source


@pytest.mark.parametrize(("source", "argv"), ROUTERS, ids=[s for s, _ in ROUTERS])
def test_catalog_router_flags_real_parser(source: str, argv: list[str]) -> None:
    """The catalog's router is the SGLang gateway (`smg launch`); its real parser is installed in the
    dev environment (PyPI smg, pinned like the table): run it too."""
    launch_router = pytest.importorskip("smg.launch_router")
    command = find_command(argv, ROUTER_ENV)
    assert command is not None and command.parser == "smg"
    assert command.entry == "smg launch"
    parsed = launch_router.parse_router_args(list(command.args))
    selectors = [parsed.selector, parsed.prefill_selector, parsed.decode_selector]
    for selector in selectors:
        if selector:  # one argv element with spaces is split by the router into label pairs
            assert selector["ome.io/inferenceservice"] == "kimi-k2-instruct", (source, selector)
            assert selector["component"] in ("engine", "decoder"), (source, selector)
    assert any(selectors), source
    assert parsed.service_discovery and parsed.service_discovery_namespace == "kimi-k2-instruct"


def test_catalog_model_runtime_pairs_match() -> None:
    """Each sample's model satisfies its named runtime's strict format/size rules."""
    from ome_operator.api.load import load_paths
    from ome_operator.render.select import ModelFacts, check_runtime

    loaded = load_paths([CONFIG])
    assert [str(p) for p in loaded.problems] == []
    models = {o.name: o for o in loaded.objects if o.crd.kind == "ClusterBaseModel"}
    runtimes = {o.name: o for o in loaded.objects if o.crd.kind == "ClusterServingRuntime"}
    services = [o for o in loaded.objects if o.crd.kind == "InferenceService"]
    assert len(services) >= 5
    for isvc in services:
        model = models[isvc.spec.model.name]
        runtime = runtimes[isvc.spec.runtime.name]
        assert check_runtime(ModelFacts.of(model.spec), runtime, auto_only=False) is None, isvc.name


# --- OME's published files: report, and prove the checker sees the known problems --------------


def test_reference_ome_runtime_is_reported() -> None:
    theirs = runners(REFERENCE)
    assert theirs, "no engine/decoder runner found in the reference files"
    kinds: set[tuple[str, str | None]] = set()
    print(f"\nOME reference runtimes vs {load_table().label} (reported, not failed):")
    for runner in theirs:
        problems = check_command_problems(argv_of(runner), env_of(runner), expect="sglang")
        print(f"  {runner.source}: {len(problems)} problem(s)")
        for p in problems:
            print(f"    {p}")
            kinds.add((p.kind, p.flag))
    for source, argv in routers(REFERENCE):
        said = [str(p) for p in check_router_command(argv, ROUTER_ENV)]
        print(f"  {source}: {said or 'ok'}")
    # The known problems must be seen, or the checker has gone blind.
    assert ("unknown", "--enable-deepep-moe") in kinds
    assert ("ambiguous", "--cuda-graph-bs") in kinds
    assert ("deprecated", "--enable-dp-attention") in kinds


def recorded_verdicts(argv: list[str]) -> dict[str, bool]:
    """What each release's real parser said about a probe, as recorded in its table."""
    return {v: next(p["ok"] for p in load_table("sglang", v).probes if p["argv"] == argv) for v in sglang_versions()}


def test_reference_kimi_runtime_per_release() -> None:
    """OME's Kimi K2 runtime runs lmsysorg/sglang:dev, which names no release: every release we
    have a table for is checked, and --enable-deepep-moe is reported as refused by the releases whose
    real parser refused it (and accepted by the others), with what replaced it."""
    theirs = runners(GOLDEN_REFERENCE)
    assert len(theirs) == 4, [r.source for r in theirs]  # prefill and decode, leader and worker
    deepep = recorded_verdicts(["--model-path", "/m", "--enable-deepep-moe"])
    cuda_graph_bs = recorded_verdicts(["--model-path", "/m", "--cuda-graph-bs", "480"])
    for runner in theirs:
        image = image_of(runner)
        assert image is not None and image.endswith(":dev"), image
        assert sglang_versions_for_image(image) == sglang_versions()
        findings = {f.flag: f for f in check_engine_command(image, argv_of(runner), env_of(runner))}
        finding = findings["--enable-deepep-moe"]
        assert finding.kind == "unknown"
        assert finding.refused_by == tuple(v for v, ok in deepep.items() if not ok)
        assert finding.accepted_by == tuple(v for v, ok in deepep.items() if ok)
        assert finding.replacement == "--moe-a2a-backend deepep"
        assert finding.message.endswith("; use --moe-a2a-backend deepep")
        print(f"\n  {runner.source}:" + "".join(f"\n    {f}" for f in findings.values()))
        if "--cuda-graph-bs" in argv_of(runner):  # the decoder's
            graph = findings["--cuda-graph-bs"]
            assert graph.kind == "ambiguous"
            assert graph.refused_by == tuple(v for v, ok in cuda_graph_bs.items() if not ok)
            assert graph.replacement is not None and "--cuda-graph-bs-decode" in graph.replacement
        # the same container mapping, read by check_engine_container
        assert check_engine_container(runner.container, runner.env) == list(findings.values())


# --- the real parser, when the generator's venv is already built --------------------------------


@pytest.fixture(scope="module")
def real_parser() -> None:
    """The generator's throwaway venvs (one per sglang release, without GPU packages), built once per
    machine (about a minute for the three, cached under ~/.cache/ome-operator). OME_SGLANG_NO_VENV=1
    skips the real-parser tests."""
    if os.environ.get("OME_SGLANG_NO_VENV"):
        pytest.skip("OME_SGLANG_NO_VENV is set: checking against the committed tables only")
    proc = subprocess.run(
        [sys.executable, str(GENERATOR), "--ensure-venv"], capture_output=True, text=True, check=False, timeout=900
    )
    if proc.returncode != 0:
        pytest.skip(f"could not build the real-parser venvs (the table checks still ran): {proc.stderr[-2000:]}")


def test_catalog_and_reference_against_the_real_parser(real_parser: None) -> None:
    """Each release's real parser, for the releases each image picks: it accepts every catalog
    command line (its image names 0.5.23) without a deprecation warning, and judges OME's (image
    :dev, so every release) as the checker does over that release's table."""
    requests: list[dict[str, Any]] = []
    for runner in OURS:
        command = find_command(argv_of(runner), env_of(runner))
        assert command is not None
        for version in sglang_versions_for_image(image_of(runner)):
            requests.append(
                {
                    "parser": "sglang",
                    "argv": list(command.args),
                    "version": version,
                    "source": runner.source,
                    "ours": True,
                }
            )
    smg_requests = []
    for source, argv in ROUTERS:
        command = find_command(argv, ROUTER_ENV)
        assert command is not None and command.parser == "smg"
        smg_requests.append({"argv": list(command.args), "source": source})
    # smg's parser has a venv of its own (hack/smg_flags.py).
    smg = subprocess.run(
        [sys.executable, str(SMG_GENERATOR), "--parse"],
        input=json.dumps(smg_requests),
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    for request, verdict in zip(smg_requests, json.loads(smg.stdout), strict=True):
        assert verdict["ok"] and not verdict["warnings"], (request["source"], verdict)
    for runner in runners(REFERENCE):
        command = find_command(argv_of(runner), env_of(runner))
        assert command is not None
        for version in sglang_versions_for_image(image_of(runner)):
            requests.append(
                {
                    "parser": "sglang",
                    "argv": list(command.args),
                    "version": version,
                    "source": runner.source,
                    "ours": False,
                }
            )
    assert {r["version"] for r in requests if not r["ours"]} == set(sglang_versions())
    proc = subprocess.run(
        [sys.executable, str(GENERATOR), "--parse"],
        input=json.dumps(requests),
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    verdicts = json.loads(proc.stdout)
    for request, verdict in zip(requests, verdicts, strict=True):
        where = (request["source"], request.get("version"), verdict)
        if request["ours"]:
            assert verdict["ok"] and not verdict["warnings"], where
            continue
        assert verdict["version"] == request["version"]
        mine = check_args(request["argv"], load_table("sglang", request["version"]))
        errors = [p for p in mine if p.kind not in ("deprecated", "internal", "abbreviation")]
        assert (not errors) == verdict["ok"], (where, [str(p) for p in mine])
        if verdict["warnings"]:  # (an ambiguous option aborts argparse before any action warns)
            assert any(p.kind == "deprecated" for p in mine), where
    # and the per-release findings say the same: refused_by is exactly the refusing releases
    for runner in runners(REFERENCE):
        real = {
            r["version"]: v["ok"]
            for r, v in zip(requests, verdicts, strict=True)
            if not r["ours"] and r["source"] == runner.source
        }
        findings = check_engine_command(image_of(runner), argv_of(runner), env_of(runner))
        assert {v for f in findings for v in f.refused_by} == {v for v, ok in real.items() if not ok}, runner.source


def test_make_sglang_flags_is_reproducible(real_parser: None) -> None:
    """Regenerating the tables from the real parsers gives the committed files byte for byte."""
    for generator in (GENERATOR, SMG_GENERATOR):
        proc = subprocess.run(
            [sys.executable, str(generator), "--check"], capture_output=True, text=True, check=False, timeout=600
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_tables_name_the_versions_they_came_from() -> None:
    index = json.loads((REPO / "ome_operator" / "render" / "sglang_flags.json").read_text())
    assert index["default"] == load_table("sglang").version == "0.5.23"
    assert index["versions"] == list(sglang_versions()) == ["0.4.9.post2", "0.5.5", "0.5.23"]
    for version, relative in index["tables"].items():
        raw = json.loads((REPO / "ome_operator" / "render" / relative).read_text())
        assert raw["version"] == load_table("sglang", version).version == version
        assert raw["stubbed_modules"] and all(m.split(".")[0] in ("torch", "triton") for m in raw["stubbed_modules"])
    router = load_table("router")
    installed = importlib.metadata.version("sglang-router")
    assert router.version == "0.3.2", f"router table from {router.version}; dev environment has {installed}"
    smg = load_table("smg")
    assert smg.version == "1.13.0" == importlib.metadata.version("smg"), smg.version
    assert smg.probes and all(p["argv"] for p in smg.probes)


# --- rendered manifests: what the pods would actually run ---------------------------------------


def rendered_pods(root: Path) -> list[tuple[str, dict[str, Any]]]:
    """(Kind/namespace/name, pod spec) of every workload `ome-operator render` produces for root."""
    from ome_operator.api.load import load_paths
    from ome_operator.render.bundle import render_bundle
    from ome_operator.render.context import Settings

    loaded = load_paths([root])
    assert [str(p) for p in loaded.problems] == []
    bundle = render_bundle(loaded.objects, Settings(), ["node-0"])
    assert [str(p) for p in bundle.problems] == []
    pods = []
    for obj in bundle.objects:
        template = ((obj.get("spec") or {}).get("template") or {}).get("spec")
        if template:
            meta = obj["metadata"]
            pods.append((f"{obj['kind']}/{meta.get('namespace')}/{meta['name']}", template))
    return pods


# Kubernetes fills these in from the pod's labels at run time (a worker's rank).
RUNTIME_ENV = {"LWS_WORKER_INDEX": "1"}


def test_rendered_catalog_pods_pass() -> None:
    checked = 0
    for where, pod in rendered_pods(CONFIG):
        for container in pod.get("containers") or []:
            argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
            if find_command(argv) is not None:
                checked += 1
        assert check_pod(pod, RUNTIME_ENV, abbreviations=False) == [], where
    # Kimi 2 + 2 StatefulSets, DeepSeek 2 + 2, Qwen 1, Llama 70B 1, Llama 1B 2, and 5 routers
    assert checked >= 17


def test_rendered_catalog_pods_pass_for_their_release() -> None:
    for where, pod in rendered_pods(CONFIG):
        for container in pod.get("containers") or []:
            findings = check_engine_container(container, RUNTIME_ENV, abbreviations=False)
            assert [str(f) for f in findings] == [], (where, container.get("name"))


def test_rendered_reference_pods_are_caught() -> None:
    pods = rendered_pods(REFERENCE)
    problems = [p for where, pod in pods for p in check_pod(pod, RUNTIME_ENV)]
    assert any("--enable-deepep-moe: unknown flag" in p for p in problems)
    assert any("--cuda-graph-bs: ambiguous" in p for p in problems)
    findings = [
        f for _, pod in pods for c in pod.get("containers") or [] for f in check_engine_container(c, RUNTIME_ENV)
    ]
    assert any(f.flag == "--enable-deepep-moe" and f.replacement == "--moe-a2a-backend deepep" for f in findings)
