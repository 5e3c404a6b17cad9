"""A missing download namespace: a start-up log line and a DownloadNamespaceMissing condition, no loop.

Its own module: the operator here must be the only one running (another, with the default
namespace, would create the Jobs this one cannot).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.operator import apply_crds, write_operator_kubeconfig

from .operator_env import condition, kjson, running_operator
from .test_status_conditions import apply, model_doc

pytestmark = pytest.mark.integration
MISSING_NS = "no-such-download-namespace"


def test_missing_download_namespace_is_a_condition_not_a_loop(cluster: ClusterHandle, tmp_path: Path) -> None:
    apply_crds(cluster)
    kubeconfig = write_operator_kubeconfig(cluster, tmp_path / "kubeconfig")
    log = tmp_path / "operator.log"
    with running_operator(kubeconfig, log, "--operator-namespace", MISSING_NS):
        apply(cluster, model_doc("status-nons", node="h200-003"))
        try:

            def missing() -> dict[str, Any] | None:
                cond = condition(kjson(cluster, "get", "clusterbasemodel", "status-nons"), "Downloaded")
                return cond if cond.get("reason") == "DownloadNamespaceMissing" else None

            cond = wait_for(missing, timeout=30, what="Downloaded=False DownloadNamespaceMissing")
            assert f'namespace "{MISSING_NS}" does not exist' in cond["message"]
            time.sleep(5)  # a few more resync-driven passes
        finally:
            cluster.kubectl("delete", "clusterbasemodel", "status-nons", "--ignore-not-found")
    text = log.read_text()
    assert f'namespace "{MISSING_NS}" does not exist' in text  # the start-up line
    assert "Traceback" not in text
