#!/usr/bin/env python3
"""Generate the committed flag table of the SGLang gateway `smg` (PyPI ``smg``) from its REAL parser.

Run by ``make sglang-flags`` (after ``hack/sglang_flags.py``). Writes
``ome_operator/render/smg_flags.json``: every option string of ``smg.router_args.RouterArgs.add_cli_args``
(the parser behind ``smg launch ...``; ``smg.launch_router.parse_router_args`` builds it the same
way), for smg == SMG_VERSION, plus ``probes``: command lines run through that parser (and
``RouterArgs.from_cli_args``) at generation time with the real verdict.

How: a throwaway venv ``~/.cache/ome-operator/sglang-venv-smg-<version>`` holding only the ``smg``
wheel (``pip install --no-deps``: its parser needs nothing but argparse and its own Rust extension;
grpcio and the rest are for serving), then this file re-run with that venv's interpreter
(``--inside dump``), exactly as ``hack/sglang_flags.py`` does for the SGLang releases, whose table
format, venv handling and parser description it reuses. Nothing is stubbed.

Other modes: ``--check`` (exit 1 when the committed table differs) and ``--parse`` (stdin:
``[{"argv": [...]}, ...]``; stdout: the real parser's verdicts, in order), which
tests/test_catalog_flags.py uses for the catalog's router command lines.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

# hack/ is a directory of scripts, not a package: the SGLang generator beside this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import sglang_flags

SMG_VERSION = "1.13.0"
RELEASE = sglang_flags.Release(f"smg-{SMG_VERSION}", torch="", pins=(f"smg=={SMG_VERSION}",))
OUT = sglang_flags.REPO / "ome_operator" / "render" / "smg_flags.json"

PROBES: list[list[str]] = [
    ["--pd-disaggregation", "--policy", "random", "--service-discovery"],
    ["--prefill-selector", "component=engine ome.io/inferenceservice=x"],
    ["--prefill-selector", "component=engine", "ome.io/inferenceservice=x"],
    ["--policy", "bogus"],
    ["--service-discovery-port", "http"],
    ["--service-discovery-namespace"],
    ["--selector-bogus", "x"],
    ["--pd", "--service-discovery"],
    ["--max-payload-size", "2147483648", "--worker-startup-timeout-secs", "1200"],
    ["--host", "0.0.0.0", "--port", "8080", "--prometheus-host", "0.0.0.0", "--prometheus-port", "29000"],
    ["--bootstrap-port-annotation", "sglang.ai/bootstrap-port"],
]


def _parser() -> argparse.ArgumentParser:
    from smg.router_args import RouterArgs

    # What smg.launch_router.parse_router_args builds (minus description/formatter).
    parser = argparse.ArgumentParser(prog="smg launch")
    RouterArgs.add_cli_args(parser, use_router_prefix=False)
    return parser


def inside_dump() -> dict[str, Any]:
    from importlib.metadata import version

    parser = _parser()
    return {
        "package": "smg",
        "version": version("smg"),
        "parser": "smg.router_args.RouterArgs.add_cli_args",
        "entry_points": ["smg launch", "python3 -m smg launch"],
        "generated_by": "hack/smg_flags.py (make sglang-flags)",
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "pins": list(RELEASE.pins),
        "stubbed_modules": [],
        "not_executed": [],
        **sglang_flags.describe_parser(parser),
        "probes": [sglang_flags.real_parse(parser, argv, router=True, router_module="smg") for argv in PROBES],
    }


def inside_parse(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    parser = _parser()
    return [sglang_flags.real_parse(parser, list(r["argv"]), router=True, router_module="smg") for r in requests]


def run_inside(mode: str, stdin: str = "") -> Any:
    sglang_flags.ensure_venvs((RELEASE,))
    proc = subprocess.run(
        [str(RELEASE.python), str(Path(__file__).resolve()), "--inside", mode],
        input=stdin,
        capture_output=True,
        text=True,
        env=sglang_flags._scrubbed_env(),
        check=False,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"smg's parser failed to load in {RELEASE.venv} (exit {proc.returncode})")
    return json.loads(proc.stdout)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed table differs")
    ap.add_argument("--parse", action="store_true", help="run the real parser on JSON requests from stdin")
    ap.add_argument("--inside", choices=["dump", "parse"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.inside == "dump":
        json.dump(inside_dump(), sys.stdout)
        return 0
    if args.inside == "parse":
        json.dump(inside_parse(json.load(sys.stdin)), sys.stdout)
        return 0
    if args.parse:
        json.dump(run_inside("parse", sys.stdin.read()), sys.stdout, indent=1)
        print()
        return 0
    text = sglang_flags.render(run_inside("dump"))
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"drift: {OUT.relative_to(sglang_flags.REPO)} differs from smg's parser; run `make sglang-flags`")
            return 1
        print("smg table matches the real parser")
        return 0
    OUT.write_text(text)
    table = json.loads(text)
    print(f"wrote {OUT.relative_to(sglang_flags.REPO)}: smg {table['version']} {len(table['options'])} option strings")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
