"""The bad-input campaign, offline: every invalid variant is refused by `render`, naming the field.

`render` must never print a traceback, must exit 1, and one of its `error:` lines must name the field
the variant broke. The counts are printed (pytest -s, or the summary line of `make test`).
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from pathlib import Path

import yaml

from ome_operator.cli import main

from .generate import Variant, variants

MIN_VARIANTS = 1000


def render(variant: Variant, directory: Path) -> tuple[int, str]:
    path = directory / "input.yaml"
    path.write_text(yaml.safe_dump_all(list(variant.docs), sort_keys=False))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(["render", "-f", str(path)])
        except BaseException as exc:  # a traceback is the failure this campaign looks for
            return -1, f"{type(exc).__name__}: {exc}"
    return code, err.getvalue()


def test_render_refuses_every_invalid_variant_naming_the_field(tmp_path: Path) -> None:
    all_variants = variants()
    assert len(all_variants) >= MIN_VARIANTS
    outcomes: Counter[str] = Counter()
    wrong: list[str] = []
    for variant in all_variants:
        code, err = render(variant, tmp_path)
        lines = [line for line in err.splitlines() if line.startswith("error: ")]
        if code == -1 or "Traceback" in err:
            outcomes["traceback"] += 1
            wrong.append(f"{variant.case}: crashed: {err.strip()[:300]}")
        elif code == 0:
            outcomes["accepted"] += 1
            wrong.append(f"{variant.case}: accepted")
        elif not any(f": {variant.path}" in line for line in lines):
            outcomes["unnamed"] += 1
            wrong.append(f"{variant.case}: field not named in {lines[:3]}")
        else:
            outcomes["refused, field named"] += 1
    by_class = Counter(v.klass for v in all_variants)
    print(
        f"\nbad-input campaign (render): tried {len(all_variants)} {dict(sorted(by_class.items()))}; {dict(outcomes)}"
    )
    assert wrong == [], f"{len(wrong)} variants not refused with the field named:\n" + "\n".join(wrong[:40])
