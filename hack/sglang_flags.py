#!/usr/bin/env python3
"""Generate the committed SGLang flag tables from the REAL argument parsers, one per SGLang release.

Run by ``make sglang-flags``. Writes

* ``ome_operator/render/sglang_flags/<version>.json``, one per entry of ``RELEASES``: every option
  string of ``sglang.srt.server_args.ServerArgs.add_cli_args`` (the parser behind
  ``python -m sglang.launch_server`` and, where the release has it, ``sglang serve``) of that
  sglang release;
* ``ome_operator/render/sglang_flags.json``: the index of those tables (which versions, which one
  is the default that the version-less API checks against);
* ``ome_operator/render/sglang_router_flags.json``: every option string of
  ``sglang_router.router_args.RouterArgs.add_cli_args`` (the parser behind
  ``python -m sglang_router.launch_router``), for sglang-router == ROUTER_VERSION (installed in the
  venv of the current release only: the router is versioned on its own).

The releases (``RELEASES``):

* ``0.4.9.post2`` (July 2025): it still has ``--enable-deepep-moe`` and ``--enable-ep-moe``
  (0.5.5 has neither, and ``--moe-a2a-backend`` instead);
* ``0.5.5`` (late 2025): what OME's SGLang runtimes were written against;
* ``0.5.23``: current, the default.

``ome_operator.render.engine_args`` checks command lines against these tables (tests, ``render``,
the ``EngineArgsValid`` condition), picking the table(s) by the image tag. Each table also records
``probes``: command lines run through that release's real parser at generation time with the real
verdict (accepted, or argparse's error line), so the pure checker can be tested against the real
parsers' behaviour without the real parsers.

Why a table and not the parser itself: the parser's import chain needs torch. PyPI serves no CPU
build of torch for Linux: ``torch`` there is a 539 MB wheel that pulls about 3 GB of CUDA wheels
(nvidia-cublas, -cudnn, -nccl, ... and triton). That is not cheap on a fresh 2-core machine, so
``make test`` checks against the tables and this script is the only place that runs the parsers.

How it runs, per release:

1. Outside (any python3 >= 3.11): create a throwaway venv under
   ``~/.cache/ome-operator/sglang-venv-<version>`` (kept between runs; rebuilt when that release's
   pins change; the venvs of several releases are built concurrently) and
   ``pip install --no-deps`` exactly that release's pins (``Release.pins``): sglang itself and the
   light packages its ``sglang.srt.server_args`` imports for real. The pins were found by trying:
   import the parser, install what the ``ModuleNotFoundError`` names, repeat. Where today's release
   of such a package no longer works with an older sglang, the pin is the version that sglang
   release pinned itself (transformers, openai) or one from the release's time (huggingface_hub,
   fastapi and the starlette it needs, ...).
2. Re-run this file with that venv's interpreter (``--inside dump --release <version>``) and a
   scrubbed environment (no ``SGLANG_*`` variables: one of them adds a choice to
   ``--sampling-backend``), import the real parser and print the table as JSON.
3. Outside again: write the files (or, with ``--check``, compare them with the committed ones and
   exit 1 on drift).

What the releases import for real besides the 0.5.23 set (numpy, msgspec, pybase64, pillow,
pyzmq, psutil, requests and its four dependencies, packaging, orjson, starlette, anyio,
typing_extensions, pydantic and its three small dependencies):

* 0.5.5: also safetensors, fastapi (+ annotated-doc), openai (+ httpx, sniffio, distro), IPython
  (``sglang.utils`` imports ``IPython.display``; + traitlets, stack_data, executing, asttokens,
  pure_eval, pygments, decorator, prompt_toolkit, wcwidth), tqdm, partial_json_parser,
  huggingface_hub, pyyaml, filelock, transformers (+ regex, tokenizers, sentencepiece), dill;
* 0.4.9.post2: the same minus openai (and its three), partial_json_parser, annotated-doc and dill.

What is NOT the real thing, exactly (the same for every release; each table lists in
``stubbed_modules`` the stub modules that release's import actually touched):

* ``torch`` and ``triton`` (and any ``torch.*`` / ``triton.*`` submodule) are inert stub modules
  installed by a ``sys.meta_path`` finder before sglang is imported. Their attributes are
  placeholder classes (callable, subclassable, falsy; an attribute called ``name`` is a string, as
  0.5.5 passes ``torch.library.Library(...).m.name`` to ``hasattr``), so module-level code such as
  ``class X(nn.Module)``, ``@torch.compile(...)``, ``torch.cuda.is_available()`` or 0.5.5's
  custom-op registration runs. They answer like a CPU-only build without accelerators:
  ``torch.__version__`` is the torch that release pins (``Release.torch``: 2.7.1, 2.8.0, 2.14.1),
  ``torch.version.cuda`` and ``torch.version.hip`` are None, there is no ``torch.npu``,
  ``torch.hpu`` or ``torch.version.musa``. No parser option, type, arity or choice list of these
  releases depends on torch (0.5.23 declares its options on msgspec structs in
  ``sglang.srt.arg_groups``; 0.4.9.post2 and 0.5.5 with literal ``add_argument`` calls).
  No torch distribution metadata is installed, so transformers (0.4.9.post2, 0.5.5) logs "None of
  PyTorch, TensorFlow >= 2.0, or Flax have been found"; the parser uses none of its model code.
* ``sglang/__init__.py`` is not executed: the ``sglang`` package object is created by hand with
  the installed package's ``__path__``, because that file imports the frontend DSL (``sglang.lang``:
  tqdm, IPython, ...) which the server's parser does not use. Everything below it
  (``sglang.srt.server_args`` and all it imports) is sglang's own code, unmodified.
* No GPU-only package (sgl-kernel, flashinfer, deep_gemm, ...) is installed or stubbed: the
  parsers' import chains of these releases run without them. Their choice lists are module-level
  literals (plugins may extend them at run time through ``add_*_choices``; none is loaded here).
* The router parser needs no stub (it is argparse plus the router's Rust extension).

Other modes: ``--check`` regenerates in memory and exits 1 if the committed tables differ;
``--parse`` reads ``[{"parser": "sglang"|"router", "argv": [...], "version": "0.5.5"}, ...]`` as
JSON on stdin (``version`` defaults to the current release; router requests always run in the
router's venv) and prints the real parsers' verdicts in the same order; ``--ensure-venv`` only
builds the venvs (all, or those of ``--release``). tests/test_catalog_flags.py uses all three (the
venvs are built on first use, concurrently, in about a minute on a fresh machine, and cached;
1.1 GB on disk for the three).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import types
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROUTER_VERSION = "0.3.2"

# Shared by the releases whose import chain still works with them (the 0.5.23 set).
_BASE = (
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
    "anyio==4.16.0",
    "typing_extensions==4.16.0",
    "pydantic==2.14.4",
    "pydantic_core==2.50.5",
    "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
)


@dataclass(frozen=True)
class Release:
    """One sglang release: its venv's exact pins (installed with --no-deps, so nothing else, such
    as torch, CUDA or triton, comes along) and the torch version its stub reports."""

    version: str
    torch: str
    pins: tuple[str, ...]
    router: bool = False  # this venv also holds sglang-router and yields the router table

    @property
    def venv(self) -> Path:
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        return cache / "ome-operator" / f"sglang-venv-{self.version}"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def out(self) -> Path:
        return OUT_DIR / f"{self.version}.json"


RELEASES: tuple[Release, ...] = (
    Release(
        "0.4.9.post2",
        torch="2.7.1",
        pins=(
            "sglang==0.4.9.post2",
            *_BASE,
            "starlette==0.47.2",  # fastapi 0.116 wants starlette < 0.48
            "fastapi==0.116.1",
            "safetensors==0.5.3",
            "huggingface-hub==0.33.4",  # transformers 4.53 wants huggingface-hub < 1.0
            "transformers==4.53.0",  # what sglang 0.4.9.post2 pins
            "tokenizers==0.21.2",
            "sentencepiece==0.2.0",
            "regex==2024.11.6",
            "PyYAML==6.0.2",
            "filelock==3.18.0",
            "tqdm==4.67.1",
            "ipython==9.4.0",
            "traitlets==5.14.3",
            "stack-data==0.6.3",
            "executing==2.2.0",
            "asttokens==3.0.0",
            "pure_eval==0.2.3",
            "Pygments==2.19.2",
            "decorator==5.2.1",
            "prompt_toolkit==3.0.51",
            "wcwidth==0.2.13",
        ),
    ),
    Release(
        "0.5.5",
        torch="2.8.0",
        pins=(
            "sglang==0.5.5",
            *_BASE,
            "starlette==0.50.0",  # fastapi 0.121 wants starlette < 0.51
            "fastapi==0.121.3",  # later ones import opentelemetry
            "annotated-doc==0.0.7",
            "safetensors==0.6.2",
            "huggingface-hub==0.36.0",  # transformers 4.57 wants huggingface-hub < 1.0
            "transformers==4.57.1",  # what sglang 0.5.5 pins
            "tokenizers==0.22.1",
            "sentencepiece==0.2.3",
            "regex==2025.10.23",
            "PyYAML==6.0.3",
            "filelock==3.20.0",
            "tqdm==4.67.1",
            "openai==2.6.1",  # what sglang 0.5.5 pins
            "httpx==0.28.1",
            "sniffio==1.3.1",
            "distro==1.9.0",
            "partial-json-parser==0.2.1.1.post6",
            "dill==0.4.1",
            "ipython==9.6.0",
            "traitlets==5.14.3",
            "stack-data==0.6.3",
            "executing==2.3.0",
            "asttokens==3.0.2",
            "pure_eval==0.2.4",
            "Pygments==2.19.2",
            "decorator==5.3.1",
            "prompt_toolkit==3.0.53",
            "wcwidth==0.9.4",
        ),
    ),
    Release(
        "0.5.23",
        torch="2.14.1",
        pins=(
            "sglang==0.5.23",
            f"sglang-router=={ROUTER_VERSION}",
            *_BASE[:13],
            "starlette==1.10.0",
            *_BASE[13:],
        ),
        router=True,
    ),
)
CURRENT = RELEASES[-1]
BY_VERSION = {r.version: r for r in RELEASES}
ROUTER_RELEASE = next(r for r in RELEASES if r.router)

# The version-less names of the one-release generator, still read by older callers.
SGLANG_VERSION = CURRENT.version
PINS = list(CURRENT.pins)

STUBBED_TOP_LEVEL = ("torch", "triton")

REPO = Path(__file__).resolve().parents[1]
OUT_INDEX = REPO / "ome_operator" / "render" / "sglang_flags.json"
OUT_DIR = REPO / "ome_operator" / "render" / "sglang_flags"
OUT_ROUTER = REPO / "ome_operator" / "render" / "sglang_router_flags.json"

# Command lines run through every release's real parser at generation time; their verdicts are
# stored in each table so the pure checker can be tested against each real parser. Some flags
# exist in only some releases: that is the point.
SGLANG_PROBES: list[list[str]] = [
    ["--model-path", "/m"],
    ["--model", "/m", "--tp", "8"],
    ["--model-path", "/m", "--mem-frac", "0.9"],
    ["--model-path", "/m", "--mem-fraction-static=0.85"],
    ["--model-path", "/m", "--tensor-parallel-size", "2"],
    ["--model-path", "/m", "--enable-deepep-moe"],
    ["--model-path", "/m", "--enable-ep-moe"],
    ["--model-path", "/m", "--ep-size", "8"],
    ["--model-path", "/m", "--cuda-graph-bs", "480"],
    ["--model-path", "/m", "--cuda-graph-bs", "1", "2", "480"],
    ["--model-path", "/m", "--cuda-graph-max-bs", "480"],
    ["--model-path", "/m", "--cuda-graph-bs-decode", "1", "2", "480"],
    ["--model-path", "/m", "--cuda-graph-max-bs-decode", "480"],
    ["--model-path", "/m", "--cuda-graph-bs-decode"],
    ["--model-path", "/m", "--cuda-graph-backend-decode", "disabled"],
    ["--model-path", "/m", "--enable-dp-attention"],
    ["--model-path", "/m", "--enable-dp-attention", "--dp-size", "8"],
    ["--model-path", "/m", "--attn-dp-size", "8"],
    ["--model-path", "/m", "--disable-cuda-graph"],
    ["--model-path", "/m", "--enable-flashinfer-allreduce-fusion"],
    ["--model-path", "/m", "--deepep-mode", "bogus"],
    ["--model-path", "/m", "--deepep-mode", "low_latency"],
    ["--model-path", "/m", "--moe-a2a-backend", "deepep"],
    ["--model-path", "/m", "--moe-a2a-backend", "bogus"],
    ["--model-path", "/m", "--enable-two-batch-overlap"],
    ["--model-path", "/m", "--enable-eplb", "--ep-num-redundant-experts", "32", "--eplb-algorithm", "deepseek"],
    ["--model-path", "/m", "--disaggregation-mode", "prefill", "--disaggregation-ib-device", "mlx5_1"],
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


def version_key(version: str) -> tuple[int, ...]:
    """Order of plain release versions such as 0.4.9.post2 < 0.5.5 < 0.5.23 (no packaging needed)."""
    key: list[int] = []
    for part in version.split("."):
        m = re.fullmatch(r"(\d+)|post(\d+)", part)
        if m is None:
            raise ValueError(f"not a release version: {version}")
        key.extend((int(m.group(1)), 0) if m.group(1) else (-1, int(m.group(2))))
    return tuple(key)


# --------------------------------------------------------------------------------------------
# Inside a throwaway venv
# --------------------------------------------------------------------------------------------


def _install_stubs(torch_version: str) -> None:
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
            if name == "name":  # e.g. torch.library.Library(...).m.name, passed on to hasattr()
                return f"{cls.__name__}.name"
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
        "torch": {"__version__": torch_version},
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


def _sglang_parser(prog: str) -> argparse.ArgumentParser:
    from sglang.srt.server_args import ServerArgs

    # What sglang.srt.server_args.prepare_server_args builds (it leaves prog to argparse).
    parser = argparse.ArgumentParser(prog=prog)
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
    "sglang.srt.utils.nullable_str": "str",  # 0.4.9.post2 (before sglang.srt.utils became a package)
    "sglang.srt.utils.json_list_type": "json",
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


def real_parse(
    parser: argparse.ArgumentParser, argv: list[str], router: bool = False, router_module: str = "sglang_router"
) -> dict[str, Any]:
    """Run the real parser on argv; return the verdict and the deprecation warnings it logged.
    With ``router``, also ``<router_module>.router_args.RouterArgs.from_cli_args``, as the router's
    own launcher does (``smg`` for the current gateway)."""
    handler = _Captured()
    root = logging.getLogger()
    root.addHandler(handler)
    err = io.StringIO()
    error: str | None = None
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            ns = parser.parse_args(argv)
            if router:
                import importlib

                router_args = importlib.import_module(f"{router_module}.router_args")
                router_args.RouterArgs.from_cli_args(ns, use_router_prefix=False)
    except SystemExit:
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        error = lines[-1] if lines else "exit"
        error = re.sub(r"^.*?: error: ", "", error, count=1)
    except Exception as exc:  # from_cli_args
        error = f"{type(exc).__name__}: {exc}"
    finally:
        root.removeHandler(handler)
    return {"argv": argv, "ok": error is None, "error": error, "warnings": handler.messages}


def _entry_points() -> list[str]:
    """How the installed release starts the server: ``-m sglang.launch_server`` always, ``sglang
    serve`` where the distribution has the ``sglang`` console script with its ``serve`` command."""
    from importlib.metadata import distribution

    import sglang

    points = ["python3 -m sglang.launch_server"]
    scripts = {ep.name for ep in distribution("sglang").entry_points if ep.group == "console_scripts"}
    if "sglang" in scripts and any((Path(p) / "cli" / "serve.py").is_file() for p in sglang.__path__):
        points.append("sglang serve")
    return points


def inside_dump(release: Release) -> dict[str, Any]:
    from importlib.metadata import version

    _install_stubs(release.torch)
    entry_points = _entry_points()
    sglang_parser = _sglang_parser("sglang serve" if "sglang serve" in entry_points else "launch_server.py")
    stubbed = sorted(n for n in sys.modules if n.split(".")[0] in STUBBED_TOP_LEVEL)
    assert version("sglang") == release.version, (version("sglang"), release.version)
    tables: dict[str, Any] = {
        "sglang": {
            "package": "sglang",
            "version": version("sglang"),
            "parser": "sglang.srt.server_args.ServerArgs.add_cli_args",
            "entry_points": entry_points,
            "generated_by": "hack/sglang_flags.py (make sglang-flags)",
            "python": f"{sys.version_info.major}.{sys.version_info.minor}",
            "pins": list(release.pins),
            "torch_stub_version": release.torch,
            "stubbed_modules": stubbed,
            "not_executed": ["sglang/__init__.py"],
            **describe_parser(sglang_parser),
            "probes": [real_parse(sglang_parser, argv) for argv in SGLANG_PROBES],
        }
    }
    if release.router:
        router_parser = _router_parser()
        tables["router"] = {
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
    return tables


def inside_parse(release: Release, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    _install_stubs(release.torch)
    parsers: dict[str, argparse.ArgumentParser] = {}
    verdicts = []
    for r in requests:
        kind = r["parser"]
        if kind not in parsers:  # the router's import needs no stub, but only its venv has it
            parsers[kind] = _router_parser() if kind == "router" else _sglang_parser("sglang serve")
        verdicts.append(real_parse(parsers[kind], list(r["argv"]), router=kind == "router"))
    return verdicts


# --------------------------------------------------------------------------------------------
# Outside
# --------------------------------------------------------------------------------------------


def venv_ready(release: Release) -> bool:
    stamp = release.venv / ".ome-pins"
    return release.python.exists() and stamp.exists() and stamp.read_text() == "\n".join(release.pins)


def _build_venv(release: Release) -> None:
    # Built next to its final place and renamed into it, so a build that is interrupted, or one
    # that races another process's build, never leaves a half-installed venv that looks ready.
    # (Its bin/ scripts keep the staging path in their shebangs: only bin/python is ever run.)
    staging = release.venv.with_name(f"{release.venv.name}.building-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(staging)], check=True)
        subprocess.run(
            [str(staging / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", *release.pins],
            check=True,
        )
        (staging / ".ome-pins").write_text("\n".join(release.pins))
        if venv_ready(release):
            return  # another process finished first
        shutil.rmtree(release.venv, ignore_errors=True)
        staging.rename(release.venv)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_venvs(releases: tuple[Release, ...] = RELEASES) -> list[Path]:
    """Build the missing venvs (concurrently: the time goes to downloads and unpacking)."""
    missing = [r for r in releases if not venv_ready(r)]
    for r in missing:
        print(f"building the throwaway venv {r.venv} (sglang=={r.version}, no GPU packages)", file=sys.stderr)
    if missing:
        with ThreadPoolExecutor(max_workers=len(missing)) as pool:
            list(pool.map(_build_venv, missing))
    return [r.python for r in releases]


def _scrubbed_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "PIP_CERT", "SSL_CERT_FILE", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PYTHONHASHSEED"] = "0"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_inside(release: Release, mode: str, stdin: str = "") -> Any:
    ensure_venvs((release,))
    proc = subprocess.run(
        [str(release.python), str(Path(__file__).resolve()), "--inside", mode, "--release", release.version],
        input=stdin,
        capture_output=True,
        text=True,
        env=_scrubbed_env(),
        check=False,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"the real parser failed to load in {release.venv} (exit {proc.returncode})")
    return json.loads(proc.stdout)


def parse_requests(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The real parsers' verdicts on requests, each run in its release's venv, in request order."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        version = ROUTER_RELEASE.version if r["parser"] == "router" else str(r.get("version") or CURRENT.version)
        if version not in BY_VERSION:
            raise SystemExit(f"no release {version!r} here; known: {', '.join(BY_VERSION)}")
        groups.setdefault(version, []).append(i)
    ensure_venvs(tuple(BY_VERSION[v] for v in groups))
    verdicts: list[dict[str, Any]] = [{} for _ in requests]
    for version, indices in groups.items():
        answers = run_inside(BY_VERSION[version], "parse", json.dumps([requests[i] for i in indices]))
        for i, answer in zip(indices, answers, strict=True):
            verdicts[i] = {**answer, "version": version}
    return verdicts


def render(table: dict[str, Any]) -> str:
    return json.dumps(table, indent=1, sort_keys=False, ensure_ascii=False) + "\n"


def index_table(tables: dict[str, dict[str, Any]]) -> dict[str, Any]:
    versions = sorted(tables, key=version_key)
    return {
        "package": "sglang",
        "parser": "sglang.srt.server_args.ServerArgs.add_cli_args",
        "generated_by": "hack/sglang_flags.py (make sglang-flags)",
        "default": CURRENT.version,
        "versions": versions,
        "tables": {v: f"{OUT_DIR.name}/{v}.json" for v in versions},
    }


def generate() -> dict[Path, str]:
    """Every committed file this script owns, as text, from the real parsers."""
    ensure_venvs()
    dumps = {r.version: run_inside(r, "dump") for r in RELEASES}
    files: dict[Path, str] = {}
    for release in RELEASES:
        dump = dumps[release.version]
        for key, table in dump.items():
            if table["unclassified_types"]:
                print(
                    f"note: {key} {table['version']}: argparse types not classified in VALUE_KINDS: "
                    f"{table['unclassified_types']}",
                    file=sys.stderr,
                )
        files[release.out] = render(dump["sglang"])
        if release.router:
            files[OUT_ROUTER] = render(dump["router"])
    files[OUT_INDEX] = render(index_table({v: d["sglang"] for v, d in dumps.items()}))
    return files


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed tables differ")
    ap.add_argument("--parse", action="store_true", help="run the real parsers on JSON requests from stdin")
    ap.add_argument("--ensure-venv", action="store_true", help="only build the throwaway venvs that are missing")
    ap.add_argument(
        "--release", action="append", choices=list(BY_VERSION), help="with --ensure-venv: only this release's venv"
    )
    ap.add_argument("--inside", choices=["dump", "parse"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.inside:
        release = BY_VERSION[args.release[0]]
        if args.inside == "dump":
            json.dump(inside_dump(release), sys.stdout)
        else:
            json.dump(inside_parse(release, json.load(sys.stdin)), sys.stdout)
        return 0
    if args.ensure_venv:
        chosen = tuple(BY_VERSION[v] for v in args.release) if args.release else RELEASES
        for python in ensure_venvs(chosen):
            print(python)
        return 0
    if args.parse:
        json.dump(parse_requests(json.load(sys.stdin)), sys.stdout, indent=1)
        print()
        return 0

    files = generate()
    stale = sorted(p for p in OUT_DIR.glob("*.json") if p not in files) if OUT_DIR.is_dir() else []
    if args.check:
        drift = [p for p, text in files.items() if not p.exists() or p.read_text() != text] + stale
        if drift:
            names = ", ".join(str(p.relative_to(REPO)) for p in drift)
            print(f"drift: {names} differ from the real parsers; run `make sglang-flags`", file=sys.stderr)
            return 1
        print("tables match the real parsers")
        return 0
    OUT_DIR.mkdir(exist_ok=True)
    for path in stale:
        path.unlink()
        print(f"removed {path.relative_to(REPO)} (no such release in RELEASES)")
    for path, text in files.items():
        path.write_text(text)
        table = json.loads(text)
        what = f"{len(table['options'])} option strings" if "options" in table else f"versions {table['versions']}"
        print(
            f"wrote {path.relative_to(REPO)}: {table['package']} {table.get('version', '')} {what}".replace("  ", " ")
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
