"""The condition tree is documented once, in the README, and every reason the code writes is in it."""

from __future__ import annotations

import re
from pathlib import Path

from ome_operator.api import reasons as R

REPO = Path(__file__).resolve().parents[2]
BEGIN = "<!-- conditions:begin -->"
END = "<!-- conditions:end -->"


def expected_table() -> str:
    rows = ["| condition | reason | status | meaning | what to do |", "|---|---|---|---|---|"]
    rows += [f"| {d.condition} | `{d.reason}` | {d.status} | {d.meaning} | {d.action} |" for d in R.CATALOG]
    return "\n".join(rows)


def test_readme_holds_the_catalog_table() -> None:
    readme = (REPO / "README.md").read_text()
    assert BEGIN in readme and END in readme, f"README.md needs a {BEGIN} ... {END} section"
    section = readme.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert section == expected_table(), (
        "README's condition table differs from api/reasons.py; paste:\n" + expected_table()
    )


def test_every_reason_constant_is_documented() -> None:
    documented = {d.reason for d in R.CATALOG}
    types = {R.READY, R.SPEC_VALID, R.MODEL_READY, R.RUNTIME_RESOLVED, R.CHILDREN_APPLIED, R.ENGINE_READY}
    types |= {R.DECODER_READY, R.ROUTER_READY, R.ENGINE_ARGS_VALID, R.DOWNLOADED, R.IN_USE}
    constants = {
        value
        for name, value in vars(R).items()
        if name.isupper() and isinstance(value, str) and value not in types and name != "COMPONENT_READY"
    }
    assert constants - documented == set()


def test_no_reason_is_spelled_out_in_code() -> None:
    """Reasons are written through the constants: a quoted CamelCase reason elsewhere is a second copy."""
    reasons = {d.reason for d in R.CATALOG} - {"Ready", "ModelReady"}  # also condition type names
    pattern = re.compile(r'"(' + "|".join(sorted(reasons)) + r')"')
    offenders = []
    for path in sorted((REPO / "ome_operator").rglob("*.py")):
        # The downloader's progress phases (Downloading, ...) are another vocabulary, not reasons.
        if path.name == "reasons.py" or "downloader" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []
