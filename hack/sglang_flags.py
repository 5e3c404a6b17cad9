#!/usr/bin/env python3
"""Generate the committed SGLang flag tables from the REAL argument parsers.

Run by ``make sglang-flags``. Writes

* ``ome_operator/render/sglang_flags.json``: every option string of
  ``sglang.srt.server_args.ServerArgs.add_cli_args`` (the parser behind
  ``python -m sglang.launch_server`` and ``sglang serve``), for sglang == SGLANG_VERSION;
* ``ome_operator/render/sglang_router_flags.json``: every option string of
  ``sglang_router.router_args.RouterArgs.add_cli_args`` (the parser behind
  ``python -m sglang_router.launch_router``), for sglang-router == ROUTER_VERSION.

``ome_operator.render.engine_args`` checks command lines against these tables (tests, ``render``,
and later admission). Each table also records ``probes``: command lines run through the real
parser at generation time with the real verdict (accepted, or argparse's error line), so the pure
checker can be tested against the real parser's behaviour without the real parser.

Why a table and not the parser itself: the parser's import chain needs torch. PyPI serves no CPU
build of torch for Linux: ``torch`` there is a 539 MB wheel that pulls about 3 GB of CUDA wheels
(nvidia-cublas, -cudnn, -nccl, ... and triton). That is not cheap on a fresh 2-core machine, so
``make test`` checks against the table and this script is the only place that runs the parser.

How it runs:

1. Outside (any python3 >= 3.11): create a throwaway venv under
   ``~/.cache/ome-operator/sglang-venv-<SGLANG_VERSION>`` (kept between runs; rebuilt when the pins
   change) and ``pip install --no-deps`` exactly the pins in ``PINS``: sglang, sglang-router and the
   few light packages that ``sglang.srt.server_args`` imports for real (numpy, msgspec, pybase64,
   pillow, pyzmq, psutil, requests, packaging, orjson, starlette, typing_extensions, pydantic and
   their own small dependencies).
2. Re-run this file with that venv's interpreter (``--inside``) and a scrubbed environment (no
   ``SGLANG_*`` variables: one of them adds a choice to ``--sampling-backend``), import the real
   parsers and print the table as JSON.
3. Outside again: write the files (or, with ``--check``, compare them with the committed ones and
   exit 1 on drift).

What is NOT the real thing, exactly:

* ``torch`` and ``triton`` (and any ``torch.*`` / ``triton.*`` submodule) are inert stub modules
  installed by a ``sys.meta_path`` finder before sglang is imported. Their attributes are
  placeholder classes (callable, subclassable, falsy), so module-level code such as
  ``class X(nn.Module)``, ``@torch.compile(...)`` or ``torch.cuda.is_available()`` runs. They answer
  like a CPU-only build without accelerators: ``torch.__version__ == "2.14.1"`` (sglang 0.5.23's
  pin), ``torch.version.cuda`` and ``torch.version.hip`` are None, there is no ``torch.npu``,
  ``torch.hpu`` or ``torch.version.musa``. No parser option, type, arity or choice list in 0.5.23
  depends on torch (the options are declared on msgspec structs in ``sglang.srt.arg_groups``).
* ``sglang/__init__.py`` is not executed: the ``sglang`` package object is created by hand with
  the installed package's ``__path__``, because that file imports the frontend DSL (``sglang.lang``:
  tqdm, IPython, ...) which the server's parser does not use. Everything below it
  (``sglang.srt.server_args`` and all it imports) is sglang's own code, unmodified.
* The router parser needs no stub (it is argparse plus the router's Rust extension).

Other modes: ``--check`` regenerates in memory and exits 1 if the committed tables differ;
``--parse`` reads ``[{"parser": "sglang"|"router", "argv": [...]}, ...]`` as JSON on stdin and
prints the real parsers' verdicts; ``--ensure-venv`` only builds the venv. tests/test_catalog_flags.py
uses all three (the venv is built on first use and cached; about 30 s and ~100 MB of downloads).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

SGLANG_VERSION = "0.5.23"
ROUTER_VERSION = "0.3.2"
TORCH_STUB_VERSION = "2.14.1"  # what sglang 0.5.23 pins; only its string form is ever read

# Exact pins, installed with --no-deps so nothing else (torch, CUDA, triton, ...) comes along.
PINS = [
    f"sglang=={SGLANG_VERSION}",
    f"sglang-router=={ROUTER_VERSION}",
    "numpy==2.4.6",
    "msgspec==0.22.0",
    "pybase64==1.5.1",
    "pillow==13.0.0",
    "pyzmq==27.3.0",
    "psutil==7.2.2",
    "requests==2.34.2",
    "certifi==2026.10.19.post1",
    "charset-normalizer==3.5.3",
    "idna==3.20",
    "urllib3==2.8.0",
    "packaging==26.4",
    "orjson==3.13.0",
    "starlette==1.10.0",
    "anyio==4.16.0",
    "typing_extensions==4.16.0",
    "pydantic==2.14.4",
    "pydantic_core==2.50.5",
    "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
]

STUBBED_TOP_LEVEL = ("torch", "triton")

REPO = Path(__file__).resolve().parents[1]
OUT_SGLANG = REPO / "ome_operator" / "render" / "sglang_flags.json"
OUT_ROUTER = REPO / "ome_operator" / "render" / "sglang_router_flags.json"
VENV = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ome-operator" / (f"sglang-venv-{SGLANG_VERSION}")
)

# Command lines run through the real parser at generation time; their verdicts are stored in the
# table so the pure checker can be tested against the real parser.
SGLANG_PROBES: list[list[str]] = [
    ["--model-path", "/m"],
    ["--model", "/m", "--tp", "8"],
    ["--model-path", "/m", "--mem-frac", "0.9"],
    ["--model-path", "/m", "--mem-fraction-static=0.85"],
    ["--model-path", "/m", "--tensor-parallel-size", "2"],
    ["--model-path", "/m", "--enable-deepep-moe"],
    ["--model-path", "/m", "--cuda-graph-bs", "480"],
    ["--model-path", "/m", "--cuda-graph-max-bs", "480"],
    ["--model-path", "/m", "--cuda-graph-bs-decode", "1", "2", "480"],
    ["--model-path", "/m", "--cuda-graph-max-bs-decode", "480"],
    ["--model-path", "/m", "--cuda-graph-bs-decode"],
    ["--model-path", "/m", "--enable-dp-attention"],
    ["--model-path", "/m", "--disable-cuda-graph"],
    ["--model-path", "/m", "--enable-flashinfer-allreduce-fusion"],
    ["--model-path", "/m", "--deepep-mode", "bogus"],
    ["--model-path", "/m", "--deepep-mode", "low_latency"],
    ["--model-path", "/m", "--moe-a2a-backend", "deepep"],
    ["--model-path", "/m", "--tp-size", "eight"],
    ["--model-path", "/m", "--mem-fraction-static", "lots"],
    ["--model-path", "/m", "--tp-size"],
    ["--model-path", "/m", "--tp-size", "8", "16"],
    ["--model-path", "/m", "--trust-remote-code=yes"],
    ["--model-path", "/m", "--trust-remote-code", "yes"],
    ["--model-path", "/m", "--max-total-tokens", "-1"],
    ["--model-path", "/m", "--enable-tf32-matmul"],
    ["--model-path", "/m", "--no-enable-tf32-matmul"],
    ["--model-path", "/m", "--dist-init-addr", "10.0.0.1:5757", "--nnodes", "4", "--node-rank", "0"],
    ["--model-path", "/m", "--nccl-init", "10.0.0.1:5757"],
    ["--model-path", "/m", "--enable-dp"],
    ["--model-path", "/m", "--enable-dp-lm"],
    ["--tp-size", "8"],
    ["--model-path", "/m", "stray"],
    ["--model-path", "/m", "--served-model-name", "a b"],
]
ROUTER_PROBES: list[list[str]] = [
    ["--pd-disaggregation", "--policy", "random", "--service-discovery"],
    ["--prefill-selector", "component=engine ome.io/inferenceservice=x"],
    ["--prefill-selector", "component=engine", "ome.io/inferenceservice=x"],
    ["--policy", "bogus"],
    ["--service-discovery-port", "http"],
    ["--service-discovery-namespace"],
    ["--selector-bogus", "x"],
    ["--pd", "--service-discovery"],
    ["--max-payload-size", "2147483648", "--worker-startup-timeout-secs", "1200"],
]


# --------------------------------------------------------------------------------------------
# Inside the throwaway venv
# --------------------------------------------------------------------------------------------


def _install_stubs() -> None:
    """Stub torch/triton and skip sglang/__init__.py (see the module docstring)."""
    import abc
    import importlib.abc
    import importlib.machinery
    import importlib.util

    class _StubMeta(abc.ABCMeta):
        # A placeholder class: attribute access yields more placeholders, calling it yields a
        # placeholder (or, used as a bare decorator, returns the decorated function), it is
        # falsy, empty and subclassable (also next to abc.ABC).
        def __getattr__(cls, name: str) -> Any:
            if name.startswith("__") and name.endswith("__"):
                raise AttributeError(name)
            return _stub_class(f"{cls.__name__}.{name}")

        def __call__(cls, *args: Any, **kwargs: Any) -> Any:
            if "_ome_stub" not in cls.__dict__:  # a real subclass of a placeholder
                return super().__call__(*args, **kwargs)
            if len(args) == 1 and not kwargs and callable(args[0]) and not isinstance(args[0], _StubMeta):
                return args[0]
            return _stub_class(f"{cls.__name__}()")

        def __getitem__(cls, item: Any) -> Any:
            return cls

        def __or__(cls, other: Any) -> Any:
            return cls

        def __ror__(cls, other: Any) -> Any:
            return cls

        def __bool__(cls) -> bool:
            return False

        def __iter__(cls) -> Any:
            return iter(())

        def __len__(cls) -> int:
            return 0

        def __int__(cls) -> int:
            return 0

        def __index__(cls) -> int:
            return 0

        def __float__(cls) -> float:
            return 0.0

    def _stub_class(name: str) -> Any:
        return _StubMeta(name, (), {"_ome_stub": True})

    absent = {"torch": {"npu", "hpu", "musa"}, "torch.version": {"musa"}}
    fixed: dict[str, dict[str, Any]] = {
        "torch": {"__version__": TORCH_STUB_VERSION},
        "torch.version": {"hip": None, "cuda": None, "git_version": "stub"},
        "triton": {"__version__": "0.0.0+stub"},
    }

    class StubModule(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            if name in fixed.get(self.__name__, {}):
                return fixed[self.__name__][name]
            if name.startswith("__") and name.endswith("__"):
                raise AttributeError(name)
            if name in absent.get(self.__name__, ()):
                raise AttributeError(name)
            return _stub_class(f"{self.__name__}.{name}")

    class StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
            if fullname.split(".")[0] in STUBBED_TOP_LEVEL:
                return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
            return None

        def create_module(self, spec: Any) -> Any:
            module = StubModule(spec.name)
            module.__path__ = []
            return module

        def exec_module(self, module: Any) -> None:
            return None

    sys.meta_path.insert(0, StubFinder())

    spec = importlib.util.find_spec("sglang")
    assert spec is not None and spec.submodule_search_locations is not None
    package = types.ModuleType("sglang")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    package.__file__ = spec.origin
    sys.modules["sglang"] = package


def _sglang_parser() -> argparse.ArgumentParser:
    from sglang.srt.server_args import ServerArgs

    # Exactly what sglang.srt.server_args.prepare_server_args builds.
    parser = argparse.ArgumentParser(prog="sglang serve")
    ServerArgs.add_cli_args(parser)
    return parser


def _router_parser() -> argparse.ArgumentParser:
    from sglang_router.router_args import RouterArgs

    # What sglang_router.launch_router.parse_router_args builds (minus description/formatter).
    parser = argparse.ArgumentParser(prog="launch_router.py")
    RouterArgs.add_cli_args(parser, use_router_prefix=False)
    return parser


_DEPRECATED_HELP = re.compile(r"^\s*\(?\s*deprecated\b[\s.:,]*(?P<rest>.*)", re.IGNORECASE | re.DOTALL)
_USE_INSTEAD = re.compile(r"\buse\s+(?P<flag>--[A-Za-z0-9][-A-Za-z0-9_{},=<>]*)", re.IGNORECASE)

# Custom argparse ``type=`` callables and what the pure checker may verify about their values.
VALUE_KINDS = {
    "builtins.int": "int",
    "builtins.float": "float",
    "builtins.str": "str",
    "json.loads": "json",
    "sglang.srt.utils.common.json_list_type": "json",
    "sglang.srt.utils.common.human_readable_int": "human_readable_int",
    "sglang.srt.utils.common.nullable_str": "str",
    "sglang.srt.model_executor.cuda_graph_config.parse_cuda_graph_backend_arg": "str",
    "sglang.srt.model_executor.cuda_graph_config.parse_cuda_graph_config_arg": "json",
}

_ACTION_NAMES = {
    "_StoreAction": "store",
    "_StoreTrueAction": "store_true",
    "_StoreFalseAction": "store_false",
    "_StoreConstAction": "store_const",
    "_AppendAction": "append",
    "_AppendConstAction": "append_const",
    "_ExtendAction": "extend",
    "_CountAction": "count",
    "_HelpAction": "help",
    "_VersionAction": "version",
    "BooleanOptionalAction": "boolean_optional",
}


def _type_name(action: argparse.Action) -> str | None:
    t = action.type
    if t is None:
        return None
    module = getattr(t, "__module__", None) or ""
    name = getattr(t, "__qualname__", None) or repr(t)
    return f"{module}.{name}" if module else name


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _describe_action(action: argparse.Action, unknown_types: set[str]) -> dict[str, Any]:
    cls = type(action)
    kind = _ACTION_NAMES.get(cls.__name__) if cls.__module__ == "argparse" else None
    if kind is None:
        kind = f"custom:{cls.__module__}.{cls.__qualname__}"
    type_name = _type_name(action)
    if type_name is None:
        value_kind = None if action.nargs == 0 else "str"
    else:
        value_kind = VALUE_KINDS.get(type_name)
        if value_kind is None:
            unknown_types.add(type_name)
            value_kind = "any"
    choices: list[Any] | None = None
    if action.choices is not None:
        # Sorted: some choice lists come from sets or from the router's Rust extension in hash
        # order, and the table must be reproducible. Membership is all the checker needs.
        raw = sorted(action.choices, key=str)
        choices = [_json_value(c) for c in raw]
    help_text = action.help if isinstance(action.help, str) else None
    deprecated: dict[str, Any] | None = None
    if "Deprecated" in cls.__name__:
        error_message = getattr(action, "error_message", None)
        deprecated = {
            "how": "action",
            "fatal": error_message is not None,
            "replacement": getattr(action, "new_flag", None),
            "message": error_message or help_text,
        }
    elif getattr(action, "deprecated", False):  # argparse's own flag (Python >= 3.13)
        deprecated = {"how": "argparse", "fatal": False, "replacement": None, "message": help_text}
    elif help_text and help_text != argparse.SUPPRESS and (m := _DEPRECATED_HELP.match(help_text)):
        use = _USE_INSTEAD.search(m.group("rest"))
        deprecated = {
            "how": "help",
            "fatal": False,
            "replacement": use.group("flag") if use else None,
            "message": help_text,
        }
    nargs: Any = action.nargs
    return {
        "dest": action.dest,
        "canonical": action.option_strings[0],
        "option_strings": list(action.option_strings),
        "action": kind,
        "nargs": nargs,
        "type": type_name,
        "value_kind": value_kind,
        "choices": choices,
        "required": bool(action.required),
        "suppressed": action.help == argparse.SUPPRESS,
        "deprecated": deprecated,
    }


def describe_parser(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The option table of an argparse parser (pure: only reads the parser)."""
    unknown_types: set[str] = set()
    options: dict[str, Any] = {}
    positionals = []
    for action in parser._actions:
        if not action.option_strings:
            positionals.append(action.dest)
            continue
        described = _describe_action(action, unknown_types)
        for option in action.option_strings:
            entry = dict(described)
            entry["aliases"] = [o for o in action.option_strings if o != option]
            del entry["option_strings"]
            options[option] = entry
    return {
        "prog": parser.prog,
        "allow_abbrev": parser.allow_abbrev,
        "prefix_chars": parser.prefix_chars,
        "fromfile_prefix_chars": parser.fromfile_prefix_chars,
        "positionals": positionals,
        "unclassified_types": sorted(unknown_types),
        "options": dict(sorted(options.items())),
    }


class _Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(re.sub(r"\x1b\[[0-9;]*m", "", record.getMessage()))


def real_parse(parser: argparse.ArgumentParser, argv: list[str], router: bool = False) -> dict[str, Any]:
    """Run the real parser on argv; return the verdict and the deprecation warnings it logged."""
    handler = _Captured()
    root = logging.getLogger()
    root.addHandler(handler)
    err = io.StringIO()
    error: str | None = None
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            ns = parser.parse_args(argv)
            if router:
                from sglang_router.router_args import RouterArgs

                RouterArgs.from_cli_args(ns, use_router_prefix=False)
    except SystemExit:
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        error = lines[-1] if lines else "exit"
        error = re.sub(r"^.*?: error: ", "", error, count=1)
    except Exception as exc:  # from_cli_args
        error = f"{type(exc).__name__}: {exc}"
    finally:
        root.removeHandler(handler)
    return {"argv": argv, "ok": error is None, "error": error, "warnings": handler.messages}


def inside_dump() -> dict[str, Any]:
    from importlib.metadata import version

    _install_stubs()
    sglang_parser = _sglang_parser()
    router_parser = _router_parser()
    stubbed = sorted(n for n in sys.modules if n.split(".")[0] in STUBBED_TOP_LEVEL)
    sglang_table = {
        "package": "sglang",
        "version": version("sglang"),
        "parser": "sglang.srt.server_args.ServerArgs.add_cli_args",
        "entry_points": ["python3 -m sglang.launch_server", "sglang serve"],
        "generated_by": "hack/sglang_flags.py (make sglang-flags)",
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "stubbed_modules": stubbed,
        "not_executed": ["sglang/__init__.py"],
        **describe_parser(sglang_parser),
        "probes": [real_parse(sglang_parser, argv) for argv in SGLANG_PROBES],
    }
    router_table = {
        "package": "sglang-router",
        "version": version("sglang-router"),
        "parser": "sglang_router.router_args.RouterArgs.add_cli_args",
        "entry_points": ["python3 -m sglang_router.launch_router"],
        "generated_by": "hack/sglang_flags.py (make sglang-flags)",
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "stubbed_modules": [],
        "not_executed": [],
        **describe_parser(router_parser),
        "probes": [real_parse(router_parser, argv, router=True) for argv in ROUTER_PROBES],
    }
    return {"sglang": sglang_table, "router": router_table}


def inside_parse(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    _install_stubs()
    parsers = {"sglang": _sglang_parser(), "router": _router_parser()}
    return [real_parse(parsers[r["parser"]], list(r["argv"]), router=r["parser"] == "router") for r in requests]


# --------------------------------------------------------------------------------------------
# Outside
# --------------------------------------------------------------------------------------------


def venv_python() -> Path:
    return VENV / "bin" / "python"


def venv_ready() -> bool:
    stamp = VENV / ".ome-pins"
    return venv_python().exists() and stamp.exists() and stamp.read_text() == "\n".join(PINS)


def ensure_venv() -> Path:
    if venv_ready():
        return venv_python()
    print(f"building the throwaway venv {VENV} (sglang=={SGLANG_VERSION}, no GPU packages)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run(
        [str(venv_python()), "-m", "pip", "install", "--quiet", "--no-deps", *PINS],
        check=True,
    )
    (VENV / ".ome-pins").write_text("\n".join(PINS))
    return venv_python()


def _scrubbed_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "PIP_CERT", "SSL_CERT_FILE", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PYTHONHASHSEED"] = "0"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_inside(mode: str, stdin: str = "") -> Any:
    python = ensure_venv()
    proc = subprocess.run(
        [str(python), str(Path(__file__).resolve()), "--inside", mode],
        input=stdin,
        capture_output=True,
        text=True,
        env=_scrubbed_env(),
        check=False,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"the real parser failed to load in {VENV} (exit {proc.returncode})")
    return json.loads(proc.stdout)


def render(table: dict[str, Any]) -> str:
    return json.dumps(table, indent=1, sort_keys=False, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed tables differ")
    ap.add_argument("--parse", action="store_true", help="run the real parsers on JSON requests from stdin")
    ap.add_argument("--ensure-venv", action="store_true", help="only build the throwaway venv if it is missing")
    ap.add_argument("--inside", choices=["dump", "parse"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.ensure_venv:
        print(ensure_venv())
        return 0

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

    tables = run_inside("dump")
    for key in ("sglang", "router"):
        unclassified = tables[key]["unclassified_types"]
        if unclassified:
            print(f"note: {key}: argparse types not classified in VALUE_KINDS: {unclassified}", file=sys.stderr)
    drift = []
    for key, path in (("sglang", OUT_SGLANG), ("router", OUT_ROUTER)):
        text = render(tables[key])
        if args.check:
            if not path.exists() or path.read_text() != text:
                drift.append(str(path.relative_to(REPO)))
        else:
            path.write_text(text)
            options = tables[key]["options"]
            print(
                f"wrote {path.relative_to(REPO)}: {tables[key]['package']} {tables[key]['version']}, "
                f"{len(options)} option strings"
            )
    if drift:
        print(f"drift: {', '.join(drift)} differ from the real parser; run `make sglang-flags`", file=sys.stderr)
        return 1
    if args.check:
        print("tables match the real parsers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
