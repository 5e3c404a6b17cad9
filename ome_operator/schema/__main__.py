"""`python -m ome_operator.schema` (make crds): write crds/ and charts/ome-crd/ from the API models.

`--check` writes nothing and exits 1 when the committed files differ from a fresh generation (and,
when the pinned Kubernetes sources are in the Go module cache, when the vendored Kubernetes
definitions differ from them). `--vendor-kubernetes` first re-vendors those definitions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .crd import MAX_CRD_BYTES
from .files import FIX_COMMAND, crd_sizes, drift, write_files
from .kubernetes import MODULE, VENDOR_COMMAND, find_source, vendoring_drift, write_vendored
from .openapi import SchemaError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ome_operator.schema", description=__doc__)
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root (default: current directory)")
    parser.add_argument("--check", action="store_true", help="only report drift; exit 1 if any")
    parser.add_argument(
        "--vendor-kubernetes",
        action="store_true",
        help=f"re-vendor the Kubernetes definitions from {MODULE} in the Go module cache first",
    )
    parser.add_argument(
        "--kubernetes-source", type=Path, help="the release's api/openapi-spec/v3 directory (default: find it)"
    )
    args = parser.parse_args(argv)
    source = args.kubernetes_source or find_source()
    try:
        if args.check:
            problems = drift(args.root)
            if source is not None:
                problems += [f"{p} (run `{VENDOR_COMMAND}`)" for p in vendoring_drift(source)]
            for problem in problems:
                print(f"drift: {problem}", file=sys.stderr)
            if problems:
                print(f"run `{FIX_COMMAND}` and commit the result", file=sys.stderr)
            return 1 if problems else 0
        if args.vendor_kubernetes:
            if source is None:
                print(
                    f"error: {MODULE} is not in the Go module cache; run "
                    f"`GOFLAGS=-modcacherw go mod download {MODULE}` or pass --kubernetes-source",
                    file=sys.stderr,
                )
                return 1
            print(f"vendored {write_vendored(source)}")
        write_files(args.root)
        for size in crd_sizes():
            print(f"{size.name}: {size.bytes / 1024:.1f} KiB of JSON (budget {MAX_CRD_BYTES // 1024} KiB)")
    except SchemaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
