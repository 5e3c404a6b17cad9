"""Check SGLang engine and router command lines against the flags the real releases accept.

The tables next to this module are generated from the real argparse parsers
(``sglang.srt.server_args.ServerArgs.add_cli_args`` of several sglang releases, and
``sglang_router.router_args.RouterArgs.add_cli_args``) by ``hack/sglang_flags.py``
(``make sglang-flags``): ``sglang_flags.json`` is the index of the per-release tables in
``sglang_flags/<version>.json`` and names the default (current) release; ``sglang_router_flags.json``
is the router's. Each table records the package version it came from. This module re-implements
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

Two levels of API:

* version-less, against the default release (``check_sglang_command``, ``check_container``,
  ``check_args``, ... returning ``Problem`` or strings);
* per release, choosing the tables by the container's image tag (``sglang_versions_for_image``,
  ``check_engine_command``, ``check_engine_container``, ``accepted_by_some_version``, returning
  ``FlagFinding``: which releases accept a flag usage, which refuse it, and what replaced it).

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

# "router" is sglang-router (`python -m sglang_router.launch_router`, what OME's files run); "smg" is
# the current SGLang gateway (`smg launch`, what the catalog runs).
ParserName = Literal["sglang", "router", "smg"]
ROUTERS: frozenset[ParserName] = frozenset({"router", "smg"})

TABLE_FILES: dict[ParserName, str] = {
    "sglang": "sglang_flags.json",  # the index of the per-release tables
    "router": "sglang_router_flags.json",
    "smg": "smg_flags.json",
}

SGLANG_MODULE = "sglang.launch_server"
ROUTER_MODULE = "sglang_router.launch_router"
SMG_PROGRAM, SMG_COMMAND = "smg", "launch"
SHELLS = frozenset({"sh", "bash", "dash", "ash", "zsh"})
SHELL_OPERATORS = frozenset({"&&", "||", ";", "|", "&", ";;"})

# Flags SGLang removed without leaving a deprecation behind, with what replaced them: the one
# place for hand-written hints. The tables decide what is accepted; replacements the tables record
# themselves (a deprecated flag's "use ...") are merged over these by flag_replacements().
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


# What argparse itself refuses (the server does not start); the other kinds are warnings: the real
# parser accepts the flag (deprecated), or it is our own stricter rule (internal, abbreviation).
REFUSALS: frozenset[ProblemKind] = frozenset(
    {
        "unknown",
        "ambiguous",
        "removed",
        "missing-value",
        "extra-value",
        "explicit-value",
        "bad-choice",
        "bad-type",
        "missing-required",
        "not-a-command",
    }
)


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
    entry_points: tuple[str, ...] = field(default=())

    @property
    def label(self) -> str:
        return f"{self.package} {self.version}"


@dataclass(frozen=True)
class Command:
    """The part of a command line that a parser sees."""

    parser: ParserName
    args: tuple[str, ...]
    entry: str = ""  # how it was started: "-m sglang.launch_server", "sglang serve", ...


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


def _read_json(name: str) -> Any:
    return json.loads(resources.files(__package__ or "ome_operator.render").joinpath(name).read_text("utf-8"))


@cache
def _sglang_index() -> Mapping[str, Any]:
    index: Mapping[str, Any] = _read_json(TABLE_FILES["sglang"])
    return index


def sglang_versions() -> tuple[str, ...]:
    """The SGLang releases there is a table for, oldest first."""
    return tuple(str(v) for v in _sglang_index()["versions"])


def default_sglang_version() -> str:
    """The release the version-less API checks against (the current one)."""
    return str(_sglang_index()["default"])


@cache
def _load(parser: ParserName, version: str) -> FlagTable:
    if parser == "sglang":
        tables: Mapping[str, str] = _sglang_index()["tables"]
        if version not in tables:
            raise KeyError(f"no sglang {version} table; known: {', '.join(sglang_versions())}")
        raw = _read_json(tables[version])
    else:
        raw = _read_json(TABLE_FILES[parser])
        if version and version != raw["version"]:
            raise KeyError(f"no {raw['package']} {version} table; known: {raw['version']}")
    return FlagTable(
        parser=parser,
        package=str(raw["package"]),
        version=str(raw["version"]),
        allow_abbrev=bool(raw["allow_abbrev"]),
        prefix_chars=str(raw["prefix_chars"]),
        options={k: _option_spec(k, v) for k, v in raw["options"].items()},
        probes=tuple(raw.get("probes") or ()),
        entry_points=tuple(raw.get("entry_points") or ()),
    )


def load_table(parser: ParserName = "sglang", version: str | None = None) -> FlagTable:
    """The packaged table for a parser (read once): for ``sglang``, that of ``version`` (default:
    :func:`default_sglang_version`); the router has one table (``version`` None or its own)."""
    if parser == "sglang":
        return _load(parser, version or default_sglang_version())
    return _load(parser, version or "")


@cache
def flag_replacements() -> Mapping[str, str]:
    """What replaced a flag: :data:`RETIRED_HINTS`, overridden by the replacement a table records
    for a deprecated flag (the newest release's word wins), so that when a later release drops
    the flag altogether the hint its deprecation gave is still known."""
    replacements = dict(RETIRED_HINTS)
    for version in sglang_versions():
        for option, spec in load_table("sglang", version).options.items():
            replacement = (spec.deprecated or {}).get("replacement")
            if replacement:
                replacements[option] = str(replacement)
    return replacements


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
    modules: dict[str, ParserName] = {SGLANG_MODULE: "sglang", ROUTER_MODULE: "router"}
    for i, word in enumerate(words):
        parser: ParserName | None = None
        start = -1
        entry = ""
        if word == "-m" and i + 1 < len(words) and words[i + 1] in modules:
            parser, start, entry = modules[words[i + 1]], i + 2, f"-m {words[i + 1]}"
        elif word.startswith("-m") and word[2:] in modules:
            parser, start, entry = modules[word[2:]], i + 1, f"-m {word[2:]}"
        elif word.rsplit("/", 1)[-1] == "sglang" and i + 1 < len(words) and words[i + 1] == "serve":
            parser, start, entry = "sglang", i + 2, "sglang serve"
        elif word.rsplit("/", 1)[-1] == SMG_PROGRAM or (
            word == "-m" and i + 1 < len(words) and words[i + 1] == SMG_PROGRAM
        ):
            at = i + 1 if word != "-m" else i + 2
            if at < len(words) and words[at] == SMG_COMMAND:
                parser, start, entry = "smg", at + 1, f"{SMG_PROGRAM} {SMG_COMMAND}"
        if parser is not None:
            rest: list[str] = []
            for w in words[start:]:
                if w in SHELL_OPERATORS:
                    break
                rest.append(w)
            return Command(parser, tuple(rest), entry)
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


@dataclass(frozen=True)
class _Located:
    """A Problem with where it is: the index of the argument it concerns (the option for a bad
    value; len(args) for a missing required flag; -1 for the entry point), the argument as written,
    the message without flag and release, and the replacement a table or a hint names."""

    problem: Problem
    index: int
    spelled: str
    detail: str
    replacement: str | None = None


def _located(
    kind: ProblemKind,
    flag: str | None,
    message: str,
    index: int,
    spelled: str,
    detail: str,
    replacement: str | None = None,
) -> _Located:
    return _Located(Problem(kind, flag, message), index, spelled, detail, replacement)


def _check_values(table: FlagTable, tok: _Token, spec: OptionSpec, values: Iterable[str]) -> list[_Located]:
    found: list[_Located] = []
    for value in values:
        if "$(" in value:
            continue  # filled in by Kubernetes at run time from a variable we were not given
        ok, converted = _convert(spec, value)
        if not ok:
            detail = f"invalid {_type_label(spec)} value {value!r}"
            found.append(
                _located("bad-type", spec.canonical, f"{spec.canonical}: {detail}", tok.index, tok.spelled, detail)
            )
            continue
        if spec.choices is not None and converted not in spec.choices:
            allowed = ", ".join(str(c) for c in spec.choices)
            detail = f"invalid choice {value!r} (choose from {allowed})"
            message = f"{spec.canonical}: invalid choice {value!r} (choose from {allowed}; {table.label})"
            found.append(_located("bad-choice", spec.canonical, message, tok.index, tok.spelled, detail))
    return found


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


def _option_problems(table: FlagTable, tok: _Token, abbrev_is_problem: bool) -> list[_Located]:
    spec = tok.spec
    assert spec is not None
    found: list[_Located] = []
    at = (tok.index, tok.spelled)
    if tok.spelled not in table.options and abbrev_is_problem:
        detail = f"abbreviation of {spec.option}"
        message = (
            f"{tok.spelled}: abbreviation of {spec.option}; spell it out (a later release may add a "
            f"flag that makes this prefix ambiguous)"
        )
        found.append(_located("abbreviation", spec.canonical, message, *at, detail, spec.option))
    dep = spec.deprecated
    if dep:
        replacement = dep.get("replacement") or flag_replacements().get(spec.option)
        use = f"; use {replacement}" if replacement else ""
        if dep.get("fatal"):
            message = f"{spec.option}: removed in {table.label}{use}"
            found.append(_located("removed", spec.canonical, message, *at, "removed", replacement))
        else:
            message = f"{spec.option}: deprecated in {table.label}{use}"
            found.append(_located("deprecated", spec.canonical, message, *at, "deprecated", replacement))
    if spec.suppressed:
        message = f"{spec.option}: internal flag (hidden from --help in {table.label})"
        found.append(_located("internal", spec.canonical, message, *at, "internal flag, hidden from --help"))
    return found


def _check(table: FlagTable, args: Sequence[str], abbreviations: bool, require: bool) -> list[_Located]:
    abbrev = table.allow_abbrev
    tokens = [_classify(table, i, a, abbrev) for i, a in enumerate(args)]
    found: list[_Located] = []
    seen: set[str] = set()
    i = 0
    n = len(tokens)
    while i < n:
        tok = tokens[i]
        i += 1
        if tok.kind == "separator":
            rest = [t.text for t in tokens[i:]]
            if rest:
                detail = f"unrecognized arguments after '--': {' '.join(rest)}"
                found.append(_located("extra-value", None, detail, tok.index, tok.text, detail))
            break
        if tok.kind == "value":
            message = (
                f"unexpected value {tok.text!r} (no option takes it here; {table.package} takes no "
                f"positional arguments)"
            )
            detail = "unexpected value (no option takes it here)"
            found.append(_located("extra-value", None, message, tok.index, tok.text, detail))
            continue
        # the run of values that follows this option
        run_end = i
        while run_end < n and tokens[run_end].kind == "value":
            run_end += 1
        run = [t.text for t in tokens[i:run_end]]
        if tok.kind == "ambiguous":
            detail = f"ambiguous abbreviation, could match {', '.join(tok.matches)}"
            message = f"{tok.spelled}: {detail} ({table.label})"
            found.append(_located("ambiguous", tok.spelled, message, tok.index, tok.spelled, detail))
            i = run_end
            continue
        if tok.kind == "unknown":
            hint = flag_replacements().get(tok.spelled)
            if hint:
                more = f"; use {hint}"
            else:
                close = get_close_matches(tok.spelled, list(table.options), n=1, cutoff=0.8)
                more = f"; did you mean {close[0]}?" if close else ""
            message = f"{tok.spelled}: unknown flag in {table.label}{more}"
            found.append(_located("unknown", tok.spelled, message, tok.index, tok.spelled, "unknown flag", hint))
            i = run_end
            continue
        spec = tok.spec
        assert spec is not None
        seen.add(spec.dest)
        found.extend(_option_problems(table, tok, not abbreviations))
        low, high = _arity(spec.nargs)
        at = (tok.index, tok.spelled)
        if tok.explicit is not None:
            if high == 0:
                detail = f"takes no value, but got {tok.explicit!r} after '='"
                found.append(_located("explicit-value", spec.canonical, f"{spec.option}: {detail}", *at, detail))
            elif low > 1:
                detail = _expected(spec.nargs)
                found.append(_located("missing-value", spec.canonical, f"{spec.option}: {detail}", *at, detail))
            else:
                found.extend(_check_values(table, tok, spec, [tok.explicit]))
            values: list[str] = []
            leftover = run
        else:
            if len(run) < low:
                detail = _expected(spec.nargs)
                found.append(_located("missing-value", spec.canonical, f"{spec.option}: {detail}", *at, detail))
                i = run_end
                continue
            take = len(run) if high is None else min(high, len(run))
            values, leftover = run[:take], run[take:]
            found.extend(_check_values(table, tok, spec, values))
        if leftover:
            what = "takes no value" if high == 0 else f"takes {_expected(spec.nargs).removeprefix('expected ')}"
            detail = f"{what}; unrecognized extra argument(s) {' '.join(repr(v) for v in leftover)}"
            found.append(_located("extra-value", spec.canonical, f"{spec.option}: {detail}", *at, detail))
        i = run_end
    if require and "config" not in seen:
        reported: set[str] = set()
        for spec in table.options.values():
            if spec.required and spec.dest not in seen and spec.dest not in reported:
                reported.add(spec.dest)
                message = f"missing required flag {spec.canonical}"
                found.append(_located("missing-required", spec.canonical, message, n, spec.canonical, "missing"))
    return found


def check_args(
    args: Sequence[str],
    parser: ParserName | FlagTable = "sglang",
    *,
    abbreviations: bool = True,
    require: bool = True,
) -> list[Problem]:
    """Check the arguments a parser would receive (everything after the module name).

    ``parser``: a table, or the name of one (the default sglang release's for ``"sglang"``).
    ``abbreviations``: accept a unique prefix of a flag as argparse does (True), or report it
    (False: our own catalog spells every flag out). ``require``: report required flags that are
    missing (``--model-path``); skipped when ``--config`` supplies a file.
    """
    table = parser if isinstance(parser, FlagTable) else load_table(parser)
    return [found.problem for found in _check(table, args, abbreviations, require)]


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
        wanted = (
            f"'-m {SGLANG_MODULE}'" if expect == "sglang" else f"'-m {ROUTER_MODULE}' or '{SMG_PROGRAM} {SMG_COMMAND}'"
        )
        return [Problem("not-a-command", None, f"no {wanted} in the command line")]
    if expect == "router" and command.parser in ROUTERS:
        pass  # either router: each is checked against its own table
    elif expect is not None and command.parser != expect:
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
    stay verbatim and their values are not type-checked. Empty list: the default SGLang release
    (:func:`default_sglang_version`) accepts it, with no deprecated or internal flag. For the
    release(s) a container's image names, see :func:`check_engine_command`.
    """
    return [str(p) for p in check_command_problems(argv, env, expect="sglang", abbreviations=abbreviations)]


def check_router_command(
    argv: Sequence[str], env: Mapping[str, str] | None = None, *, abbreviations: bool = True
) -> list[str]:
    """Problems of an SGLang router command line (``... -m sglang_router.launch_router ARGS``, or the
    gateway's ``smg launch ARGS``), against that router's own table."""
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
    SGLang server or router, against the default release whatever its image;
    return [] for any other container. Per release by image: :func:`check_engine_container`."""
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


# ------------------------------------------------------------------------------------------------
# Per SGLang release, chosen by the image
# ------------------------------------------------------------------------------------------------

# The release at the start of an image tag: v0.5.5, 0.5.5-cu126, v0.4.9.post2-cu128-b200, ...
_TAG_VERSION = re.compile(r"v?(?P<version>\d+(?:\.\d+){1,3}(?:\.post\d+)?(?:rc\d+)?)(?=$|[-_+])")


def image_tag(image: str | None) -> str | None:
    """The tag of an image reference (None when untagged or digest-only).

    ``registry:5000/lmsysorg/sglang`` has no tag: a colon counts only in the last path segment.
    """
    if not image:
        return None
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    return last.split(":", 1)[1] or None


def image_sglang_version(image: str | None) -> str | None:
    """The SGLang release an image tag names (``lmsysorg/sglang:v0.5.5-cu126`` -> ``0.5.5``),
    whether or not there is a table for it; None for ``latest``, ``dev``, untagged, digest-only."""
    tag = image_tag(image)
    m = _TAG_VERSION.match(tag) if tag else None
    return m.group("version") if m else None


def sglang_versions_for_image(image: str | None) -> tuple[str, ...]:
    """The releases whose tables judge a command line run from ``image``: the one its tag names
    when there is a table for it, else every known release (oldest first)."""
    version = image_sglang_version(image)
    known = sglang_versions()
    return (version,) if version in known else known


@dataclass(frozen=True)
class FlagFinding:
    """One flag usage (one argument of the command line) that some of the chosen releases refuse,
    or, for an image that names one release, that release warns about. ``str()`` is the message."""

    flag: str  # as written, e.g. "--enable-deepep-moe" (or the stray value, or "sglang serve")
    kind: ProblemKind  # the newest refusing release's verdict (or the newest warning's)
    accepted_by: tuple[str, ...]  # releases whose parser accepts this usage (with a warning or not)
    refused_by: tuple[str, ...]  # releases whose parser refuses it
    replacement: str | None  # what to write instead, where SGLang or a hint says so
    message: str

    def __str__(self) -> str:
        return self.message


def _entry_problem(table: FlagTable, entry: str) -> _Located | None:
    if entry != "sglang serve" or "sglang serve" in table.entry_points:
        return None
    detail = "no `sglang serve` command in this release"
    return _located(
        "not-a-command", None, f"{entry}: {detail} ({table.label})", -1, entry, detail, f"-m {SGLANG_MODULE}"
    )


def _per_version(
    image: str | None, argv: Sequence[str], env: Mapping[str, str] | None, abbreviations: bool
) -> dict[str, list[_Located]] | None:
    command = find_command(argv, env)
    if command is None or command.parser != "sglang":
        return None
    verdicts: dict[str, list[_Located]] = {}
    for version in sglang_versions_for_image(image):
        table = load_table("sglang", version)
        entry = _entry_problem(table, command.entry)
        verdicts[version] = ([entry] if entry else []) + _check(table, command.args, abbreviations, True)
    return verdicts


def _ambiguous_replacement(spelled: str, version: str) -> str | None:
    # A flag that a known release had exactly and a later one split into longer flags (so that the
    # old spelling became an ambiguous prefix there): the longer flags are what replaced it.
    if not any(spelled in load_table("sglang", v).options for v in sglang_versions()):
        return None
    matches = [o for o in load_table("sglang", version).options if o.startswith(spelled)]
    return " or ".join(matches) if matches else None


def _last_accepting(spelled: str, chosen: Sequence[str]) -> str | None:
    # The newest known release before the chosen ones that had the flag: where it was dropped.
    known = sglang_versions()
    older = known[: min(known.index(v) for v in chosen)]
    having = [v for v in older if spelled in load_table("sglang", v).options]
    return having[-1] if having else None


# What of an argument a problem is about: the flag itself, its values, or extra values after them.
# Each is its own finding, so that a bad choice does not hide the stray value that follows it.
_ASPECT: dict[ProblemKind, int] = {"bad-type": 1, "bad-choice": 1, "missing-value": 1, "explicit-value": 1}
_ASPECT_EXTRA = 2


def _aspect(found: _Located) -> int:
    if found.problem.kind == "extra-value" and found.index >= 0 and found.problem.flag is not None:
        return _ASPECT_EXTRA
    return _ASPECT.get(found.problem.kind, 0)


def _finding(
    spelled: str,
    versions: Sequence[str],
    by_version: Mapping[str, list[_Located]],
    refusing_argument: set[str],
    note: str,
) -> FlagFinding | None:
    refused = [v for v in versions if any(f.problem.kind in REFUSALS for f in by_version.get(v, ()))]
    accepted = [v for v in versions if v not in refusing_argument]
    warned = [v for v in accepted if by_version.get(v)]
    if not refused and (not warned or len(versions) > 1):
        return None  # several candidate releases: only a refusal is worth saying
    deciding = refused or warned
    newest = by_version[deciding[-1]]
    pick = next((f for f in newest if f.problem.kind in REFUSALS), newest[0])
    replacement = pick.replacement
    if replacement is None and pick.problem.kind == "ambiguous":
        replacement = _ambiguous_replacement(spelled, deciding[-1])
    if replacement is None and _aspect(pick) == 0 and pick.problem.flag is not None:
        replacement = flag_replacements().get(spelled)
    if refused:
        message = f"{spelled} is refused by SGLang {', '.join(refused)}: {pick.detail}"
        parts = []
        clean = [v for v in accepted if v not in warned]
        if clean:
            parts.append(f"accepted by {', '.join(clean)}")
        for detail in dict.fromkeys(by_version[v][0].detail for v in warned):
            parts.append(f"{detail} in {', '.join(v for v in warned if by_version[v][0].detail == detail)}")
        if not accepted and pick.problem.kind == "unknown":
            last = _last_accepting(spelled, versions)
            if last:
                parts.append(f"last accepted by {last}")
        if parts:
            message += f" ({'; '.join(parts)})"
    else:
        message = f"{spelled}: {pick.detail} in SGLang {', '.join(warned)}"
    if replacement:
        message += f"; use {replacement}"
    return FlagFinding(
        flag=spelled,
        kind=pick.problem.kind,
        accepted_by=tuple(accepted),
        refused_by=tuple(refused),
        replacement=replacement,
        message=message + note,
    )


def check_engine_command(
    image: str | None,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    abbreviations: bool = True,
) -> list[FlagFinding]:
    """Findings of an SGLang server command line (command + args) run from ``image``, against the
    release(s) :func:`sglang_versions_for_image` picks; [] for any other command line.

    One finding per argument, in command-line order (a missing required flag last). With one
    release chosen, every refusal and warning (deprecated, internal; abbreviations with
    ``abbreviations=False``); with several (``latest``, ``dev``, untagged, or a release without a
    table), only the arguments at least one of them refuses, saying which accept them.
    """
    verdicts = _per_version(image, argv, env, abbreviations)
    if verdicts is None:
        return []
    versions = tuple(verdicts)
    named = image_sglang_version(image)
    note = ""
    if named is not None and named not in versions:
        note = f" (the image names SGLang {named}, which has no table: checked {', '.join(versions)})"
    places: dict[tuple[int, str, int], dict[str, list[_Located]]] = {}
    refusing: dict[tuple[int, str], set[str]] = {}
    for version, found in verdicts.items():
        for f in found:
            places.setdefault((f.index, f.spelled, _aspect(f)), {}).setdefault(version, []).append(f)
            if f.problem.kind in REFUSALS:
                refusing.setdefault((f.index, f.spelled), set()).add(version)
    findings = []
    for (index, spelled, _), by_version in sorted(places.items()):
        finding = _finding(spelled, versions, by_version, refusing.get((index, spelled), set()), note)
        if finding is not None:
            findings.append(finding)
    return findings


def check_engine_container(
    container: Mapping[str, Any], env: Mapping[str, str] | None = None, *, abbreviations: bool = True
) -> list[FlagFinding]:
    """:func:`check_engine_command` for a Kubernetes container mapping (``image``, ``command``,
    ``args``, ``env`` as :func:`container_env` resolves it); [] unless it runs the SGLang server."""
    argv = [str(a) for a in (container.get("command") or [])] + [str(a) for a in (container.get("args") or [])]
    image = container.get("image")
    return check_engine_command(
        image if isinstance(image, str) else None, argv, container_env(container, env), abbreviations=abbreviations
    )


def accepting_versions(image: str | None, argv: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The chosen releases (see :func:`sglang_versions_for_image`) whose parser accepts the whole
    SGLang server command line (warnings allowed); () when argv holds no SGLang server command."""
    verdicts = _per_version(image, argv, env, True)
    if verdicts is None:
        return ()
    return tuple(v for v, found in verdicts.items() if not any(f.problem.kind in REFUSALS for f in found))


def accepted_by_some_version(image: str | None, argv: Sequence[str], env: Mapping[str, str] | None = None) -> bool:
    """True when at least one release chosen for ``image`` accepts the whole SGLang server command
    line (what a stand-in engine needs to decide whether the real one would start); False when
    every one refuses it, or when argv holds no SGLang server command."""
    return bool(accepting_versions(image, argv, env))
