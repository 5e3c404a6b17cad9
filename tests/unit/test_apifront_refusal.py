"""The API server front's refusal: the listener is closed and must come back on the same port.

CI once saw the front stay closed after a 120 s refusal (test_liveness waited for a change that
could never reach the API server): the port came from the ephemeral range, an outgoing connection
could take it meanwhile, and the reopen's "address in use" was lost in a timer callback. These run
without a cluster: nothing is forwarded, only connections are made.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devtools.apifront import ApiFront
from devtools.procs import LOWEST_PORT, PORT_RANGE_FILE, free_port


@pytest.fixture
def front(tmp_path: Path) -> Iterator[ApiFront]:
    kubeconfig = tmp_path / "upstream.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "clusters": [
                    {"name": "c", "cluster": {"server": "https://127.0.0.1:9", "insecure-skip-tls-verify": True}}
                ],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    with ApiFront(kubeconfig) as running:
        yield running


def connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except ConnectionRefusedError:
        return False


def test_ports_for_servers_come_from_below_the_ephemeral_range() -> None:
    low = int(PORT_RANGE_FILE.read_text().split()[0])
    ports = {free_port() for _ in range(50)}
    assert len(ports) == 50  # never the same port twice to callers that bind later
    if low - LOWEST_PORT >= 1000:
        assert all(LOWEST_PORT <= port < low for port in ports), sorted(ports)


def test_the_front_listens_on_a_port_no_outgoing_connection_can_take(front: ApiFront) -> None:
    low = int(PORT_RANGE_FILE.read_text().split()[0])
    if low - LOWEST_PORT >= 1000:
        assert front.port < low


def test_a_timed_refusal_ends_listening_and_clear_after_it_keeps_listening(front: ApiFront) -> None:
    assert connects(front.port)
    front.refuse(0.5)
    assert not connects(front.port)
    time.sleep(1.0)
    assert connects(front.port)  # the refusal's own end opened it
    front.clear()  # and clear() after it neither fails nor binds twice
    assert connects(front.port)
    front.refuse(None)
    assert not connects(front.port)
    front.clear()
    assert connects(front.port)


def test_a_port_taken_while_refusing_is_reported_instead_of_the_front_staying_closed(front: ApiFront) -> None:
    front.refuse(0.5)
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", front.port))  # as an outgoing connection's source port would
    try:
        time.sleep(1.0)  # the refusal's end fails to listen: nobody to tell yet
        with pytest.raises(RuntimeError, match=f"cannot listen on port {front.port} again"):
            front.clear()
    finally:
        squatter.close()
    front.clear()  # the port is free again: the front listens
    assert connects(front.port)
