"""`python -m ome_operator.schema` (make crds): write crds/ and charts/ome-crd/ from the API models.

`--check` writes nothing and exits 1 when the committed files differ from a fresh generation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .crd import MAX_CRD_BYTES
from .files import FIX_COMMAND, crd_sizes, drift, write_files
from .openapi import SchemaError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ome_operator.schema", description=__doc__)
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root (default: current directory)")
    parser.add_argument("--check", action="store_true", help="only report drift; exit 1 if any")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = drift(args.root)
            for problem in problems:
                print(f"drift: {problem}", file=sys.stderr)
            if problems:
                print(f"run `{FIX_COMMAND}` and commit the result", file=sys.stderr)
            return 1 if problems else 0
        write_files(args.root)
        for size in crd_sizes():
            print(f"{size.name}: {size.bytes / 1024:.1f} KiB (budget {MAX_CRD_BYTES // 1024} KiB)")
    except SchemaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
