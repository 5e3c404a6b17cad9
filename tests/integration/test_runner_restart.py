"""The runner outlives an API server restart: it keeps going while the server is away, and when the
server is back it runs what is created afterwards (a real download Job's pod).

A private one-node cluster: its kube-apiserver is SIGKILLed and started again with the same command
line (etcd keeps the data), as a control-plane restart does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.cluster import LocalCluster
from devtools.cluster_testing import wait_for
from ome_operator.api import ClusterBaseModel
from ome_operator.kube.client import Kube, load_api_client
from ome_operator.render.context import Settings
from ome_operator.render.download import render_model

pytestmark = pytest.mark.integration

MODEL = {
    "apiVersion": "ome.io/v1beta1",
    "kind": "ClusterBaseModel",
    "metadata": {"name": "after-restart", "uid": "4f1c0c8e-0000-4000-8000-0000000000aa"},
    "spec": {"storage": {"storageUri": "hf://moonshotai/Kimi-K2-Instruct", "path": "/raid/models/after-restart"}},
}


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie is gone too
    except (OSError, IndexError):
        return False


def test_the_runner_survives_an_api_server_restart() -> None:
    local = LocalCluster(f"runner-restart-{os.getpid()}", nodes=1, die_with_parent=True)
    local.start()
    restarted: subprocess.Popen[bytes] | None = None
    try:
        state = local._read_state()
        assert state is not None
        api = next(p for p in state.procs if p.name == "kube-apiserver")
        runner = next(p for p in state.procs if p.name == "runner")
        argv = [a.decode() for a in Path(f"/proc/{api.pid}/cmdline").read_bytes().split(b"\0") if a]
        os.kill(api.pid, signal.SIGKILL)
        wait_for(lambda: not _alive(api.pid), timeout=20, what="the API server gone")
        log_path = local.component_log("runner")
        wait_for(lambda: "API server unreachable" in log_path.read_text(), timeout=30, what="the runner noticing")
        time.sleep(3)  # several failing passes
        assert runner.alive(), "the runner exited while the API server was away"

        with local.component_log("kube-apiserver").open("ab") as out:
            restarted = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        kubectl = [str(Path(sys.executable).parent / "kubectl"), f"--kubeconfig={local.kubeconfig}"]

        def healthy() -> bool:
            return (
                subprocess.run([*kubectl, "get", "--raw", "/livez"], capture_output=True, check=False).returncode == 0
            )

        wait_for(healthy, timeout=90, what="the restarted API server")
        wait_for(lambda: "API server reachable again" in log_path.read_text(), timeout=30, what="the runner resuming")
        assert runner.alive()

        # Something created after the restart runs: a real download Job (owner reference dropped:
        # the model is not stored, and garbage collection would remove children of a missing owner).
        api_client = load_api_client(str(local.kubeconfig))
        kube = Kube(api_client)
        objects = render_model(ClusterBaseModel.model_validate(MODEL), ["h200-000"], Settings())
        subprocess.run([*kubectl, "create", "namespace", "ome"], check=False, capture_output=True)
        for obj in objects:
            obj["metadata"].pop("ownerReferences", None)
            kube.apply(obj)
        job = next(o for o in objects if o["kind"] == "Job")["metadata"]["name"]

        def succeeded() -> bool:
            got = kube.get("Job", job, "ome", fresh=True)
            return bool(got and (got.get("status") or {}).get("succeeded") == 1)

        wait_for(succeeded, timeout=120, what="the download Job created after the restart to succeed")
    finally:
        if restarted is not None and restarted.poll() is None:
            os.killpg(restarted.pid, signal.SIGKILL)
            restarted.wait(timeout=10)
        local.stop()
