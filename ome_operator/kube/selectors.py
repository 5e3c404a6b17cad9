"""Label selectors evaluated on cached objects, as the API server would evaluate them.

Only the equality and existence forms the reconcilers use (`a=b`, `a==b`, `a!=b`, `a`, `!a`); for
anything else `parse_selector` gives None, so the caller asks the API server instead of guessing.
"""

from __future__ import annotations

import re

Term = tuple[str, str, str]  # (operator, key, value): "=", "!=", "exists", "!exists"
_KEY = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$")


def parse_selector(selector: str | None) -> list[Term] | None:
    if not selector:
        return []
    terms: list[Term] = []
    for part in (p.strip() for p in selector.split(",")):
        if not part:
            continue
        if "!=" in part:
            key, _, value = part.partition("!=")
            op = "!="
        elif "=" in part:
            key, _, value = part.partition("==" if "==" in part else "=")
            op = "="
        elif part.startswith("!"):
            key, value, op = part[1:], "", "!exists"
        else:
            key, value, op = part, "", "exists"
        key, value = key.strip(), value.strip()
        if not _KEY.match(key) or " " in value or "(" in part:
            return None  # set-based (`in`, `notin`) or malformed: not ours to evaluate
        terms.append((op, key, value))
    return terms


def selector_matches(terms: list[Term], labels: dict[str, str]) -> bool:
    for op, key, value in terms:
        if op == "=" and labels.get(key) != value:
            return False
        if op == "!=" and labels.get(key) == value:
            return False
        if op == "exists" and key not in labels:
            return False
        if op == "!exists" and key in labels:
            return False
    return True
