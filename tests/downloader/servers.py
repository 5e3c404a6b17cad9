"""A fake Kubernetes API for the downloader tests (the hub front lives in devtools/hub_front.py).

`FakeKubeApi` answers PATCH on ConfigMaps like the API server would for a ServiceAccount bound to
a Role with `resourceNames`: only the named ConfigMaps, only with the right token.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class FakeKubeApi:
    """ConfigMaps the test creates; PATCH (merge) allowed only on `allowed` names with `token`."""

    def __init__(self, token: str, allowed: set[tuple[str, str]]) -> None:
        self.token = token
        self.allowed = allowed
        self.configmaps: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def server(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeKubeApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "test",
                    "clusters": [{"name": "c", "cluster": {"server": self.server}}],
                    "users": [{"name": "u", "user": {"token": self.token}}],
                    "contexts": [{"name": "test", "context": {"cluster": "c", "user": "u"}}],
                }
            )
        )
        return path

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_PATCH(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with api._lock:
                    api.requests.append(("PATCH", self.path, dict(self.headers.items()), body))
                parts = self.path.split("/")  # /api/v1/namespaces/<ns>/configmaps/<name>
                key = (parts[4], parts[6]) if len(parts) == 7 and parts[5] == "configmaps" else None
                if self.headers.get("authorization") != f"Bearer {api.token}":
                    return self._reply(401, {"kind": "Status", "code": 401})
                if key is None or key not in api.allowed:
                    return self._reply(403, {"kind": "Status", "code": 403, "reason": "Forbidden"})
                if self.headers.get("content-type") != "application/merge-patch+json":
                    return self._reply(415, {"kind": "Status", "code": 415})
                with api._lock:
                    cm = api.configmaps.get(key)
                    if cm is None:
                        return self._reply(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                    cm.setdefault("data", {}).update(json.loads(body)["data"])
                    snapshot = json.loads(json.dumps(cm))
                self._reply(200, snapshot)

        return Handler
