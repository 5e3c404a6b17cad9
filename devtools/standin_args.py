"""What a stand-in SGLang engine needs before it serves: its command line checked and read with the
flag tables of the SGLang release its image names, the cluster's DNS as the runner publishes it, and
the deterministic words it answers with.

Nothing here pretends to be a model. Every reply names the pod, group and role that produced it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ome_operator.render.engine_args import (
    REFUSALS,
    FlagTable,
    OptionSpec,
    accepting_versions,
    check_engine_command,
    find_command,
    load_table,
)

# SGLang's defaults for the options the stand-in acts on (sglang.srt.server_args.ServerArgs), by
# flag: the argparse dest of a flag differs between releases (tensor_parallel_size, tp_size).
DEFAULTS: dict[str, Any] = {
    "--host": "127.0.0.1",
    "--port": 30000,
    "--nnodes": 1,
    "--node-rank": 0,
    "--dist-init-addr": None,
    "--disaggregation-mode": "null",
    "--disaggregation-bootstrap-port": 8998,
    "--served-model-name": None,
    "--model-path": None,
    "--tp-size": 1,
}
WILDCARDS = frozenset({"0.0.0.0", "::", ""})
CLUSTER_DOMAIN = "cluster.local"
# Far shorter than NCCL's (minutes), so a broken group fails while a test watches; long enough
# that the member that really died is the one whose container fails first.
WATCHDOG_SECONDS = 20.0


class CommandRefused(Exception):
    """What SGLang's argparse would print before exiting with status 2."""


@dataclass(frozen=True)
class EngineArgs:
    version: str  # the SGLang release whose table accepted the command line
    values: Mapping[str, Any]

    def __getitem__(self, flag: str) -> Any:
        return self.values.get(flag, DEFAULTS.get(flag))

    @property
    def mode(self) -> str:
        return str(self["--disaggregation-mode"] or "null")

    @property
    def model_name(self) -> str:
        return str(self["--served-model-name"] or self["--model-path"] or "default")


def _resolve_option(table: FlagTable, word: str) -> OptionSpec | None:
    if word in table.options:
        return table.options[word]
    if table.allow_abbrev:
        matches = {table.options[o].dest: table.options[o] for o in table.options if o.startswith(word)}
        if len(matches) == 1:
            return next(iter(matches.values()))
    return None


def _convert(spec: OptionSpec, value: str) -> Any:
    if spec.value_kind == "int":
        return int(value)
    if spec.value_kind == "float":
        return float(value)
    return value


def _read(table: FlagTable, args: Sequence[str]) -> dict[str, Any]:
    """The values argparse would store, for a command line the same table already accepted, under
    each option string of the flag that set them."""
    values: dict[str, Any] = {}
    i = 0
    while i < len(args):
        word = args[i]
        i += 1
        if not word.startswith("--"):
            continue
        flag, eq, inline = word.partition("=")
        spec = _resolve_option(table, flag)
        if spec is None:
            continue
        names = (spec.option, *spec.aliases)
        if spec.nargs == 0:
            values.update(dict.fromkeys(names, spec.action != "store_false"))
            continue
        taken: list[str] = [inline] if eq else []
        if not eq:
            limit = 1 if spec.nargs in (None, "?") else (spec.nargs if isinstance(spec.nargs, int) else len(args))
            while i < len(args) and len(taken) < limit and not args[i].startswith("--"):
                taken.append(args[i])
                i += 1
        converted = [_convert(spec, v) for v in taken]
        values.update(dict.fromkeys(names, converted[0] if spec.nargs in (None, "?") and converted else converted))
    return values


def parse_engine_command(image: str | None, argv: Sequence[str]) -> EngineArgs:
    """Check argv (command + args, `$(VAR)` already expanded) as SGLang would, then read it.

    The image picks the release; an untagged or `dev` image is accepted when one known release
    accepts the whole command line, as a real image of some release would be.
    """
    command = find_command(argv)
    if command is None or command.parser != "sglang":
        raise CommandRefused("error: no `-m sglang.launch_server` in the command line")
    versions = accepting_versions(image, argv)
    if not versions:
        refusals = [f for f in check_engine_command(image, argv) if f.kind in REFUSALS]
        raise CommandRefused("error: " + "; ".join(f.message for f in refusals))
    version = versions[-1]
    return EngineArgs(version, _read(load_table("sglang", version), command.args))


def say(text: str) -> None:
    print(f"[stand-in engine] {text}", flush=True)


@dataclass
class Engine:
    pod: str
    namespace: str
    pod_ip: str
    dns: Path
    args: EngineArgs
    group: str
    joined: dict[int, str] = field(default_factory=dict)  # rank -> pod that joined as it
    rooms: dict[int, dict[str, Any]] = field(default_factory=dict)  # prefill: bootstrap rooms
    fetched: dict[int, asyncio.Event] = field(default_factory=dict)
    requests: int = 0
    broken: str | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)  # referenced, so none is collected
    started: float = field(default_factory=time.time)

    @property
    def nnodes(self) -> int:
        return int(self.args["--nnodes"])

    @property
    def rank(self) -> int:
        return int(self.args["--node-rank"])

    @property
    def role(self) -> str:
        mode = {"prefill": "prefill", "decode": "decode"}.get(self.args.mode, "regular")
        return f"{mode} rank {self.rank}/{self.nnodes}"

    def healthy(self) -> bool:
        return self.broken is None and len(self.joined) == self.nnodes

    def break_group(self, why: str) -> None:
        """A member is gone: like ranks blocked in an NCCL collective, stop answering now, and exit
        when the watchdog fires (the container then fails and the operator restarts the group)."""
        if self.broken is None:
            self.broken = why
            say(f"group broken ({why}); exiting in {WATCHDOG_SECONDS:.0f} s, as NCCL's watchdog would")
            asyncio.get_running_loop().call_later(WATCHDOG_SECONDS, self.fail, f"RuntimeError: NCCL watchdog: {why}")

    def resolve(self, host: str) -> str | None:
        return resolve(host, self.namespace, self.dns)

    def fail(self, message: str) -> None:
        # SGLang's processes die on such errors and the container exits; so does this one.
        print(message, file=sys.stderr, flush=True)
        os._exit(1)  # from inside the event loop: SystemExit there would only end one task


# ------------------------------------------------------------------------------------------------
# Cluster DNS, as the runner publishes it
# ------------------------------------------------------------------------------------------------

_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")


def resolve(host: str, namespace: str, dns_file: Path) -> str | None:
    """An address for `host` the way a pod's resolver would find it with cluster DNS: an IP literal as
    is; otherwise the name and its search-list expansions (`<ns>.svc.cluster.local`,
    `svc.cluster.local`, `cluster.local`) looked up in the records the runner writes, which hold
    `<hostname>.<subdomain>.<namespace>.svc.cluster.local` only for pods a headless Service of that
    name selects. None: NXDOMAIN (for now: the runner rewrites the file as pods and Services change)."""
    if _IPV4.match(host):
        return host
    try:
        records: dict[str, str] = json.loads(dns_file.read_text())["records"]
    except (OSError, ValueError, KeyError):
        return None
    name = host.rstrip(".")
    candidates = (
        [name]
        if host.endswith(".")
        else [name]
        + [
            f"{name}.{suffix}"
            for suffix in (f"{namespace}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN)
        ]
    )
    for candidate in candidates:
        if candidate in records:
            return records[candidate]
    return None


# ------------------------------------------------------------------------------------------------
# The words it answers with
# ------------------------------------------------------------------------------------------------

_FILLER = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliett",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
]


def disclaimer(pod: str, group: str, role: str) -> list[str]:
    return f"[stand-in SGLang engine, not a model: pod {pod}, group {group}, role {role}]".split()


def words(prompt: str, count: int, banner: Sequence[str]) -> list[str]:
    """Exactly `count` words: the banner first (cut short if count is smaller), then filler chosen by
    a hash of the prompt, so the same request always gets the same answer."""
    out = list(banner[:count])
    seed = hashlib.sha256(prompt.encode()).digest()
    while len(out) < count:
        i = len(out)
        out.append(_FILLER[(seed[i % len(seed)] + i) % len(_FILLER)])
    return out


def prompt_tokens(text: str) -> int:
    return len(text.split())


def prompt_of(body: Mapping[str, Any]) -> str:
    """The text a request asks about: /generate's `text`, completions' `prompt`, chat `messages`."""
    if isinstance(body.get("text"), str):
        return str(body["text"])
    if isinstance(body.get("prompt"), str):
        return str(body["prompt"])
    parts = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, str):
            parts.append(content)
    return "\n".join(parts)
