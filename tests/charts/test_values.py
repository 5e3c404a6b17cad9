"""values.yaml documents every setting, and the templates and values.yaml agree on the keys.

A key the templates read but values.yaml lacks is undocumented; a key values.yaml has but no
template reads is a setting that silently does nothing.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from .helm import CHART

VALUES = CHART / "values.yaml"
KEY = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w-]*):")
REFERENCE = re.compile(r"\.Values\.([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*)")
KeyPath = tuple[str, ...]


def commented_paths() -> set[KeyPath]:
    """Key paths in values.yaml with a comment on the line(s) directly above them."""
    documented: set[KeyPath] = set()
    stack: list[tuple[int, str]] = []
    previous = ""
    for line in VALUES.read_text().splitlines():
        match = KEY.match(line)
        if match and not line.lstrip().startswith("- "):
            indent = len(match["indent"])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, match["key"]))
            if previous.lstrip().startswith("#"):
                documented.add(tuple(key for _, key in stack))
        if line.strip():
            previous = line
    return documented


def leaf_paths(node: Any, prefix: KeyPath = ()) -> list[KeyPath]:
    if isinstance(node, dict) and node:
        return [path for key, value in node.items() for path in leaf_paths(value, (*prefix, key))]
    return [prefix]


def referenced_paths() -> set[KeyPath]:
    text = "\n".join(path.read_text() for path in (CHART / "templates").iterdir())
    return {tuple(ref.split(".")) for ref in REFERENCE.findall(text)}


def covered(path: KeyPath, by: set[KeyPath]) -> bool:
    return any(path[:n] in by for n in range(1, len(path) + 1))


def test_every_setting_has_a_comment() -> None:
    documented = commented_paths()
    leaves = leaf_paths(yaml.safe_load(VALUES.read_text()))
    assert leaves
    undocumented = [".".join(p) for p in leaves if not covered(p, documented)]
    assert not undocumented, f"values.yaml keys without a comment: {undocumented}"


def test_templates_read_only_keys_values_yaml_has() -> None:
    values = yaml.safe_load(VALUES.read_text())
    missing = []
    for path in sorted(referenced_paths()):
        node = values
        for key in path:
            if not isinstance(node, dict) or key not in node:
                missing.append(".".join(path))
                break
            node = node[key]
    assert not missing, f"templates read keys values.yaml does not have: {missing}"


def test_every_setting_is_read_by_a_template() -> None:
    referenced = referenced_paths()
    unused = [".".join(p) for p in leaf_paths(yaml.safe_load(VALUES.read_text())) if not covered(p, referenced)]
    assert not unused, f"values.yaml keys no template reads: {unused}"
