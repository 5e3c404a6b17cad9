"""An informer whose watch requests are never answered, against a real HTTP server on loopback
that answers every list at once (the half-dead watch of issue 11's C3): the informer keeps the
store current from lists, and it never holds the gate's probe without a verdict."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client

from ome_operator.kube.client import configure_transport
from ome_operator.kube.informer import Informer, Scope, Throttled
from ome_operator.kube.reach import Gate


class Server:
    """Lists answer with `self.items`; watches are held until the server stops. Throttling, it
    answers every request with 429 and `Retry-After: 3` instead."""

    def __init__(self, throttle: bool = False) -> None:
        self.items: list[dict[str, Any]] = []
        self.lists = 0
        self.watches = 0
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if throttle:
                    self.send_response(429)
                    self.send_header("Retry-After", "3")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if "watch=true" in self.path:
                    server.watches += 1
                    server.stopping.wait()  # never answered
                    return
                server.lists += 1
                body = json.dumps(
                    {"kind": "ServiceList", "metadata": {"resourceVersion": "9"}, "items": server.items}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def api(self) -> client.ApiClient:
        # The operator's transport: no hidden urllib3 re-sends that would count as the informer's.
        config = configure_transport(client.Configuration(host=f"http://127.0.0.1:{self.http.server_address[1]}"))
        return client.ApiClient(config)

    def stop(self) -> None:
        self.stopping.set()
        self.http.shutdown()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.stop()


def service(name: str, rv: int) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": str(rv)}}


def test_unanswered_watches_turn_into_lists_that_keep_the_store_current(server: Server) -> None:
    events: list[tuple[str, str]] = []
    informer = Informer(
        server.api(), Scope("Service"), lambda t, o: events.append((t, o["metadata"]["name"])), answer_timeout=0.5
    )
    informer.thread.start()
    try:
        assert informer.synced.wait(5)
        server.items = [service("a", 10)]
        deadline = time.monotonic() + 10
        while ("ADDED", "a") not in events and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ("ADDED", "a") in events, events
        assert server.watches >= 1 and server.lists >= 2
    finally:
        informer.stop()


def test_an_unanswered_watch_during_an_outage_ends_the_probe(server: Server) -> None:
    gate = Gate(announce=False)
    gate.failed("connection refused")  # an outage: the next caller through is the probe
    informer = Informer(server.api(), Scope("Service"), lambda t, o: None, gate=gate, answer_timeout=0.5)
    informer.resource_version = "5"  # listed before the outage: it resumes with a watch
    informer.thread.start()
    try:
        deadline = time.monotonic() + 5
        while server.watches == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.watches == 1  # the informer's watch is the probe, and it is never answered
        # Its silence is the probe's failure: after the backoff the gate lets the next probe out (the
        # informer's own next watch), instead of every caller waiting for a verdict that never comes.
        deadline = time.monotonic() + 15
        while server.watches < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.watches >= 2, "the probe never ended"
    finally:
        informer.stop()


def test_a_throttled_watch_reaches_the_gate_with_its_retry_after() -> None:
    """A 429 with Retry-After on a watch (a GET, which urllib3 would count as a retry) is the
    server's answer, not a transport failure: the gate waits what the server asked."""
    server = Server(throttle=True)
    try:
        informer = Informer(server.api(), Scope("Service"), lambda t, o: None, gate=Gate(announce=False))
        with pytest.raises(Throttled) as raised:
            informer._get([("watch", "true")], (2.0, 2.0))
        assert raised.value.retry_after == 3.0
    finally:
        server.stop()
