"""Shared pytest options and the session control plane.

`--update-golden` rewrites golden files instead of comparing.

The `cluster` fixture: one real local control plane for the whole session (integration tests and
the downloader tests that need an API server):

    def test_something(cluster: ClusterHandle) -> None:
        with cluster.api_client() as api: ...
        cluster.kubectl("get", "nodes")

It starts on first use (16 H200-shaped kwok nodes) and stops at the end, also when tests fail.
OME_TEST_KUBECONFIG=/path/to/kubeconfig reuses a running cluster (e.g. from `make cluster-up`) and
leaves it running.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.cluster import BinariesMissing, LocalCluster, find_bin_dir, reap_orphans
from devtools.cluster_testing import ClusterHandle

SESSION_PREFIX = "pytest-"

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="rewrite golden files from the current output")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterHandle]:
    reuse = os.environ.get("OME_TEST_KUBECONFIG")
    if reuse:
        kubeconfig = Path(reuse)
        if not kubeconfig.is_file():
            pytest.fail(f"OME_TEST_KUBECONFIG={reuse} does not exist")
        audit = kubeconfig.parent / "logs" / "audit.jsonl"
        yield ClusterHandle(kubeconfig=kubeconfig, audit_log=audit if audit.exists() else None, owned=False)
        return

    try:
        bin_dir = find_bin_dir()
    except BinariesMissing as exc:
        # `make test` builds them first; anything else silently skipping would hide a broken setup.
        pytest.fail(str(exc), pytrace=False)
    reap_orphans(SESSION_PREFIX)
    # A per-session name lets two engineers' test runs share the machine; die_with_parent makes a
    # killed pytest take its control plane with it.
    local = LocalCluster(f"{SESSION_PREFIX}{os.getpid()}", nodes=16, bin_dir=bin_dir, die_with_parent=True)
    local.start()
    try:
        yield ClusterHandle(kubeconfig=local.kubeconfig, audit_log=local.audit_log, owned=True)
    finally:
        local.stop()
