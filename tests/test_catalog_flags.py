"""Every SGLang command line we ship is one the pinned SGLang release accepts; OME's is reported.

The checker runs over ome_operator/render/sglang_flags.json, the table generated from the real
``sglang.srt.server_args`` parser of sglang 0.5.23 (``make sglang-flags``). The same command lines
are also fed to the real parser, in the generator's throwaway venv (sglang and a few light packages,
torch and triton stubbed; built on first use, ~30 s, then cached), and the tables are regenerated
and compared with the committed ones.
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
    check_command_problems,
    check_pod,
    check_router_command,
    find_command,
    load_table,
)

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config"
REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "ome"
GENERATOR = REPO / "hack" / "sglang_flags.py"

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


ROUTERS = routers(CONFIG)
ROUTER_ENV = {"NAMESPACE": "kimi-k2-instruct", "INFERENCESERVICE_NAME": "kimi-k2-instruct"}


@pytest.mark.parametrize(("source", "argv"), ROUTERS, ids=[s for s, _ in ROUTERS])
def test_catalog_router_flags(source: str, argv: list[str]) -> None:
    assert check_router_command(argv, ROUTER_ENV, abbreviations=False) == [], source


@pytest.mark.parametrize(("source", "argv"), ROUTERS, ids=[s for s, _ in ROUTERS])
def test_catalog_router_flags_real_parser(source: str, argv: list[str]) -> None:
    """The router's real parser is installed in the dev environment: run it too."""
    launch_router = pytest.importorskip("sglang_router.launch_router")
    command = find_command(argv, ROUTER_ENV)
    assert command is not None and command.parser == "router"
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
    if not REFERENCE.is_dir():
        pytest.skip(f"OME reference files not found at {REFERENCE}")
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
        problems = [str(p) for p in check_router_command(argv, ROUTER_ENV)]
        print(f"  {source}: {problems or 'ok'}")
    # The known problems must be seen, or the checker has gone blind.
    assert ("unknown", "--enable-deepep-moe") in kinds
    assert ("ambiguous", "--cuda-graph-bs") in kinds
    assert ("deprecated", "--enable-dp-attention") in kinds


# --- the real parser, when the generator's venv is already built --------------------------------


@pytest.fixture(scope="module")
def real_parser() -> None:
    """The generator's throwaway venv (sglang 0.5.23 without GPU packages), built once per machine
    (~30 s, cached under ~/.cache/ome-operator). OME_SGLANG_NO_VENV=1 skips the real-parser tests."""
    if os.environ.get("OME_SGLANG_NO_VENV"):
        pytest.skip("OME_SGLANG_NO_VENV is set: checking against the committed table only")
    proc = subprocess.run(
        [sys.executable, str(GENERATOR), "--ensure-venv"], capture_output=True, text=True, check=False, timeout=900
    )
    if proc.returncode != 0:
        pytest.skip(f"could not build the real-parser venv (the table checks still ran): {proc.stderr[-2000:]}")


def test_catalog_and_reference_against_the_real_parser(real_parser: None) -> None:
    """The real sglang 0.5.23 parser accepts every catalog command line without a deprecation
    warning, and rejects OME's for the reasons the checker gives."""
    requests = []
    for runner in OURS:
        command = find_command(argv_of(runner), env_of(runner))
        assert command is not None
        requests.append({"parser": "sglang", "argv": list(command.args), "source": runner.source, "ours": True})
    for source, argv in ROUTERS:
        command = find_command(argv, ROUTER_ENV)
        assert command is not None
        requests.append({"parser": "router", "argv": list(command.args), "source": source, "ours": True})
    if REFERENCE.is_dir():
        for runner in runners(REFERENCE):
            command = find_command(argv_of(runner), env_of(runner))
            assert command is not None
            requests.append({"parser": "sglang", "argv": list(command.args), "source": runner.source, "ours": False})
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
        if request["ours"]:
            assert verdict["ok"] and not verdict["warnings"], (request["source"], verdict)
        else:
            mine = [p for p in check_command_problems(["-m", "sglang.launch_server", *request["argv"]])]
            errors = [p for p in mine if p.kind not in ("deprecated", "internal", "abbreviation")]
            assert (not errors) == verdict["ok"], (request["source"], verdict, [str(p) for p in mine])
            if verdict["warnings"]:  # (an ambiguous option aborts argparse before any action warns)
                assert any(p.kind == "deprecated" for p in mine), request["source"]


def test_make_sglang_flags_is_reproducible(real_parser: None) -> None:
    """Regenerating the tables from the real parsers gives the committed files byte for byte."""
    proc = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, check=False, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_tables_name_the_versions_they_came_from() -> None:
    table = load_table("sglang")
    raw = json.loads((REPO / "ome_operator" / "render" / "sglang_flags.json").read_text())
    assert raw["version"] == table.version == "0.5.23"
    assert raw["stubbed_modules"] and all(m.split(".")[0] in ("torch", "triton") for m in raw["stubbed_modules"])
    router = load_table("router")
    installed = importlib.metadata.version("sglang-router")
    assert router.version == "0.3.2", f"router table from {router.version}; dev environment has {installed}"


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


def test_rendered_reference_pods_are_caught() -> None:
    if not REFERENCE.is_dir():
        pytest.skip(f"OME reference files not found at {REFERENCE}")
    problems = [p for where, pod in rendered_pods(REFERENCE) for p in check_pod(pod, RUNTIME_ENV)]
    assert any("--enable-deepep-moe: unknown flag" in p for p in problems)
    assert any("--cuda-graph-bs: ambiguous" in p for p in problems)
