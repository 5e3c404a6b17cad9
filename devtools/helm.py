"""The helm binary that `make cluster-bins` builds, for the chart tests and the chaos campaign."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from devtools.cluster import BinariesMissing, find_bin_dir

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "ome-resources"
CRD_CHART = REPO / "charts" / "ome-crd"


@functools.cache
def helm_path() -> Path:
    try:
        return find_bin_dir() / "helm"
    except BinariesMissing as exc:
        # A chart test that silently skipped would hide a chart nobody rendered.
        raise AssertionError(str(exc)) from exc


def run_helm(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(helm_path()), *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
