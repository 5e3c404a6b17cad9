"""Restarting the local cluster's kube-apiserver process in place (C3), with the same flags and port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from devtools.procs import iter_cmdlines, pdeathsig_preexec, start_ticks


def apiserver_pid(cluster_dir: Path) -> int:
    for pid, argv in iter_cmdlines():
        if argv and Path(argv[0]).name == "kube-apiserver" and any(str(cluster_dir) in a for a in argv):
            return pid
    raise RuntimeError(f"no kube-apiserver running for {cluster_dir}")


def restart_apiserver(cluster_dir: Path, ready: Callable[[], bool], timeout: float = 60) -> float:
    """SIGTERM the apiserver, start it again with the same command line; seconds until /readyz."""
    pid = apiserver_pid(cluster_dir)
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    cwd = os.readlink(f"/proc/{pid}/cwd")
    t0 = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    while start_ticks(pid) is not None and time.monotonic() - t0 < 30:  # gone, or a zombie of ours
        time.sleep(0.1)
    log = cluster_dir / "logs" / "kube-apiserver.log"
    with open(log, "ab") as out:
        subprocess.Popen(
            [a.decode() for a in argv],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=pdeathsig_preexec(),  # like the cluster's own: it dies with the campaign
        )
    while time.monotonic() - t0 < timeout:
        try:
            if ready():
                return time.monotonic() - t0
        except Exception:  # connection refused, 503 while it starts: keep polling
            pass
        time.sleep(0.2)
    raise TimeoutError(f"kube-apiserver not ready {timeout:.0f} s after restart")


def runner_alive(cluster_dir: Path) -> bool:
    return any("devtools.runner" in argv and str(cluster_dir) in argv for _, argv in iter_cmdlines() if len(argv) > 2)


def respawn_runner(cluster_dir: Path) -> None:
    """devtools.runner (the stand-in kubelets) exits when a request to the API server fails, so an
    apiserver restart takes it down; a real kubelet outlives one. Start it again, as the cluster does."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    with open(cluster_dir / "logs" / "runner.log", "ab") as out:
        subprocess.Popen(
            [sys.executable, "-m", "devtools.runner", "--cluster-dir", str(cluster_dir)],
            cwd=cluster_dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=pdeathsig_preexec(),
        )
