"""Shared set-up for tests that run the operator (the helpers themselves live in devtools.operator)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devtools.cluster_testing import ClusterHandle
from devtools.operator import OperatorProcess

REPO = Path(__file__).resolve().parents[2]
SHARED_REFERENCE = REPO.parent / "shared" / "reference" / "ome"
GOLDEN_REFERENCE = REPO / "tests" / "golden" / "kimi-k2-reference" / "input"


def kjson(cluster: ClusterHandle, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


@contextlib.contextmanager
def running_operator(kubeconfig: Path, log_path: Path, *args: str) -> Iterator[OperatorProcess]:
    op = OperatorProcess(kubeconfig, log_path, "--resync-seconds", "20", *args).start()
    try:
        op.wait_ready()
        yield op
    finally:
        op.stop()


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}
