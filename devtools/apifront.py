"""A fault-injecting front for the local kube-apiserver (the chaos campaign and reliability tests).

`ApiFront` listens on plain HTTP on loopback and forwards every request, byte for byte, to the
kube-apiserver over TLS; a client (the operator) is pointed at it with `write_kubeconfig()`. It
works at the HTTP/1.1 framing level (Content-Length and chunked bodies, streamed watch
responses), so any client library works through it unchanged. A test arms faults on it:

    front = ApiFront(cluster.kubeconfig).start()
    front.kill_after_write(3, lambda: op.proc.pid)   # SIGKILL the operator once its 3rd write is answered
    front.errors(429, retry_after=2, seconds=60)     # a brown-out
    front.refuse(None); ...; front.clear()           # an outage until cleared

Write numbers count from the moment a fault is armed. A client that sends its own Authorization
header is passed through with it (so RBAC is the client's own); one that sends none gets the
upstream kubeconfig's credentials. Counters: `requests` and `writes` forwarded, `rate()`,
`peak_rate()`, and `log()` with one entry per request.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import os
import random
import signal
import socket
import ssl
import struct
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devtools.procs import bind_free_port

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
HEAD_LIMIT = 1 << 20
PidSource = int | Callable[[], int]


class _Reset(Exception):
    """The client connection is to be reset (a dropped response, a refusal, a cut watch)."""


@dataclass
class _Faults:
    kill_at: int | None = None  # absolute write number
    kill_pid: PidSource | None = None
    kill_sig: int = signal.SIGKILL
    drop_at: int | None = None
    refuse_until: float | None = None  # monotonic deadline; math.inf when open-ended
    blackhole_until: float | None = None
    error_status: int | None = None
    error_fraction: float = 1.0
    error_retry_after: float | None = None
    error_until: float | None = None
    delay_seconds: float = 0.0
    delay_until: float | None = None
    stall_watches_until: float | None = None


def _active(until: float | None) -> bool:
    return until is not None and time.monotonic() < until


def _deadline(seconds: float | None) -> float:
    return float("inf") if seconds is None else time.monotonic() + seconds


@dataclass
class _Upstream:
    host: str
    port: int
    tls_with_creds: ssl.SSLContext
    tls_plain: ssl.SSLContext
    token: str | None
    tmp: list[Path] = field(default_factory=list)


def _load_upstream(kubeconfig: Path) -> _Upstream:
    cfg = yaml.safe_load(kubeconfig.read_text())
    ctx_name = cfg.get("current-context") or cfg["contexts"][0]["name"]
    context = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == context["cluster"])
    user = next((u.get("user") or {} for u in cfg.get("users", []) if u["name"] == context.get("user")), {})
    server = urllib.parse.urlsplit(cluster["server"])
    tmp: list[Path] = []

    def material(data_key: str, file_key: str, source: dict[str, Any]) -> str | None:
        if source.get(file_key):
            return str(source[file_key])
        if source.get(data_key):
            fd, name = tempfile.mkstemp(prefix="apifront-")
            os.write(fd, base64.b64decode(source[data_key]))
            os.close(fd)
            tmp.append(Path(name))
            return name
        return None

    ca = material("certificate-authority-data", "certificate-authority", cluster)

    def context_() -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=ca)
        if cluster.get("insecure-skip-tls-verify"):
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    plain, with_creds = context_(), context_()
    cert = material("client-certificate-data", "client-certificate", user)
    key = material("client-key-data", "client-key", user)
    if cert and key:
        with_creds.load_cert_chain(cert, key)
    return _Upstream(server.hostname or "127.0.0.1", server.port or 443, with_creds, plain, user.get("token"), tmp)


class _Conn:
    """One client connection and the upstream connection(s) it is paired with."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.upstream: dict[bool, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        self.watching = False

    def reset(self) -> None:
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()
        for _, up in self.upstream.values():
            up.transport.abort()
        self.upstream.clear()


class ApiFront:
    """Plain-HTTP proxy on 127.0.0.1 between a client (the operator) and the local kube-apiserver (TLS)."""

    def __init__(self, upstream_kubeconfig: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self._up = _load_upstream(Path(upstream_kubeconfig))
        self.host = host
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Refusing closes the listener; the port must stay ours until it listens again.
        self.port: int = bind_free_port(self._sock, host) if port == 0 else self._bind(port)
        self.url = f"http://{host}:{self.port}"
        self.requests = 0
        self.writes = 0
        self._lock = threading.Lock()
        self._faults = _Faults()
        self._log: list[dict[str, Any]] = []
        self._per_second: collections.Counter[int] = collections.Counter()
        self._t0 = time.monotonic()
        self._conns: set[_Conn] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="apifront", daemon=True)
        self._reopen: asyncio.TimerHandle | None = None
        self._listening = asyncio.Lock()
        self._reopen_failure: OSError | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> ApiFront:
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def shutdown() -> None:
            await self._close_listener()
            for conn in list(self._conns):
                conn.reset()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self._call(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        for path in self._up.tmp:
            path.unlink(missing_ok=True)

    def __enter__(self) -> ApiFront:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_kubeconfig(self, path: Path, token: str | None = None) -> Path:
        user: dict[str, Any] = {"token": token} if token else {}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "front", "cluster": {"server": self.url}}],
            "users": [{"name": "front-user", "user": user}],
            "contexts": [{"name": "front", "context": {"cluster": "front", "user": "front-user"}}],
            "current-context": "front",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def _bind(self, port: int) -> int:
        self._sock.bind((self.host, port))
        return port

    async def _listen(self) -> None:
        # Both the refusal's own end and clear() reopen: one at a time, or both would bind.
        async with self._listening:
            if self._server is not None:
                return
            if self._sock.fileno() < 0:  # closed by an earlier refusal: bind the same port again
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((self.host, self.port))
                except OSError:
                    sock.close()
                    raise
                self._sock = sock
            self._server = await asyncio.start_server(self._serve, sock=self._sock, limit=HEAD_LIMIT)

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    # -- faults ---------------------------------------------------------------------------------
    def kill_after_write(self, k: int, pid: PidSource, sig: int = signal.SIGKILL) -> None:
        with self._lock:
            self._faults.kill_at, self._faults.kill_pid, self._faults.kill_sig = self.writes + k, pid, sig

    def drop_response_of_write(self, k: int) -> None:
        with self._lock:
            self._faults.drop_at = self.writes + k

    def cut_watches(self) -> None:
        async def cut() -> None:
            for conn in list(self._conns):
                if conn.watching:
                    conn.reset()

        self._call(cut())

    def refuse(self, seconds: float | None) -> None:
        with self._lock:
            self._faults.refuse_until = _deadline(seconds)

        async def refuse() -> None:
            await self._close_listener()
            self._sock.close()
            for conn in list(self._conns):
                conn.reset()
            if self._reopen is not None:
                self._reopen.cancel()
                self._reopen = None
            if seconds is not None:
                self._reopen = self._loop.call_later(seconds, lambda: self._loop.create_task(self._end_refusal()))

        self._call(refuse())

    async def _end_refusal(self) -> None:
        with self._lock:
            if _active(self._faults.refuse_until):
                return
            self._faults.refuse_until = None
        try:
            await self._listen()
        except OSError as exc:  # said by clear(), which tries again: a timer has no caller to tell
            self._reopen_failure = exc

    def blackhole(self, seconds: float | None) -> None:
        with self._lock:
            self._faults.blackhole_until = _deadline(seconds)

    def errors(
        self, status: int, fraction: float = 1.0, retry_after: float | None = None, seconds: float | None = None
    ) -> None:
        with self._lock:
            f = self._faults
            f.error_status, f.error_fraction, f.error_retry_after = status, fraction, retry_after
            f.error_until = _deadline(seconds)

    def delay(self, seconds_per_response: float, seconds: float | None = None) -> None:
        with self._lock:
            self._faults.delay_seconds, self._faults.delay_until = seconds_per_response, _deadline(seconds)

    def clear(self) -> None:
        """End every fault; listening again if a refusal closed the listener (whether or not the
        refusal's own period already ended it)."""
        with self._lock:
            self._faults = _Faults()

        async def reopen() -> None:
            if self._reopen is not None:
                self._reopen.cancel()
                self._reopen = None
            try:
                await self._listen()
            except OSError as exc:
                raise RuntimeError(f"the front cannot listen on port {self.port} again: {exc}") from (
                    self._reopen_failure or exc
                )
            self._reopen_failure = None

        self._call(reopen())

    # -- counters -------------------------------------------------------------------------------
    def rate(self, window: float = 1.0) -> float:
        since = time.monotonic() - window
        with self._lock:
            n = sum(1 for entry in reversed(self._log) if entry["mono"] >= since)
        return n / window

    def peak_rate(self) -> float:
        with self._lock:
            return float(max(self._per_second.values(), default=0))

    def clear_counters(self) -> None:
        with self._lock:
            self._per_second.clear()
            self._log.clear()

    def log(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._log]

    # -- serving --------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(reader, writer)
        self._conns.add(conn)
        try:
            while await self._one_request(conn):
                pass
        except (_Reset, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ssl.SSLError):
            conn.reset()
        except OSError:
            conn.reset()
        except asyncio.CancelledError:
            conn.reset()  # stop(): nothing to report
        finally:
            self._conns.discard(conn)
            if not writer.transport.is_closing():
                writer.transport.abort()
            for _, up in conn.upstream.values():
                up.transport.abort()

    def stall_watches(self, seconds: float | None) -> None:
        """Watches go silent without closing: open streams deliver nothing and new watch requests
        are held unanswered, while every other request is served (a half-dead watch)."""
        with self._lock:
            self._faults.stall_watches_until = _deadline(seconds)

    async def _hold_while_blackholed(self, watch: bool = False) -> None:
        while True:
            with self._lock:
                holding = _active(self._faults.blackhole_until) or (watch and _active(self._faults.stall_watches_until))
            if not holding:
                return
            await asyncio.sleep(0.05)

    async def _one_request(self, conn: _Conn) -> bool:
        try:
            head = await conn.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return False  # the client closed between requests
        method, target, headers = _parse_request_head(head)
        body = await _read_body(conn.reader, headers)
        path = urllib.parse.urlsplit(target)
        query = urllib.parse.parse_qs(path.query)
        is_watch = query.get("watch", [""])[0].lower() in ("true", "1") or "/watch/" in path.path
        await self._hold_while_blackholed(is_watch)
        entry: dict[str, Any] = {"t": time.time(), "mono": time.monotonic(), "method": method, "path": target}
        entry["watch"] = is_watch
        with self._lock:
            f = self._faults
            refusing = _active(f.refuse_until)
            fake = (
                f.error_status
                if f.error_status is not None and _active(f.error_until) and random.random() < f.error_fraction
                else None
            )
            retry_after = f.error_retry_after
            delay = f.delay_seconds if _active(f.delay_until) else 0.0
        if refusing:
            raise _Reset
        if fake is not None:
            entry["status"] = fake
            entry["injected"] = True
            self._record(entry)
            await self._answer_error(conn, fake, retry_after, method)
            return True

        write_no = None
        with self._lock:
            self.requests += 1
            if method in WRITE_METHODS:
                self.writes += 1
                write_no = self.writes
        entry["write"] = write_no
        self._record(entry)
        request = _rewrite_head(method, target, headers, self._up, head) + body
        client_auth = "authorization" in headers
        reused = client_auth in conn.upstream
        try:
            up_reader, up_writer = await self._upstream_for(conn, client_auth)
            up_writer.write(request)
            await up_writer.drain()
            status_line, resp_headers, resp_head = await _read_response_head(up_reader)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            # An idle keep-alive connection the apiserver closed: it read nothing, so one retry
            # on a fresh connection cannot apply a write twice.
            if not reused or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                raise
            conn.upstream.pop(client_auth, None)
            up_reader, up_writer = await self._upstream_for(conn, client_auth)
            up_writer.write(request)
            await up_writer.drain()
            status_line, resp_headers, resp_head = await _read_response_head(up_reader)
        entry["status"] = status_line
        if is_watch and status_line == 200:
            conn.watching = True
        if delay:
            await asyncio.sleep(delay)
        await self._hold_while_blackholed(is_watch)
        with self._lock:
            drop = write_no is not None and write_no == self._faults.drop_at
            kill = write_no is not None and write_no == self._faults.kill_at
            if drop:
                self._faults.drop_at = None
            if kill:
                self._faults.kill_at = None
            kill_pid, kill_sig = self._faults.kill_pid, self._faults.kill_sig
        if drop:
            # The write is applied; read its answer from upstream so it completes, then reset.
            await _relay_body(up_reader, None, resp_headers, method, status_line, self._hold_while_blackholed)
            entry["dropped"] = True
            raise _Reset
        conn.writer.write(resp_head)

        async def hold() -> None:
            await self._hold_while_blackholed(is_watch)

        keep = await _relay_body(up_reader, conn.writer, resp_headers, method, status_line, hold)
        await conn.writer.drain()
        if kill and kill_pid is not None:
            pid = kill_pid() if callable(kill_pid) else kill_pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, kill_sig)
            entry["killed"] = pid
        conn.watching = False
        if not keep:
            conn.upstream.clear()
        client_wants_close = headers.get("connection", "").lower() == "close"
        return keep and not client_wants_close

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._log.append(entry)
            self._per_second[int(entry["mono"] - self._t0)] += 1

    async def _upstream_for(self, conn: _Conn, client_auth: bool) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        existing = conn.upstream.get(client_auth)
        if existing is not None and not existing[1].transport.is_closing():
            return existing
        tls = self._up.tls_plain if client_auth else self._up.tls_with_creds
        pair = await asyncio.wait_for(
            asyncio.open_connection(self._up.host, self._up.port, ssl=tls, limit=HEAD_LIMIT), timeout=10
        )
        conn.upstream[client_auth] = pair
        return pair

    async def _answer_error(self, conn: _Conn, status: int, retry_after: float | None, method: str) -> None:
        reason = {429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}.get(
            status, "Error"
        )
        body = json.dumps(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f"injected by the API front: {status}",
                "reason": "TooManyRequests" if status == 429 else "ServiceUnavailable",
                "code": status,
            }
        ).encode()
        lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", f"Content-Length: {len(body)}"]
        if retry_after is not None:
            lines.append(f"Retry-After: {max(1, round(retry_after))}")
        conn.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if method == "HEAD" else body))
        await conn.writer.drain()


# -- HTTP/1.1 framing --------------------------------------------------------------------------------
def _parse_headers(lines: list[bytes]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        if b":" in line:
            name, value = line.split(b":", 1)
            key = name.decode("latin-1").strip().lower()
            val = value.decode("latin-1").strip()
            headers[key] = f"{headers[key]}, {val}" if key in headers else val
    return headers


def _parse_request_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.split(b"\r\n")
    method, target, _ = lines[0].decode("latin-1").split(" ", 2)
    return method.upper(), target, _parse_headers(lines[1:])


def _rewrite_head(method: str, target: str, headers: dict[str, str], up: _Upstream, head: bytes) -> bytes:
    lines = head.split(b"\r\n")[1:]
    out = [f"{method} {target} HTTP/1.1".encode()]
    for line in lines:
        if not line:
            continue
        name = line.split(b":", 1)[0].strip().lower()
        if name == b"host":
            out.append(f"Host: {up.host}:{up.port}".encode())
        else:
            out.append(line)
    if "host" not in headers:
        out.append(f"Host: {up.host}:{up.port}".encode())
    if "authorization" not in headers and up.token:
        out.append(f"Authorization: Bearer {up.token}".encode())
    return b"\r\n".join(out) + b"\r\n\r\n"


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            parts.append(size_line)
            if size == 0:
                parts.append(await reader.readuntil(b"\r\n"))  # no trailers from kube clients
                return b"".join(parts)
            parts.append(await reader.readexactly(size + 2))
    length = int(headers.get("content-length", "0") or 0)
    return await reader.readexactly(length) if length else b""


async def _read_response_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    return status, _parse_headers(lines[1:]), head


async def _relay_body(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter | None,
    headers: dict[str, str],
    method: str,
    status: int,
    hold: Callable[[], Any],
) -> bool:
    """Copy one response body (to `writer`, or nowhere); True if the upstream connection stays usable."""

    async def send(data: bytes) -> None:
        if writer is not None:
            await hold()
            writer.write(data)
            await writer.drain()

    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return True
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                await send(size_line + await reader.readuntil(b"\r\n"))
                return headers.get("connection", "").lower() != "close"
            await send(size_line + await reader.readexactly(size + 2))
    if "content-length" in headers:
        remaining = int(headers["content-length"])
        while remaining:
            data = await reader.read(min(remaining, 1 << 16))
            if not data:
                raise ConnectionResetError("upstream closed mid-body")
            remaining -= len(data)
            await send(data)
        return headers.get("connection", "").lower() != "close"
    while data := await reader.read(1 << 16):
        await send(data)
    return False
