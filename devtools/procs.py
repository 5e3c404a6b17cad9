"""Process and port helpers for devtools.cluster: recognise our processes across pid reuse, find
them by their flags, and probe health endpoints."""

from __future__ import annotations

import ctypes
import http.client
import random
import signal
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1


PORT_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 10000
_handed_out: set[int] = set()


def bind_free_port(sock: socket.socket, host: str = "127.0.0.1") -> int:
    """Bind `sock` to a free port below the kernel's ephemeral range, and return it.

    A server we close and start again on the same port (the API server front's refusal, an API
    server restart) needs that port to stay free meanwhile. Ports of the ephemeral range are handed
    to outgoing connections: one such connection, or its TIME_WAIT, on our port makes the new bind
    fail with "address in use" (CI saw the front stay closed after a 120 s refusal). No outgoing
    connection takes a port below the range. A port is not handed out twice by this process, since
    `free_port` callers bind only later."""
    try:
        low = int(PORT_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    for _ in range(100 if low - LOWEST_PORT >= 1000 else 0):
        port = random.randrange(LOWEST_PORT, low)
        if port in _handed_out:
            continue
        try:
            sock.bind((host, port))
        except OSError:
            continue
        _handed_out.add(port)
        return port
    sock.bind((host, 0))
    return int(sock.getsockname()[1])


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, for a server started next."""
    with socket.socket() as s:
        return bind_free_port(s)


def start_ticks(pid: int) -> int | None:
    """Start time of a live, non-zombie process, to tell our process from a recycled pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


@dataclass
class Proc:
    name: str
    pid: int
    start_ticks: int

    def alive(self) -> bool:
        return start_ticks(self.pid) == self.start_ticks


def pdeathsig_preexec() -> Callable[[], None]:
    """A preexec_fn asking the kernel to SIGKILL the child when its parent dies.

    SIGKILL, not SIGTERM: an apiserver whose etcd got the same signal spends ~10 s shutting down,
    and the cluster is disposable anyway. libc is loaded here, in the parent: the child should do
    as little as possible between fork and exec.
    """
    prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    return preexec


def probe(url: str, ctx: ssl.SSLContext) -> bool:
    scheme, rest = url.split("://", 1)
    hostport, _, path = rest.partition("/")
    host, port = hostport.rsplit(":", 1)
    conn: http.client.HTTPConnection
    if scheme == "https":
        conn = http.client.HTTPSConnection(host, int(port), timeout=2, context=ctx)
    else:
        conn = http.client.HTTPConnection(host, int(port), timeout=2)
    try:
        conn.request("GET", "/" + path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def iter_cmdlines() -> Iterator[tuple[int, list[str]]]:
    """(pid, argv) of every live process that can be read."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        yield int(entry.name), args


def processes_with_arg(marker: str, names: Iterable[str]) -> list[Proc]:
    """Live processes whose program name is in `names` and one of whose arguments contains `marker`."""
    wanted = set(names)
    found = []
    for pid, args in iter_cmdlines():
        name = Path(args[0]).name
        ticks = start_ticks(pid)
        if name in wanted and ticks is not None and any(marker in a for a in args[1:]):
            found.append(Proc(name, pid, ticks))
    return found


def is_runner_of(pid: int, cluster_dir: Path) -> bool:
    """Whether pid is the `python -m devtools.runner --cluster-dir <cluster_dir>` of that cluster."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return "devtools.runner" in args and str(cluster_dir) in args
