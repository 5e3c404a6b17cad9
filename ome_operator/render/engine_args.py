"""Check SGLang engine and router command lines against the flags the pinned releases accept.

The tables ``sglang_flags.json`` and ``sglang_router_flags.json`` next to this module are generated
from the real argparse parsers (``sglang.srt.server_args.ServerArgs.add_cli_args`` and
``sglang_router.router_args.RouterArgs.add_cli_args``) by ``hack/sglang_flags.py``
(``make sglang-flags``); each records the package version it came from. This module re-implements
the parts of argparse's parsing that decide whether a command line is accepted, over those
tables:

* ``$(VAR)`` references are expanded first, exactly as Kubernetes expands container commands
  (``$$`` escapes, undefined references stay verbatim);
* the server's arguments are those after ``-m sglang.launch_server`` / ``sglang serve`` (or
  ``-m sglang_router.launch_router``), also inside ``sh -c "..."``;
* each argument is classified like argparse does: exact option, ``--opt=value``, unique prefix
  (argparse's ``allow_abbrev``), ambiguous prefix (an error in argparse), negative number, value;
* values are counted against each option's ``nargs`` and checked against its type and choices.

Reported on top of what argparse rejects: deprecated flags (the real parser only warns), flags
hidden from ``--help`` (internal), and, with ``abbreviations=False``, every abbreviation (argparse
accepts a unique prefix today, but a later release that adds a longer flag turns it into an
error: that is how OME's ``--cuda-graph-bs`` broke).

Pure: no I/O beyond reading the packaged tables.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from functools import cache
from importlib import resources
from typing import Any, Literal

ParserName = Literal["sglang", "router"]

TABLE_FILES: dict[ParserName, str] = {
    "sglang": "sglang_flags.json",
    "router": "sglang_router_flags.json",
}

SGLANG_MODULE = "sglang.launch_server"
ROUTER_MODULE = "sglang_router.launch_router"
SHELLS = frozenset({"sh", "bash", "dash", "ash", "zsh"})
SHELL_OPERATORS = frozenset({"&&", "||", ";", "|", "&", ";;"})

# Flags removed before the pinned release, with what replaced them. Hand-written hints only (the
# table decides what is accepted); shown next to "unknown flag".
RETIRED_HINTS: dict[str, str] = {
    "--enable-deepep-moe": "--moe-a2a-backend deepep",
    "--enable-ep-moe": "--ep-size <n>",
}

ProblemKind = Literal[
    "unknown",
    "ambiguous",
    "abbreviation",
    "deprecated",
    "removed",
    "internal",
    "missing-value",
    "extra-value",
    "explicit-value",
    "bad-choice",
    "bad-type",
    "missing-required",
    "not-a-command",
]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a command line. ``str()`` is the message."""

    kind: ProblemKind
    flag: str | None
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class OptionSpec:
    """One option string of the real parser."""

    option: str
    dest: str
    canonical: str
    action: str
    nargs: int | str | None  # argparse's nargs: None = exactly one value, 0, N, "?", "*", "+"
    value_kind: str | None  # int | float | str | json | human_readable_int | any | None (no value)
    choices: tuple[Any, ...] | None
    required: bool
    suppressed: bool
    deprecated: Mapping[str, Any] | None
    aliases: tuple[str, ...]


@dataclass(frozen=True)
class FlagTable:
    """A parser's option table: what ``hack/sglang_flags.py`` wrote."""

    parser: ParserName
    package: str
    version: str
    allow_abbrev: bool
    prefix_chars: str
    options: Mapping[str, OptionSpec]
    probes: tuple[Mapping[str, Any], ...] = field(default=())

    @property
    def label(self) -> str:
        return f"{self.package} {self.version}"


@dataclass(frozen=True)
class Command:
    """The part of a command line that a parser sees."""

    parser: ParserName
    args: tuple[str, ...]


def _option_spec(option: str, raw: Mapping[str, Any]) -> OptionSpec:
    choices = raw.get("choices")
    return OptionSpec(
        option=option,
        dest=str(raw["dest"]),
        canonical=str(raw["canonical"]),
        action=str(raw["action"]),
        nargs=raw.get("nargs"),
        value_kind=raw.get("value_kind"),
        choices=tuple(choices) if choices is not None else None,
        required=bool(raw.get("required", False)),
        suppressed=bool(raw.get("suppressed", False)),
        deprecated=raw.get("deprecated"),
        aliases=tuple(raw.get("aliases") or ()),
    )


@cache
def load_table(parser: ParserName = "sglang") -> FlagTable:
    """The packaged table for a parser (read once)."""
    text = resources.files(__package__ or "ome_operator.render").joinpath(TABLE_FILES[parser]).read_text("utf-8")
    raw = json.loads(text)
    return FlagTable(
        parser=parser,
        package=str(raw["package"]),
        version=str(raw["version"]),
        allow_abbrev=bool(raw["allow_abbrev"]),
        prefix_chars=str(raw["prefix_chars"]),
        options={k: _option_spec(k, v) for k, v in raw["options"].items()},
        probes=tuple(raw.get("probes") or ()),
    )


# ------------------------------------------------------------------------------------------------
# Kubernetes $(VAR) expansion and finding the server's arguments
# ------------------------------------------------------------------------------------------------


def expand_k8s(text: str, env: Mapping[str, str]) -> str:
    """Expand ``$(VAR)`` like Kubernetes does for command, args and env values.

    ``$(VAR)`` becomes the variable's value when it is defined, and stays as written when it is
    not; ``$$`` is an escaped ``$``; a ``$`` followed by anything else is kept.
    (A port of k8s.io/kubernetes third_party/forked/golang/expansion.Expand.)
    """
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    n = len(text)
    while cursor < n:
        if text[cursor] == "$" and cursor + 1 < n:
            out.append(text[checkpoint:cursor])
            nxt = text[cursor + 1]
            advance = 1
            if nxt == "$":
                out.append("$")
            elif nxt == "(":
                close = text.find(")", cursor + 2)
                if close == -1:
                    out.append("$(")
                else:
                    name = text[cursor + 2 : close]
                    out.append(env.get(name, f"$({name})"))
                    advance = close - cursor
            else:
                out.append("$" + nxt)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


_SHELL_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def _shell_words(script: str, env: Mapping[str, str]) -> list[str]:
    """Split a ``sh -c`` script into words, expanding ``$VAR``/``${VAR}`` that env defines."""

    def sub(m: re.Match[str]) -> str:
        name = m.group("braced") or m.group("plain")
        return shlex.quote(env[name]) if name in env else m.group(0)

    lexer = shlex.shlex(_SHELL_VAR.sub(sub, script), posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = ""
    return list(lexer)


def _entry(words: Sequence[str]) -> Command | None:
    for i, word in enumerate(words):
        parser: ParserName | None = None
        start = -1
        if word == "-m" and i + 1 < len(words):
            if words[i + 1] == SGLANG_MODULE:
                parser, start = "sglang", i + 2
            elif words[i + 1] == ROUTER_MODULE:
                parser, start = "router", i + 2
        elif word in (f"-m{SGLANG_MODULE}",):
            parser, start = "sglang", i + 1
        elif word in (f"-m{ROUTER_MODULE}",):
            parser, start = "router", i + 1
        elif word.rsplit("/", 1)[-1] == "sglang" and i + 1 < len(words) and words[i + 1] == "serve":
            parser, start = "sglang", i + 2
        if parser is not None:
            rest: list[str] = []
            for w in words[start:]:
                if w in SHELL_OPERATORS:
                    break
                rest.append(w)
            return Command(parser, tuple(rest))
    return None


def find_command(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Command | None:
    """Locate an SGLang server or router invocation in a container's command + args.

    ``$(VAR)`` references are expanded from ``env`` first. ``sh -c "<script>"`` (and bash, ...) is
    looked into: the script is split like a POSIX shell would (``$VAR`` expanded from ``env``) and
    the invocation ends at the first ``&&``, ``;``, ``|``, ...
    """
    env = env or {}
    words = [expand_k8s(a, env) for a in argv]
    found = _entry(words)
    if found is not None:
        return found
    if words and words[0].rsplit("/", 1)[-1] in SHELLS:
        for i, word in enumerate(words[1:], start=1):
            if word.startswith("-") and "c" in word[1:] and not word.startswith("--") and i + 1 < len(words):
                return _entry(_shell_words(words[i + 1], env))
    return None


# ------------------------------------------------------------------------------------------------
# argparse over a table
# ------------------------------------------------------------------------------------------------

_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")
_HUMAN_INT = re.compile(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)")


@dataclass(frozen=True)
class _Token:
    index: int
    text: str
    kind: Literal["value", "option", "unknown", "ambiguous", "separator"]
    spec: OptionSpec | None = None
    spelled: str = ""  # the option string as written (before "=")
    explicit: str | None = None  # the value after "=", if any
    matches: tuple[str, ...] = ()


def _prefix_matches(table: FlagTable, prefix: str) -> list[str]:
    return [o for o in table.options if o.startswith(prefix)]


def _classify(table: FlagTable, index: int, arg: str, abbrev: bool) -> _Token:
    """argparse's ``_parse_optional`` for one argument (long options; sglang has no short ones)."""
    options = table.options
    if not arg or arg[0] not in table.prefix_chars:
        return _Token(index, arg, "value")
    if arg == "--":
        return _Token(index, arg, "separator")
    if arg in options:
        return _Token(index, arg, "option", options[arg], arg)
    if len(arg) == 1:
        return _Token(index, arg, "value")
    head, eq, tail = arg.partition("=")
    if eq and head in options:
        return _Token(index, arg, "option", options[head], head, tail)
    if abbrev and len(arg) > 1 and arg[1] in table.prefix_chars:
        matches = _prefix_matches(table, head)
        if len(matches) > 1:
            return _Token(index, arg, "ambiguous", None, head, tail if eq else None, tuple(matches))
        if len(matches) == 1:
            return _Token(index, arg, "option", options[matches[0]], head, tail if eq else None, tuple(matches))
    if _NEGATIVE_NUMBER.match(arg):
        return _Token(index, arg, "value")  # neither parser declares negative-number-like options
    if " " in arg:
        return _Token(index, arg, "value")
    return _Token(index, arg, "unknown", None, head, tail if eq else None)


def _convert(spec: OptionSpec, value: str) -> tuple[bool, Any]:
    kind = spec.value_kind
    try:
        if kind == "int":
            return True, int(value)
        if kind == "float":
            return True, float(value)
        if kind == "json":
            return True, json.loads(value)
        if kind == "human_readable_int":
            m = _HUMAN_INT.fullmatch(value.strip())
            if m:
                number, suffix = m.groups()
                if suffix.endswith("i") and "." in number:
                    return False, None
                return True, float(number)
            return True, int(value)
    except ValueError:
        return False, None
    return True, value


def _type_label(spec: OptionSpec) -> str:
    return {"human_readable_int": "integer (or with k/M/G/T, Ki/Mi/Gi/Ti suffix)", "json": "JSON"}.get(
        spec.value_kind or "", spec.value_kind or "value"
    )


def _check_values(table: FlagTable, spec: OptionSpec, values: Iterable[str]) -> list[Problem]:
    problems: list[Problem] = []
    for value in values:
        if "$(" in value:
            continue  # filled in by Kubernetes at run time from a variable we were not given
        ok, converted = _convert(spec, value)
        if not ok:
            problems.append(
                Problem("bad-type", spec.canonical, f"{spec.canonical}: invalid {_type_label(spec)} value {value!r}")
            )
            continue
        if spec.choices is not None and converted not in spec.choices:
            allowed = ", ".join(str(c) for c in spec.choices)
            problems.append(
                Problem(
                    "bad-choice",
                    spec.canonical,
                    f"{spec.canonical}: invalid choice {value!r} (choose from {allowed}; {table.label})",
                )
            )
    return problems


def _arity(nargs: int | str | None) -> tuple[int, int | None]:
    """(minimum, maximum or None for unbounded) number of values an option takes."""
    if nargs is None:
        return 1, 1
    if isinstance(nargs, int):
        return nargs, nargs
    return {"?": (0, 1), "*": (0, None), "+": (1, None)}.get(nargs, (0, None))


def _expected(nargs: int | str | None) -> str:
    if nargs is None:
        return "expected one argument"
    if nargs == "+":
        return "expected at least one argument"
    return f"expected {nargs} argument{'s' if nargs != 1 else ''}"


def _option_problems(table: FlagTable, tok: _Token, abbrev_is_problem: bool) -> list[Problem]:
    spec = tok.spec
    assert spec is not None
    problems: list[Problem] = []
    if tok.spelled not in table.options and abbrev_is_problem:
        problems.append(
            Problem(
                "abbreviation",
                spec.canonical,
                f"{tok.spelled}: abbreviation of {spec.option}; spell it out (a later release may add a "
                f"flag that makes this prefix ambiguous)",
            )
        )
    dep = spec.deprecated
    if dep:
        replacement = dep.get("replacement")
        use = f"; use {replacement}" if replacement else ""
        if dep.get("fatal"):
            problems.append(Problem("removed", spec.canonical, f"{spec.option}: removed in {table.label}{use}"))
        else:
            problems.append(Problem("deprecated", spec.canonical, f"{spec.option}: deprecated in {table.label}{use}"))
    if spec.suppressed:
        problems.append(
            Problem("internal", spec.canonical, f"{spec.option}: internal flag (hidden from --help in {table.label})")
        )
    return problems


def check_args(
    args: Sequence[str],
    parser: ParserName | FlagTable = "sglang",
    *,
    abbreviations: bool = True,
    require: bool = True,
) -> list[Problem]:
    """Check the arguments a parser would receive (everything after the module name).

    ``abbreviations``: accept a unique prefix of a flag as argparse does (True), or report it
    (False: our own catalog spells every flag out). ``require``: report required flags that are
    missing (``--model-path``); skipped when ``--config`` supplies a file.
    """
    table = parser if isinstance(parser, FlagTable) else load_table(parser)
    abbrev = table.allow_abbrev
    tokens = [_classify(table, i, a, abbrev) for i, a in enumerate(args)]
    problems: list[Problem] = []
    seen: set[str] = set()
    i = 0
    n = len(tokens)
    while i < n:
        tok = tokens[i]
        i += 1
        if tok.kind == "separator":
            rest = [t.text for t in tokens[i:]]
            if rest:
                problems.append(Problem("extra-value", None, f"unrecognized arguments after '--': {' '.join(rest)}"))
            break
        if tok.kind == "value":
            problems.append(
                Problem(
                    "extra-value",
                    None,
                    f"unexpected value {tok.text!r} (no option takes it here; {table.package} takes no "
                    f"positional arguments)",
                )
            )
            continue
        # the run of values that follows this option
        run_end = i
        while run_end < n and tokens[run_end].kind == "value":
            run_end += 1
        run = [t.text for t in tokens[i:run_end]]
        if tok.kind == "ambiguous":
            problems.append(
                Problem(
                    "ambiguous",
                    tok.spelled,
                    f"{tok.spelled}: ambiguous abbreviation, could match {', '.join(tok.matches)} ({table.label})",
                )
            )
            i = run_end
            continue
        if tok.kind == "unknown":
            hint = RETIRED_HINTS.get(tok.spelled)
            if hint:
                more = f"; use {hint}"
            else:
                close = get_close_matches(tok.spelled, list(table.options), n=1, cutoff=0.8)
                more = f"; did you mean {close[0]}?" if close else ""
            problems.append(Problem("unknown", tok.spelled, f"{tok.spelled}: unknown flag in {table.label}{more}"))
            i = run_end
            continue
        spec = tok.spec
        assert spec is not None
        seen.add(spec.dest)
        problems.extend(_option_problems(table, tok, not abbreviations))
        low, high = _arity(spec.nargs)
        if tok.explicit is not None:
            if high == 0:
                problems.append(
                    Problem(
                        "explicit-value",
                        spec.canonical,
                        f"{spec.option}: takes no value, but got {tok.explicit!r} after '='",
                    )
                )
            elif low > 1:
                problems.append(Problem("missing-value", spec.canonical, f"{spec.option}: {_expected(spec.nargs)}"))
            else:
                problems.extend(_check_values(table, spec, [tok.explicit]))
            values: list[str] = []
            leftover = run
        else:
            if len(run) < low:
                problems.append(Problem("missing-value", spec.canonical, f"{spec.option}: {_expected(spec.nargs)}"))
                i = run_end
                continue
            take = len(run) if high is None else min(high, len(run))
            values, leftover = run[:take], run[take:]
            problems.extend(_check_values(table, spec, values))
        if leftover:
            what = "takes no value" if high == 0 else f"takes {_expected(spec.nargs).removeprefix('expected ')}"
            problems.append(
                Problem(
                    "extra-value",
                    spec.canonical,
                    f"{spec.option}: {what}; unrecognized extra argument(s) {' '.join(repr(v) for v in leftover)}",
                )
            )
        i = run_end
    if require and "config" not in seen:
        reported: set[str] = set()
        for spec in table.options.values():
            if spec.required and spec.dest not in seen and spec.dest not in reported:
                reported.add(spec.dest)
                problems.append(Problem("missing-required", spec.canonical, f"missing required flag {spec.canonical}"))
    return problems


# ------------------------------------------------------------------------------------------------
# Entry points
# ------------------------------------------------------------------------------------------------


def check_command_problems(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    expect: ParserName | None = None,
    abbreviations: bool = True,
) -> list[Problem]:
    """Structured form of :func:`check_command` (filter by ``Problem.kind``)."""
    command = find_command(argv, env)
    if command is None:
        if expect is None:
            return []
        module = SGLANG_MODULE if expect == "sglang" else ROUTER_MODULE
        return [Problem("not-a-command", None, f"no '-m {module}' in the command line")]
    if expect is not None and command.parser != expect:
        return [Problem("not-a-command", None, f"expected a {expect} command line, found a {command.parser} one")]
    return check_args(command.args, command.parser, abbreviations=abbreviations)


def check_command(
    argv: Sequence[str], env: Mapping[str, str] | None = None, *, abbreviations: bool = True
) -> list[str]:
    """Problems of whichever SGLang server or router invocation argv holds (none if neither)."""
    return [str(p) for p in check_command_problems(argv, env, abbreviations=abbreviations)]


def check_sglang_command(
    argv: Sequence[str], env: Mapping[str, str] | None = None, *, abbreviations: bool = True
) -> list[str]:
    """Problems of an SGLang server command line (``... -m sglang.launch_server ARGS``).

    ``env`` fills ``$(VAR)`` references first, as Kubernetes does; references it does not define
    stay verbatim and their values are not type-checked. Empty list: the pinned SGLang release
    accepts it, with no deprecated or internal flag.
    """
    return [str(p) for p in check_command_problems(argv, env, expect="sglang", abbreviations=abbreviations)]


def check_router_command(
    argv: Sequence[str], env: Mapping[str, str] | None = None, *, abbreviations: bool = True
) -> list[str]:
    """Problems of an SGLang router command line (``... -m sglang_router.launch_router ARGS``)."""
    return [str(p) for p in check_command_problems(argv, env, expect="router", abbreviations=abbreviations)]


def container_env(container: Mapping[str, Any], env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables a container's ``$(VAR)`` references can see: ``env`` (e.g. values the pod
    gets at run time that the caller knows), then the container's literal ``env`` entries in order,
    each expanded against those before it (as the kubelet does). ``valueFrom`` entries are skipped
    unless ``env`` provides them."""
    resolved = dict(env or {})
    for entry in container.get("env") or []:
        name = entry.get("name")
        if isinstance(name, str) and "value" in entry and entry["value"] is not None:
            resolved[name] = expand_k8s(str(entry["value"]), resolved)
    return resolved


def check_container(
    container: Mapping[str, Any], env: Mapping[str, str] | None = None, *, abbreviations: bool = True
) -> list[str]:
    """Check a Kubernetes container mapping (``command`` + ``args`` + ``env``) if it runs the
    SGLang server or router; return [] for any other container."""
    argv = [str(a) for a in (container.get("command") or [])] + [str(a) for a in (container.get("args") or [])]
    return check_command(argv, container_env(container, env), abbreviations=abbreviations)


def check_pod(
    pod_spec: Mapping[str, Any], env: Mapping[str, str] | None = None, *, abbreviations: bool = True
) -> list[str]:
    """Check every container (and init container) of a pod spec, e.g. a rendered workload's
    ``spec.template.spec``; each message is prefixed with ``container <name>: ``."""
    problems: list[str] = []
    for key in ("initContainers", "containers"):
        for container in pod_spec.get(key) or []:
            name = container.get("name", "?")
            problems.extend(
                f"container {name}: {p}" for p in check_container(container, env, abbreviations=abbreviations)
            )
    return problems
