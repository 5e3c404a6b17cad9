"""The seed walkthrough's two last commands, run verbatim against a local cluster (demo and tests).

    kubectl port-forward -n kimi-k2-instruct service/kimi-k2-instruct 8080:80
    curl -s -X POST http://localhost:8080/generate ... -d '{"text": "The future of AI is", ...}'

`kubectl` is the venv's, with KUBECONFIG naming the local cluster; the commands are otherwise the
seed's, character for character. Port 8080 on this machine is one per machine: a lock file keeps
two local runs (a demo, a test session) from fighting over it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from devtools.cluster import CACHE, kubectl_path
from devtools.procs import iter_cmdlines

PORT_FORWARD = "kubectl port-forward -n kimi-k2-instruct service/kimi-k2-instruct 8080:80"
CURL = (
    "curl -s -X POST http://localhost:8080/generate \\\n"
    "  -H 'Content-Type: application/json' \\\n"
    "  -H 'Authorization: Bearer None' \\\n"
    """  -d '{"text": "The future of AI is", "max_new_tokens": 50, "temperature": 0.7}'"""
)
LOCAL_PORT = 8080
BODY: dict[str, Any] = {"text": "The future of AI is", "max_new_tokens": 50, "temperature": 0.7}


def command_env(kubeconfig: Path) -> dict[str, str]:
    """The user's shell after `export KUBECONFIG=...` and the venv's bin on PATH."""
    return {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{kubectl_path().parent}:{os.environ['PATH']}"}


@contextlib.contextmanager
def port_8080(timeout: float = 600) -> Iterator[None]:
    """Hold this machine's port 8080 for one walkthrough at a time."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "walkthrough-port-8080.lock", "w") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError("port 8080 is held by another walkthrough (make demo-down?)") from None
                time.sleep(1)
        yield


class PortForward:
    """`kubectl port-forward ...` as a background process, until stop()."""

    def __init__(self, kubeconfig: Path, log_path: Path, command: str = PORT_FORWARD) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.command = command
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> PortForward:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log: IO[bytes] = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            shlex.split(self.command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=command_env(self.kubeconfig),
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while "Forwarding from 127.0.0.1:8080" not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"`{self.command}` did not start forwarding:\n{self.output()}")
            time.sleep(0.1)
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)


def run_curl(kubeconfig: Path, command: str = CURL, timeout: float = 90) -> str:
    """The seed's curl, through a shell exactly as written; its stdout (the reply body)."""
    proc = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, env=command_env(kubeconfig), timeout=timeout
    )
    return proc.stdout


def post(path: str, body: dict[str, Any], timeout: float = 60) -> tuple[int, bytes]:
    """The same request as curl's, from Python: the status code too."""
    request = urllib.request.Request(
        f"http://localhost:{LOCAL_PORT}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer None"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def get(path: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://localhost:{LOCAL_PORT}{path}", timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def served_by(reply: dict[str, Any]) -> str:
    """Which pods answered, from the stand-in's meta_info."""
    info = (reply.get("meta_info") or {}).get("stand_in") or {}
    return (
        f"decode pod {info.get('decode_pod')} after fetching bootstrap room {info.get('bootstrap_room')} "
        f"from prefill pod {info.get('prefill_pod')}"
    )


def standin_pids(cluster_dir: Path, namespace: str, pod: str) -> list[int]:
    """Stand-in engine processes of one pod of one cluster (its runner's dns file is in the argv)."""
    marker = str(cluster_dir / "runner" / "dns.json")
    return [
        pid
        for pid, args in iter_cmdlines()
        if "devtools.standin_engine" in args and marker in args and f"{namespace}/{pod}" in args
    ]
