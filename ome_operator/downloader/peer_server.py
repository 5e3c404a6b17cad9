"""The file server in each download Job: this node's verified files, to bearers of its token."""

from __future__ import annotations

import secrets
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class PeerServer:
    """Serves this node's verified files (GET/HEAD with Range) to bearers of `token`."""

    def __init__(self, dest: Path, commit: str, address: str, port: int) -> None:
        self.dest, self.commit = dest, commit
        self.token = secrets.token_urlsafe(24)
        self.served: set[str] = set()
        self.bytes_served = 0
        self.requests = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((address, port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="peer-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = str(self._server.server_address[0]), int(self._server.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"

    def start(self) -> PeerServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def offer(self, path: str) -> None:
        with self._lock:
            self.served.add(path)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self.do_GET(head=True)

            def do_GET(self, head: bool = False) -> None:
                server._serve(self, head)

        return Handler

    def _serve(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        prefix = f"/v1/{self.commit}/"
        if not secrets.compare_digest(h.headers.get("authorization", ""), f"Bearer {self.token}"):
            return _plain(h, 401, "missing or wrong peer token")
        rel = urllib.parse.unquote(h.path.split("?")[0][len(prefix) :]) if h.path.startswith(prefix) else ""
        with self._lock:
            offered = rel in self.served
        if not offered:
            return _plain(h, 404, "not verified here")
        path = self.dest / rel
        try:
            src = path.open("rb")
        except OSError:
            return _plain(h, 404, "gone")
        with src:
            size = path.stat().st_size
            start = 0
            rng = h.headers.get("range") or ""
            if rng.startswith("bytes=") and rng.endswith("-") and rng[6:-1].isdigit():
                start = min(int(rng[6:-1]), size)
            h.send_response(206 if start else 200)
            h.send_header("content-length", str(size - start))
            h.send_header("accept-ranges", "bytes")
            if start:
                h.send_header("content-range", f"bytes {start}-{size - 1}/{size}")
            h.end_headers()
            if head:
                return
            with self._lock:
                self.requests += 1
            h.wfile.flush()
            try:
                sent = h.connection.sendfile(src, start, size - start)
            except (BrokenPipeError, ConnectionResetError):
                h.close_connection = True
                return
            with self._lock:
                self.bytes_served += sent


def _plain(h: BaseHTTPRequestHandler, status: int, text: str) -> None:
    body = text.encode()
    h.send_response(status)
    h.send_header("content-length", str(len(body)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)
