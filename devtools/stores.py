"""Real object-store servers on loopback for the storage-scheme tests, and a fault-injecting front.

- SeaweedFS (`weed server -s3`) serves s3:// and oci:// (Oracle's S3-compatible API is S3);
- fake-gcs-server serves gs:// (the JSON API);
- Azurite (`azurite-blob`) serves az:// with the emulator's well-known account.
Binaries are built from source by hack/build-stores.sh into ~/.cache/ome-operator/stores/ on first
use, so only the tests that need a server pay for its build. Every server binds 127.0.0.1 and is
stopped with its process group.

`FaultFront` sits between the downloader and a server: it forwards requests unchanged (Host
included, since SigV4 signs it), counts the body bytes it relays per object, and on request stalls
a response after N bytes (a process to be killed mid-file) or flips one byte (corruption in
transit, which the store's checksum must catch).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from devtools.procs import free_port
from ome_operator.downloader.stores.azure import sign_shared_key
from ome_operator.downloader.stores.s3 import S3Credentials, sign_v4

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-stores.sh"
# Azurite's documented development account (a public constant, not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def store_binary(name: str) -> Path:
    """The server's executable, built (or installed) on first use."""
    out = subprocess.run([str(BUILD_SCRIPT), name], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}; log {log}:\n{log.read_text()[-3000:]}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"{url}: not answering after {timeout:g}s; log {log}:\n{log.read_text()[-3000:]}")


@dataclass
class Server:
    name: str
    endpoint: str
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _spawn(args: list[str], workdir: Path, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log


def _serve(args: list[str], workdir: Path, name: str, endpoint: str, ready_url: str) -> Iterator[Server]:
    """Start a store server, wait until `ready_url` answers, yield it, and stop it afterwards."""
    proc, log = _spawn(args, workdir, name)
    server = Server(name, endpoint, proc)
    try:
        _wait_http(ready_url, proc, log)
        yield server
    finally:
        server.stop()


@contextmanager
def seaweedfs(workdir: Path, access_key: str, secret_key: str) -> Iterator[Server]:
    weed = store_binary("seaweedfs")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "tests",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    }
                ]
            }
        )
    )
    ports = {k: free_port() for k in ("master", "volume", "filer", "s3", "mg", "vg", "fg", "sg")}
    (workdir / "data").mkdir(exist_ok=True)
    args = [
        str(weed), "server", "-s3", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={workdir / 'data'}",
        f"-master.port={ports['master']}", f"-master.port.grpc={ports['mg']}",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['vg']}",
        f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['fg']}",
        f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['sg']}", f"-s3.config={config}",
        "-volume.max=4", "-master.volumeSizeLimitMB=64",
    ]  # fmt: skip
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    yield from _serve(args, workdir, "seaweedfs", endpoint, endpoint + "/")


@contextmanager
def fake_gcs(workdir: Path) -> Iterator[Server]:
    binary = store_binary("fake-gcs")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [
        str(binary), "-scheme=http", "-host=127.0.0.1", f"-port={port}", "-backend=filesystem",
        f"-filesystem-root={workdir / 'data'}", f"-public-host=127.0.0.1:{port}", "-log-level=warn",
    ]  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    yield from _serve(args, workdir, "fake-gcs-server", endpoint, endpoint + "/storage/v1/b")


@contextmanager
def azurite(workdir: Path) -> Iterator[Server]:
    binary = store_binary("azurite")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [
        str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(workdir / "data"),
        "--silent", "--disableTelemetry", "--skipApiVersionCheck",
    ]  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    yield from _serve(args, workdir, "azurite", f"{endpoint}/{AZURITE_ACCOUNT}", endpoint + "/")


# --- uploading: what a user's tooling does before the model is referenced ---------------------


def _check(response: httpx.Response, what: str) -> httpx.Response:
    if response.status_code >= 300:
        raise RuntimeError(f"{what}: HTTP {response.status_code}: {response.text[:500]}")
    return response


class S3Uploader:
    def __init__(self, endpoint: str, creds: S3Credentials, region: str = "us-east-1") -> None:
        self.endpoint, self.creds, self.region = endpoint, creds, region

    def _send(self, method: str, path: str, body: bytes = b"", query: str = "") -> httpx.Response:
        url = f"{self.endpoint}{urllib.parse.quote(path)}" + (f"?{query}" if query else "")
        headers = sign_v4(method, url, {}, self.creds, self.region, payload_sha256=hashlib.sha256(body).hexdigest())
        return _check(httpx.request(method, url, headers=headers, content=body, timeout=60), f"{method} {path}")

    def create_bucket(self, bucket: str) -> None:
        self._send("PUT", f"/{bucket}")

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self._send("PUT", f"/{bucket}/{key}", data)

    def put_multipart(self, bucket: str, key: str, data: bytes, part_size: int) -> str:
        """A multipart upload (as `aws s3 cp` does for large files); returns the object's ETag."""
        path = f"/{bucket}/{key}"
        created = self._send("POST", path, query="uploads=")
        upload_id = created.text.split("<UploadId>")[1].split("</UploadId>")[0]
        parts = []
        for n, start in enumerate(range(0, len(data), part_size), start=1):
            q = f"partNumber={n}&uploadId={urllib.parse.quote(upload_id, safe='')}"
            resp = self._send("PUT", path, data[start : start + part_size], query=q)
            parts.append((n, resp.headers["etag"]))
        body = (
            "<CompleteMultipartUpload>"
            + "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>" for n, etag in parts)
            + "</CompleteMultipartUpload>"
        )
        done = self._send("POST", path, body.encode(), query=f"uploadId={urllib.parse.quote(upload_id, safe='')}")
        return done.text.split("<ETag>")[1].split("</ETag>")[0].strip('"').replace("&#34;", "")


class GcsUploader:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def create_bucket(self, bucket: str) -> None:
        _check(httpx.post(f"{self.endpoint}/storage/v1/b", json={"name": bucket}, timeout=30), f"bucket {bucket}")

    def put(self, bucket: str, key: str, data: bytes) -> None:
        url = f"{self.endpoint}/upload/storage/v1/b/{bucket}/o"
        _check(httpx.post(url, params={"uploadType": "media", "name": key}, content=data, timeout=60), f"PUT {key}")


class AzureUploader:
    def __init__(self, endpoint: str, account: str = AZURITE_ACCOUNT, key: str = AZURITE_KEY) -> None:
        self.endpoint, self.account, self.key = endpoint, account, key

    def _send(
        self, method: str, path: str, body: bytes = b"", query: str = "", headers: dict[str, str] | None = None
    ) -> None:
        url = f"{self.endpoint}{urllib.parse.quote(path)}" + (f"?{query}" if query else "")
        h = {"content-length": str(len(body)), **(headers or {})}
        signed = sign_shared_key(method, url, h, self.account, self.key)
        _check(httpx.request(method, url, headers=signed, content=body, timeout=60), f"{method} {path}")

    def create_container(self, container: str) -> None:
        self._send("PUT", f"/{container}", query="restype=container")

    def put(self, container: str, blob: str, data: bytes, content_md5: bytes | None = None) -> None:
        md5 = base64.b64encode(content_md5 or hashlib.md5(data, usedforsecurity=False).digest()).decode()
        headers = {"x-ms-blob-type": "BlockBlob", "x-ms-blob-content-md5": md5}
        self._send("PUT", f"/{container}/{blob}", data, headers=headers)


# --- the fault front ---------------------------------------------------------------------------


@dataclass
class Faults:
    stall_after: dict[str, int] = field(default_factory=dict)  # object name suffix -> bytes, then silence
    corrupt: set[str] = field(default_factory=set)  # object name suffixes whose bytes are altered
    unavailable: dict[str, int] = field(default_factory=dict)  # object name suffix -> GETs answered 503
    sent: dict[str, int] = field(default_factory=dict)  # object name suffix -> body bytes relayed
    ranges: list[tuple[str, str]] = field(default_factory=list)  # (path, Range header) of every GET


class FaultFront:
    def __init__(self, upstream: str) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream_origin = f"{parts.scheme}://{parts.netloc}"
        self.upstream_path = parts.path.rstrip("/")
        self.faults = Faults()
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.upstream_path}"

    def start(self) -> FaultFront:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def _match(self, path: str, names: Any) -> str | None:
        plain = urllib.parse.unquote(path.split("?")[0])
        return next(
            (
                n
                for n in names
                if plain.endswith(n) or f"/o/{n}" in plain or plain.endswith(urllib.parse.quote(n, safe=""))
            ),
            None,
        )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._relay("GET")

            def do_HEAD(self) -> None:
                self._relay("HEAD")

            def _relay(self, method: str) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "accept-encoding")}
                url = front.upstream_origin + self.path
                with front._lock:
                    front.faults.ranges.append(
                        (self.path, self.headers.get("range") or self.headers.get("x-ms-range") or "")
                    )
                    busy = front._match(self.path, list(front.faults.unavailable)) if method == "GET" else None
                    if busy and front.faults.unavailable[busy] > 0:
                        front.faults.unavailable[busy] -= 1
                    else:
                        busy = None
                if busy:
                    self.send_response(503)
                    self.send_header("retry-after", "1")
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                with httpx.Client(timeout=60) as client, client.stream(method, url, headers=headers) as up:
                    self.send_response(up.status_code)
                    for k, v in up.headers.items():
                        if k.lower() not in ("transfer-encoding", "connection", "content-encoding"):
                            self.send_header(k, v)
                    self.send_header("connection", "close")
                    self.end_headers()
                    if method == "HEAD":
                        return
                    name = front._match(
                        self.path, list(front.faults.stall_after) + list(front.faults.corrupt) + list(front.faults.sent)
                    )
                    stall = front.faults.stall_after.get(name) if name else None
                    corrupt = name in front.faults.corrupt if name else False
                    relayed = 0
                    for chunk in up.iter_raw():
                        if stall is not None and relayed + len(chunk) >= stall:
                            self.wfile.write(chunk[: stall - relayed])
                            self.wfile.flush()
                            front._count(name, stall - relayed)
                            front._release.wait()  # silence until the test kills the client
                            return
                        if corrupt and relayed == 0 and chunk:
                            chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                        self.wfile.write(chunk)
                        relayed += len(chunk)
                        if name:
                            front._count(name, len(chunk))
                self.close_connection = True

        return Handler

    def _count(self, name: str | None, n: int) -> None:
        if name:
            with self._lock:
                self.faults.sent[name] = self.faults.sent.get(name, 0) + n
