"""The `ome-operator` command: run | render | plan | download | version."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from ome_operator.api import load_paths
from ome_operator.render.bundle import Bundle, render_bundle
from ome_operator.render.context import Settings
from ome_operator.render.plan import H200, Accelerator, compute_plan, format_plan
from ome_operator.render.roots import add_model_root_arguments, resolve_model_root_settings

PLACEHOLDER_NODE = "<node>"


def _add_input_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="FILE_OR_DIR",
        help="YAML file or directory of models, runtimes and InferenceServices (repeatable); "
        "other kinds such as Namespace are ignored",
    )
    parser.add_argument(
        "--node",
        action="append",
        default=None,
        metavar="NAME",
        help=f"target node for model downloads (repeatable; default: one placeholder node {PLACEHOLDER_NODE!r})",
    )
    parser.add_argument("--namespace", default="ome", help="the operator's namespace (default: ome)")
    add_model_root_arguments(parser)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command's parser; given the `command` about to run, the `run` and `explain` options
    are added only for themselves (they import the operator and kopf: seconds of CPU at the start
    of each download Job, paid by 16 of them at once on a model's nodes)."""
    parser = argparse.ArgumentParser(
        prog="ome-operator",
        description="Model-driven LLM serving on Kubernetes (OME-compatible, ome.io/v1beta1).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    render = sub.add_parser("render", help="print every object the operator would create (offline, no cluster)")
    _add_input_arguments(render)
    render.add_argument(
        "-o", "--output", choices=("yaml", "json", "name"), default="yaml", help="output format (name: kind/name lines)"
    )

    plan = sub.add_parser("plan", help="components, groups, nodes, GPUs, weight memory and cost (offline)")
    _add_input_arguments(plan)
    plan.add_argument("--price", type=float, default=H200.price_per_gpu_hour, help="price per GPU-hour in USD")
    plan.add_argument("--gpu-memory-gib", type=float, default=H200.memory_bytes / 1024**3, help="memory per GPU in GiB")
    plan.add_argument("--gpus-per-node", type=int, default=H200.gpus_per_node, help="GPUs per node")
    plan.add_argument("--accelerator", default=H200.name, help="accelerator name shown in the plan")

    # --- download (issue 5): its arguments and handler live in ome_operator.downloader.main ---
    from ome_operator.downloader.main import add_arguments as add_download_arguments

    download = sub.add_parser("download", help="the model-download Job: fetch and verify a model on this node")
    add_download_arguments(download)
    # --- end download ---

    run = sub.add_parser("run", help="run the operator against the cluster of KUBECONFIG or in-cluster")
    if command in (None, "run"):
        from ome_operator.handlers import run as operator_run

        operator_run.add_arguments(run)

    # --- explain (issue 9): its arguments and handler live in ome_operator.explain ---
    explain = sub.add_parser("explain", help="why an InferenceService or model is or is not Ready (reads the cluster)")
    if command in (None, "explain"):
        from ome_operator.explain import add_arguments as add_explain_arguments

        add_explain_arguments(explain)
    # --- end explain ---

    sub.add_parser("version", help="print the version")
    return parser


def load_and_render(args: argparse.Namespace) -> Bundle | None:
    """Read the inputs and render them; print problems and return None when anything is wrong."""
    loaded = load_paths(args.filename)
    problems = list(loaded.problems)
    bundle = None
    if not problems:
        try:
            roots = resolve_model_root_settings(args)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return None
        settings = Settings(operator_namespace=args.namespace, **roots)
        bundle = render_bundle(loaded.objects, settings, args.node or [PLACEHOLDER_NODE])
        problems.extend(bundle.problems)
    if not loaded.objects and not problems:
        sources = ", ".join(args.filename)
        seen = "; ".join(loaded.ignored) or "nothing"
        print(f"error: File/{sources}: -: no ome.io objects found (read: {seen})", file=sys.stderr)
        return None
    for problem in problems:
        print(problem, file=sys.stderr)
    # Warnings (e.g. SGLang flags the image's version refuses) never change the exit code.
    for warning in bundle.warnings if bundle is not None else []:
        print(f"warning: {warning.kind}/{warning.name}: {warning.path}: {warning.reason}", file=sys.stderr)
    return None if problems else bundle


def run_render(args: argparse.Namespace) -> int:
    bundle = load_and_render(args)
    if bundle is None:
        return 1
    if args.output == "name":
        for obj in bundle.objects:
            meta = obj["metadata"]
            where = f"{meta['namespace']}/" if meta.get("namespace") else ""
            print(f"{obj['kind'].lower()}/{where}{meta['name']}")
    elif args.output == "json":
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": bundle.objects}, indent=2))
    else:
        print(yaml.safe_dump_all(bundle.objects, sort_keys=False, default_flow_style=False), end="")
    return 0


def run_plan(args: argparse.Namespace) -> int:
    bundle = load_and_render(args)
    if bundle is None:
        return 1
    accelerator = Accelerator(args.accelerator, int(args.gpu_memory_gib * 1024**3), args.gpus_per_node, args.price)
    sections = []
    for resolved in bundle.services:
        runtime = resolved.selection.runtime
        plan = compute_plan(
            resolved.isvc.name,
            resolved.isvc.namespace or "default",
            resolved.model,
            runtime.name if runtime is not None else "-",
            resolved.rendered.shapes,
            accelerator,
        )
        section = format_plan(plan)
        section += f"\n  runtime choice: {resolved.selection.reason}"
        for candidate, why in resolved.selection.excluded:
            section += f"\n  not chosen: {candidate.kind} {candidate.name}: {why}"
        sections.append(section)
    print("\n\n".join(sections) if sections else "no InferenceService in the input")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(words[0] if words and not words[0].startswith("-") else None)
    args = parser.parse_args(words)
    if args.command == "download":  # issue 5
        from ome_operator.downloader.main import run as run_download

        code = run_download(args)
        if argv is None:
            # The download Job's process: its result is written, so it ends here. Tearing the
            # interpreter down (threads, a final collection of all it imported) costs a second or
            # more of CPU, and every lingering peer of a model ends at the same moment.
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code
    from ome_operator.handlers import run as operator_run

    commands: dict[str, Any] = {"render": run_render, "plan": run_plan, "run": operator_run.run}
    if args.command == "explain":  # issue 9
        from ome_operator.explain import run as run_explain

        return run_explain(args)
    if args.command == "version":
        from importlib.metadata import version

        print(version("ome-operator"))
        return 0
    result: int = commands[args.command](args)
    return result


if __name__ == "__main__":
    sys.exit(main())
