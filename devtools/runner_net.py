"""The runner's network side: the cluster DNS the stand-ins resolve, and the kubelet-port relay."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from devtools.router import container_env, set_flag

Obj = dict[str, Any]
REPO = Path(__file__).resolve().parents[1]
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def compute_dns_records(pods: list[Obj], services: list[Obj]) -> dict[str, str]:
    """`<hostname>.<subdomain>.<namespace>.svc.cluster.local` -> pod IP, for the pods a headless
    Service of that name selects (Ready ones, or all with publishNotReadyAddresses)."""
    headless = {
        (s["metadata"]["namespace"], s["metadata"]["name"]): s["spec"]
        for s in services
        if s["spec"].get("clusterIP") == "None" and s["spec"].get("selector")
    }
    records = {}
    for pod in pods:
        spec, meta, status = pod["spec"], pod["metadata"], pod.get("status") or {}
        service = headless.get((meta["namespace"], spec.get("subdomain")))
        if not spec.get("hostname") or service is None or not status.get("podIP") or meta.get("deletionTimestamp"):
            continue
        labels = meta.get("labels") or {}
        if any(labels.get(k) != v for k, v in service["selector"].items()):
            continue
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
        if ready or service.get("publishNotReadyAddresses"):
            fqdn = f"{spec['hostname']}.{spec['subdomain']}.{meta['namespace']}.svc.cluster.local"
            records[fqdn] = status["podIP"]
    return dict(sorted(records.items()))


async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        writer.close()
        return

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        with contextlib.suppress(OSError, RuntimeError):
            dst.close()

    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def router_argv(argv: list[str], pod_ip: str) -> list[str]:
    """The router's command line run by this interpreter, its listeners on the pod's IP."""
    words = list(argv)
    if "sglang_router.launch_router" in words:
        words = [sys.executable, "-m", *words[words.index("sglang_router.launch_router") :]]
    else:  # smg launch ...: run as a module, since sglang-router installs a `smg` script of its own
        words = [sys.executable, "-m", "smg", *words[words.index("launch") :]]
    # Both would otherwise put their metrics listener on 0.0.0.0:29000.
    metrics = {"--prometheus-host": pod_ip, "--prometheus-port": "29000"}
    host = words[words.index("--host") + 1] if "--host" in words else "127.0.0.1"
    if host in WILDCARD_HOSTS or host == "127.0.0.1":  # the pod's addresses: here, its IP
        words = set_flag(words, "--host", pod_ip)
    for flag, value in metrics.items():
        words = set_flag(words, flag, value)
    return words


def engine_launch(pod: Obj, container: Obj, argv: list[str], dns_file: Path) -> tuple[list[str], dict[str, str]]:
    """The stand-in SGLang engine (devtools.standin_engine) wrapped around the pod's command line."""
    pod_ip = str(pod["status"]["podIP"])
    gpus = (container.get("resources") or {}).get("limits", {}).get("nvidia.com/gpu", 0)
    meta = pod["metadata"]
    env = {
        **container_env(pod, container),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
    }
    wrapper = [
        sys.executable,
        "-m",
        "devtools.standin_engine",
        "--pod",
        f"{meta['namespace']}/{meta['name']}",
        "--pod-ip",
        pod_ip,
        "--image",
        str(container.get("image") or ""),
        "--dns",
        str(dns_file),
        "--gpus",
        str(gpus),
        "--group",
        str(pod["spec"].get("subdomain") or ""),
    ]
    return [*wrapper, "--", *argv], env
