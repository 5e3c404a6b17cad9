"""Fixtures for the downloader tests: the olah hub (one per session), generated model repositories,
the Range-capable front, a fake Kubernetes API, and a helper that runs `ome-operator download`."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Before huggingface_hub is first imported: no telemetry or "agent registry" calls, no writes to ~.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from devtools.fixtures import FixtureRepo, build_repo
from devtools.hub import Hub
from devtools.hub_front import HubFront
from tests.downloader.servers import FakeKubeApi

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with Hub(tmp_path_factory.mktemp("hub")) as running:
        yield running


@pytest.fixture(scope="session")
def tiny_repo(hub: Hub) -> FixtureRepo:
    """A sharded DeepSeek-V3-shaped model (three safetensors shards and an index), never modified."""
    return build_repo(hub.mirrors, "ome-fixtures/tiny-kimi", seed=1)


@pytest.fixture
def make_repo(hub: Hub, request: pytest.FixtureRequest) -> Any:
    """Build a repository private to one test (tests that corrupt or extend a repository)."""
    counter = iter(range(1000))

    def make(name: str | None = None, **kwargs: Any) -> FixtureRepo:
        """A new repository, or with `name` a new history of that one (the old commits are gone)."""
        base = request.node.name.replace("[", "-").replace("]", "")[:60].lower()
        return build_repo(hub.mirrors, f"ome-tests/{base}-{name or next(counter)}", **kwargs)

    return make


@pytest.fixture
def front(hub: Hub, tiny_repo: FixtureRepo) -> Iterator[HubFront]:
    server = HubFront(hub.endpoint, [tiny_repo]).start()
    yield server
    server.stop()


@pytest.fixture
def kube_api() -> Iterator[FakeKubeApi]:
    api = FakeKubeApi(token="sa-token-for-progress", allowed={("ome", "dl-tiny-node-1")}).start()
    api.configmaps[("ome", "dl-tiny-node-1")] = {"metadata": {"name": "dl-tiny-node-1", "namespace": "ome"}}
    yield api
    api.stop()


@dataclass
class Outcome:
    code: int
    log: str
    termination: dict[str, Any] | None
    termination_text: str


def run_download(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    endpoint: str,
    uri: str,
    *args: str,
    token: str | None = None,
) -> Outcome:
    """Run `ome-operator download` in this process and capture its log and termination message."""
    from ome_operator.cli import main

    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    if token is None:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    else:
        monkeypatch.setenv("HF_TOKEN", token)
    term = tmp_path / f"termination-{len(list(tmp_path.glob('termination-*')))}.json"
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    try:
        code = main(["download", uri, "--termination-log", str(term), "--progress-interval", "0.2", *args])
    finally:
        root = logging.getLogger()
        for handler in list(root.handlers):
            if getattr(handler, "stream", None) is stream:
                root.removeHandler(handler)
    text = term.read_text() if term.exists() else ""
    return Outcome(code, stream.getvalue(), json.loads(text) if text else None, text)


def run_download_process(
    endpoint: str, uri: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The same command in a child process (for tests that kill it, or capture every byte it prints)."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "KUBECONFIG")}
    full_env.update({"HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_TELEMETRY": "1", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "ome_operator.cli", "download", uri, *args],
        env=full_env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
