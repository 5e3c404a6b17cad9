"""A stand-in SGLang server for the local cluster's engine pods: it is not SGLang and says so.

    python -m devtools.standin_engine --pod NS/NAME --pod-ip IP --image IMAGE --dns FILE --gpus 8 \\
        -- python3 -m sglang.launch_server ARGS...

devtools.runner starts one for every running SGLang engine container, with the container's command
line (`$(VAR)` expanded as the kubelet does). What it checks, so that what the operator renders has
to connect for a request to flow:

- the command line, with the flag table of the SGLang release the image names (any known release
  for an untagged or `dev` image); refused: argparse's message and exit status 2;
- `--tp-size` against `--nnodes` and the GPUs the pod was given;
- multi-node groups (`--nnodes N --node-rank R --dist-init-addr HOST:PORT`): rank 0 listens on PORT,
  ranks 1..N-1 connect; HOST is resolved like cluster DNS (devtools.standin_args.resolve); the
  leader is healthy only when every rank joined exactly once; a rank that leaves breaks the group:
  the others stop answering at once and exit when a watchdog fires, as ranks blocked in an NCCL
  collective would (so the member that really died is the one whose container fails first);
- PD: a prefill leader serves a bootstrap endpoint on `--disaggregation-bootstrap-port` (8998) and
  answers a request only once a decode server has fetched its room; a decode leader answers only
  after fetching, from the request's `bootstrap_host:bootstrap_port` (its own bootstrap port when
  that is null, as SGLang 0.5.23's scheduler does), the entry the prefill side registered for the
  request's `bootstrap_room`.

Rank 0 serves SGLang's HTTP API on `--host/--port`, bound to the pod's IP (a wildcard host means
the pod's address; nothing here binds 0.0.0.0); ranks >= 1 serve only /health, like SGLang's
dummy health server on non-zero ranks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path

from aiohttp import web

from devtools.standin_api import bootstrap_app, build_api
from devtools.standin_args import WILDCARDS, CommandRefused, Engine, parse_engine_command, say

# ------------------------------------------------------------------------------------------------
# Multi-node rendezvous on --dist-init-addr
# ------------------------------------------------------------------------------------------------


def _split_addr(addr: str) -> tuple[str, int]:
    host, _, port = str(addr).rpartition(":")
    return host.strip("[]"), int(port)


async def _resolve_retrying(engine: Engine, host: str) -> str:
    waited = 0.0
    while True:
        ip = engine.resolve(host)
        if ip is not None:
            return ip
        if waited % 10 < 0.5:
            say(f"dist-init host {host} does not resolve (yet): waiting, as the resolver would retry")
        await asyncio.sleep(0.5)
        waited += 0.5


async def lead_group(engine: Engine) -> None:
    engine.joined[0] = engine.pod
    if engine.nnodes == 1:
        return
    host, port = _split_addr(engine.args["--dist-init-addr"])
    ip = await _resolve_retrying(engine, host)
    if ip != engine.pod_ip:
        engine.fail(
            f"RuntimeError: rank 0 cannot listen on --dist-init-addr {host}:{port}: it resolves to {ip}, "
            f"not to this pod ({engine.pod_ip}) (Cannot assign requested address)"
        )

    async def on_join(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hello = json.loads((await reader.readline()) or b"{}")
        rank, nnodes, peer = int(hello.get("rank", -1)), int(hello.get("nnodes", -1)), str(hello.get("pod"))
        problem = None
        if nnodes != engine.nnodes:
            problem = f"group size mismatch: rank 0 has --nnodes {engine.nnodes}, {peer} has {nnodes}"
        elif not 1 <= rank < engine.nnodes:
            problem = f"rank {rank} of {peer} is outside 1..{engine.nnodes - 1}"
        elif rank in engine.joined:
            problem = f"rank {rank} joined twice ({engine.joined[rank]}, then {peer})"
        writer.write((json.dumps({"ok": problem is None, "error": problem}) + "\n").encode())
        await writer.drain()
        if problem:
            say(f"refused a member: {problem}")
            writer.close()
            return
        engine.joined[rank] = peer
        say(f"rank {rank} joined from {peer}: {len(engine.joined)}/{engine.nnodes} ranks")
        await reader.read()  # the member holds the connection until it dies
        engine.break_group(f"rank {rank} ({peer}) left the group")

    server = await asyncio.start_server(on_join, engine.pod_ip, port)
    say(f"rank 0 listening for {engine.nnodes - 1} more ranks on {engine.pod_ip}:{port} ({host})")
    await server.start_serving()


async def join_group(engine: Engine) -> None:
    host, port = _split_addr(engine.args["--dist-init-addr"])
    while True:
        ip = await _resolve_retrying(engine, host)
        try:
            reader, writer = await asyncio.open_connection(ip, port)
            break
        except OSError:
            await asyncio.sleep(0.5)  # torch's TCPStore client retries until the leader listens
    hello = {"rank": engine.rank, "nnodes": engine.nnodes, "pod": engine.pod}
    writer.write((json.dumps(hello) + "\n").encode())
    await writer.drain()
    reply = json.loads((await reader.readline()) or b'{"ok": false, "error": "connection closed"}')
    if not reply.get("ok"):
        engine.fail(f"RuntimeError: rank {engine.rank} could not join {host}:{port}: {reply.get('error')}")
    engine.joined.update({r: "" for r in range(engine.nnodes)})  # a member only knows it is in
    say(f"rank {engine.rank} joined the group at {host}:{port} ({ip})")

    async def hold(keep: asyncio.StreamWriter = writer) -> None:
        # `keep` holds the writer: a collected StreamWriter closes the connection, which the leader
        # would take for this rank leaving.
        await reader.read()
        engine.break_group(f"rank 0 at {host}:{port} went away")

    engine.tasks.add(asyncio.get_running_loop().create_task(hold()))


# ------------------------------------------------------------------------------------------------
# Start-up
# ------------------------------------------------------------------------------------------------


def _bind_host(engine: Engine) -> str:
    host = str(engine.args["--host"])
    if host in WILDCARDS or host == engine.pod_ip:
        return engine.pod_ip
    if host in ("127.0.0.1", "localhost"):
        # The pod's own loopback: modelled by the pod's address, the only one the pod has here.
        return engine.pod_ip
    engine.fail(f"OSError: [Errno 99] error while attempting to bind on address ({host!r}, {engine.args['--port']})")
    raise AssertionError("unreachable")


async def serve(engine: Engine) -> None:
    bind = _bind_host(engine)
    runners: list[web.AppRunner] = []

    async def start(app: web.Application, port: int) -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, bind, port).start()
        runners.append(runner)

    if engine.rank == 0:
        await lead_group(engine)
        if engine.args.mode == "prefill":
            port = int(engine.args["--disaggregation-bootstrap-port"])
            await start(bootstrap_app(engine), port)
            say(f"bootstrap server on {bind}:{port}")
        await start(build_api(engine), int(engine.args["--port"]))
    else:
        await join_group(engine)
        await start(build_api(engine, health_only=True), int(engine.args["--port"]))
    say(f"serving on http://{bind}:{engine.args['--port']} ({engine.role})")
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.standin_engine", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pod", required=True, help="NAMESPACE/NAME")
    parser.add_argument("--pod-ip", required=True)
    parser.add_argument("--image", default=None)
    parser.add_argument("--dns", required=True, type=Path)
    parser.add_argument("--gpus", type=int, default=0)
    parser.add_argument("--group", default="", help="the headless Service (subdomain) the pod is in")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    command = ns.command[1:] if ns.command[:1] == ["--"] else ns.command
    namespace, _, pod = ns.pod.partition("/")
    say(f"not SGLang: a stand-in for pod {ns.pod} (image {ns.image}); it checks what it is given and serves words")
    try:
        args = parse_engine_command(ns.image, command)
    except CommandRefused as exc:
        print(f"usage: launch_server.py [-h] --model-path MODEL_PATH ...\nlaunch_server.py: {exc}", file=sys.stderr)
        return 2
    engine = Engine(pod, namespace, ns.pod_ip, ns.dns, args, ns.group or pod)
    say(f"command line accepted by the flag table of SGLang {args.version}; role {engine.role}")
    tp, nnodes = int(args["--tp-size"]), engine.nnodes
    if tp % nnodes or tp // nnodes > ns.gpus:
        print(
            f"RuntimeError: --tp-size {tp} over --nnodes {nnodes} needs {tp / nnodes:g} GPUs per node; "
            f"this pod has {ns.gpus}",
            file=sys.stderr,
        )
        return 1
    if nnodes > 1 and not args["--dist-init-addr"]:
        print("ValueError: --nnodes > 1 needs --dist-init-addr", file=sys.stderr)
        return 1
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(engine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
