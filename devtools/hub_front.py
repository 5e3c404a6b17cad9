"""A Range-capable, fault-injecting front for the local hub (tests and the download benchmark).

`HubFront` stands in front of olah: hub API calls (`/api/...`) are proxied to olah unchanged, and
file downloads (`/<org>/<repo>/resolve/<rev>/<path>`) are served from the same fixture files
olah serves, but with what olah lacks: HTTP Range support (olah ignores Range and buffers whole
objects), and faults a test can switch on (429 with Retry-After, a stalled body, a server that
ignores Range, an error body that echoes the request's Authorization header, bytes that do not
match the listing, 429/503 for a number of requests, a connection cut mid-body, and a capped egress
rate shared by all downloads, as a real hub's link is). It answers HEAD
with the headers huggingface_hub expects (ETag/X-Linked-Etag, X-Repo-Commit, sizes), so hub
clients other than ours work against it too. It counts the body bytes it sends.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devtools.fixtures import FixtureRepo

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


@dataclass
class Faults:
    rate_limit: dict[str, tuple[int, str]] = field(default_factory=dict)  # path -> (times, Retry-After)
    stall_after: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (bytes sent first, times)
    ignore_range: bool = False
    api_error_echo_auth: bool = False  # the revision API answers 500 quoting the Authorization header
    corrupt: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (byte offset flipped, times)
    corrupt_varying: dict[str, int] = field(default_factory=dict)  # path -> times, a different byte each
    busy: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # path -> (status, times, Retry-After)
    cut_after: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (bytes sent first, times)
    # Bytes per second for all file bodies together (a hub's egress link); 0 means unlimited.
    egress_limit: float = 0.0


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    status: int
    at: float
    authorization: str | None


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-request (the SIGKILL cases) resets its connection: expected here.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class HubFront:
    def __init__(self, upstream: str, repos: list[FixtureRepo]) -> None:
        self.upstream = upstream.rstrip("/")
        self.repos = {r.repo_id: r for r in repos}
        self.faults = Faults()
        self.requests: list[Request] = []
        self.bytes_sent: dict[str, int] = {}
        self.release = threading.Event()  # lets stalled responses finish at shutdown
        self._lock = threading.Lock()
        self._egress_free_at = 0.0
        self._server = _QuietServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> HubFront:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def resolve_requests(self, path: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if "/resolve/" in r.path and (path is None or r.path.endswith("/" + path))]

    def total_sent(self) -> int:
        with self._lock:
            return sum(self.bytes_sent.values())

    def _record(self, req: Request) -> None:
        with self._lock:
            self.requests.append(req)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self.do_GET(head=True)

            def do_GET(self, head: bool = False) -> None:
                parts = self.path.split("?")[0].split("/")
                if len(parts) > 5 and parts[3] == "resolve":
                    repo_id, rel = f"{parts[1]}/{parts[2]}", "/".join(parts[5:])
                    front._serve_file(self, repo_id, urllib.parse.unquote(rel), head)
                else:
                    front._proxy(self)

        return Handler

    def _serve_file(self, h: BaseHTTPRequestHandler, repo_id: str, rel: str, head: bool) -> None:
        auth = h.headers.get("authorization")
        rng = h.headers.get("range")
        now = time.monotonic()
        repo = self.repos.get(repo_id)
        f = repo.files.get(rel) if repo else None
        if f is None:
            self._send_plain(h, 404, b"not found")
            self._record(Request(h.command, h.path, rng, 404, now, auth))
            return
        with self._lock:
            times, retry_after = self.faults.rate_limit.get(rel, (0, ""))
            if times:
                self.faults.rate_limit[rel] = (times - 1, retry_after)
            busy_status, busy_times, busy_after = self.faults.busy.get(rel, (0, 0, ""))
            if busy_times:
                self.faults.busy[rel] = (busy_status, busy_times - 1, busy_after)
        if times or busy_times:
            status_now, after = (429, retry_after) if times else (busy_status, busy_after)
            self._send_plain(h, status_now, b"busy", {"retry-after": after} if after else {})
            self._record(Request(h.command, h.path, rng, status_now, now, auth))
            return
        start = 0
        if rng and not self.faults.ignore_range and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[len("bytes=") : -1])
        status = 206 if start else 200
        headers = {
            "content-length": str(f.size - start),
            "accept-ranges": "bytes",
            "etag": f'"{f.sha256 if f.lfs else f.git_sha1}"',
            "x-repo-commit": repo.commit if repo else "",
        }
        if f.lfs:
            headers["x-linked-etag"] = f'"{f.sha256}"'
            headers["x-linked-size"] = str(f.size)
        if start:
            headers["content-range"] = f"bytes {start}-{f.size - 1}/{f.size}"
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        self._record(Request(h.command, h.path, rng, status, now, auth))  # before the body: it may stall
        sent = 0
        if not head:
            with self._lock:
                stall_at, stall_times = self.faults.stall_after.get(rel, (None, 0))
                if stall_times:
                    self.faults.stall_after[rel] = (stall_at, stall_times - 1)  # type: ignore[assignment]
                else:
                    stall_at = None
                flip_at, flip_times = self.faults.corrupt.get(rel, (-1, 0))
                if flip_times:
                    self.faults.corrupt[rel] = (flip_at, flip_times - 1)
                else:
                    flip_at = -1
                varying = self.faults.corrupt_varying.get(rel, 0)
                if varying:
                    self.faults.corrupt_varying[rel] = varying - 1
                    flip_at = 1000 + varying
                cut_at, cut_times = self.faults.cut_after.get(rel, (-1, 0))
                if cut_times:
                    self.faults.cut_after[rel] = (cut_at, cut_times - 1)
                else:
                    cut_at = -1
            with f.content_path.open("rb") as src:
                src.seek(start)
                try:
                    while chunk := src.read(1 << 20):
                        offset = start + sent
                        if offset <= flip_at < offset + len(chunk):
                            flipped = bytearray(chunk)
                            flipped[flip_at - offset] ^= 0x01
                            chunk = bytes(flipped)
                        if cut_at >= 0 and sent + len(chunk) > cut_at:
                            h.wfile.write(chunk[: max(0, cut_at - sent)])
                            h.wfile.flush()
                            sent += max(0, cut_at - sent)
                            # An abrupt close: the client sees the body end short of content-length.
                            h.connection.shutdown(socket.SHUT_RDWR)
                            h.close_connection = True
                            break
                        self._throttle(len(chunk))
                        if stall_at is not None and sent + len(chunk) > stall_at:
                            chunk = chunk[: max(0, stall_at - sent)]
                            h.wfile.write(chunk)
                            h.wfile.flush()
                            sent += len(chunk)
                            self.release.wait(60)
                            h.close_connection = True
                            break
                        h.wfile.write(chunk)
                        sent += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    h.close_connection = True
        with self._lock:
            self.bytes_sent[rel] = self.bytes_sent.get(rel, 0) + sent

    def _throttle(self, n: int) -> None:
        """Hold the sender until the shared egress budget allows `n` more bytes."""
        if self.faults.egress_limit <= 0:
            return
        with self._lock:
            now = time.monotonic()
            self._egress_free_at = max(self._egress_free_at, now) + n / self.faults.egress_limit
            wait = self._egress_free_at - now - n / self.faults.egress_limit
        if wait > 0:
            time.sleep(wait)

    def _proxy(self, h: BaseHTTPRequestHandler) -> None:
        auth = h.headers.get("authorization")
        now = time.monotonic()
        if self.faults.api_error_echo_auth and "/revision/" in h.path:
            body = json.dumps({"error": f"internal error while checking credentials {auth}"}).encode()
            self._send_plain(h, 500, body, {"content-type": "application/json"})
            self._record(Request(h.command, h.path, None, 500, now, auth))
            return
        req = urllib.request.Request(self.upstream + h.path, method=h.command)
        for k in ("authorization", "accept", "user-agent"):
            if h.headers.get(k):
                req.add_header(k, h.headers[k])
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, headers, body = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as err:
            status, headers, body = err.code, err.headers, err.read()
        h.send_response(status)
        for k, v in headers.items():
            if k.lower() not in HOP_BY_HOP:
                h.send_header(k, v)
        h.send_header("content-length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)
        self._record(Request(h.command, h.path, None, status, now, auth))

    @staticmethod
    def _send_plain(h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("content-length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)
