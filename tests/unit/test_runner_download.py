"""How the local cluster's runner maps a download Job pod onto this machine (devtools.runner_download):
volumes into the node's directory, container paths rewritten, the hub, secrets, the termination
message; on the Job the operator really renders."""

from __future__ import annotations

import base64
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from devtools.runner_download import (
    NO_HUB,
    MountError,
    download_launch,
    is_download_container,
    node_host_path,
    resolve_hub,
    resolve_mounts,
    rewrite_path,
    termination_path,
)
from devtools.runner_pod import ContainerRun, pod_status
from ome_operator.api import ClusterBaseModel
from ome_operator.render.context import Settings
from ome_operator.render.download import render_model

MODEL = {
    "apiVersion": "ome.io/v1beta1",
    "kind": "ClusterBaseModel",
    "metadata": {"name": "kimi", "uid": "4f1c0c8e-0000-4000-8000-000000000001"},
    "spec": {
        "storage": {
            "storageUri": "hf://moonshotai/Kimi-K2-Instruct",
            "path": "/raid/models/moonshotai/Kimi-K2-Instruct",
            "key": "hf-token",
        }
    },
}


def job_pod(settings: Settings | None = None) -> dict[str, Any]:
    model = ClusterBaseModel.model_validate(MODEL)
    objects = render_model(model, ["h200-003"], settings or Settings())
    job = next(o for o in objects if o["kind"] == "Job")
    spec = dict(job["spec"]["template"]["spec"], nodeName="h200-003")
    return {
        "metadata": {"name": "kimi-dl-x", "namespace": "ome", "uid": "1234"},
        "spec": spec,
        "status": {"podIP": "127.1.0.5"},
    }


def test_the_rendered_download_container_is_recognised() -> None:
    pod = job_pod()
    assert is_download_container(pod["spec"]["containers"][0])
    assert not is_download_container(pod["spec"]["initContainers"][0])
    assert is_download_container({"command": ["/usr/local/bin/ome-operator"], "args": ["download", "hf://a/b"]})
    assert not is_download_container({"command": ["python3", "-m", "sglang.launch_server"], "args": ["download"]})


def test_host_paths_land_in_the_nodes_directory(tmp_path: Path) -> None:
    assert node_host_path(tmp_path, "h200-003", "/raid/models/x") == tmp_path / "nodes/h200-003/root/raid/models/x"
    for bad in ("raid/x", "/raid/../etc", "/raid//x"):
        with pytest.raises(MountError):
            node_host_path(tmp_path, "h200-003", bad)
    with pytest.raises(MountError):
        node_host_path(tmp_path, "../h200-003", "/raid")


def test_mounts_are_created_and_paths_rewritten_longest_first(tmp_path: Path) -> None:
    pod = job_pod()
    mounts = resolve_mounts(pod, pod["spec"]["containers"][0], tmp_path / "c", tmp_path / "w")
    models = tmp_path / "c/nodes/h200-003/root/raid/models/moonshotai/Kimi-K2-Instruct"
    assert models.is_dir()  # the root's subPath, created as the kubelet does
    root = tmp_path / "c/nodes/h200-003/root/raid/models"
    assert rewrite_path("/raid/models", mounts) == str(root)  # --confine-root names the node's root
    assert (tmp_path / "c/nodes/h200-003/root/mnt/models").is_dir()  # every local node has the default roots
    assert (tmp_path / "w/volumes/tmp").is_dir()  # emptyDir
    prefix = "/raid/models/moonshotai/Kimi-K2-Instruct"
    assert rewrite_path(prefix, mounts) == str(models)
    assert rewrite_path(prefix + "/config.json", mounts) == str(models / "config.json")
    assert rewrite_path(f"--dest={prefix}", mounts) == f"--dest={models}"
    # A prefix of a name is not a path: this is under the root, not under the model's directory.
    assert rewrite_path(prefix + "-other", mounts) == str(root / "moonshotai/Kimi-K2-Instruct-other")
    assert rewrite_path("/raid/modelsx", mounts) == "/raid/modelsx"
    assert rewrite_path("/tmp/x", mounts) == str(tmp_path / "w/volumes/tmp/x")


def test_a_missing_directory_volume_keeps_the_pod_from_starting(tmp_path: Path) -> None:
    pod = job_pod()
    pod["spec"]["volumes"][0]["hostPath"] = {"path": "/data/absent", "type": "Directory"}
    with pytest.raises(MountError, match="is not a directory on node h200-003"):
        resolve_mounts(pod, pod["spec"]["containers"][0], tmp_path, tmp_path / "w")


def test_only_a_loopback_hub_is_honoured() -> None:
    assert resolve_hub("http://127.0.0.1:9000", "http://127.0.0.1:5000") == "http://127.0.0.1:9000"
    assert resolve_hub("http://localhost:9000", None) == "http://localhost:9000"
    assert resolve_hub(None, "http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert resolve_hub("https://hub.example.invalid", "http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert resolve_hub("https://hub.example.invalid", None) == NO_HUB


def test_the_process_gets_the_rewritten_command_and_a_narrow_environment(tmp_path: Path) -> None:
    pod = job_pod()
    container = pod["spec"]["containers"][0]
    secret = {"data": {"token": base64.b64encode(b"hf_secret").decode()}}
    argv, env = download_launch(
        pod,
        container,
        cluster_dir=tmp_path / "c",
        workdir=tmp_path / "w",
        kubeconfig=tmp_path / "w/kubeconfig",
        cluster_hub="http://127.0.0.1:5000",
        read_secret=lambda name: secret if name == "hf-token" else None,
    )
    assert argv[0] == str(Path(sys.executable).parent / "ome-operator")
    assert argv[1:3] == ["download", "hf://moonshotai/Kimi-K2-Instruct"]
    dest = argv[argv.index("--dest") + 1]
    assert dest == str(tmp_path / "c/nodes/h200-003/root/raid/models/moonshotai/Kimi-K2-Instruct")
    assert argv[argv.index("--node-name") + 1] == "h200-003"
    assert env["HF_TOKEN"] == "hf_secret"
    assert env["HF_ENDPOINT"] == "http://127.0.0.1:5000"
    assert env["KUBECONFIG"] == str(tmp_path / "w/kubeconfig")
    assert env["TERMINATION_MESSAGE_PATH"] == str(termination_path(tmp_path / "w", "download"))
    assert env["TMPDIR"] == str(tmp_path / "w/volumes/tmp")
    assert not any(k.startswith("KUBERNETES_") for k in env)
    with pytest.raises(MountError, match='secret "hf-token" not found'):
        download_launch(
            pod,
            container,
            cluster_dir=tmp_path / "c",
            workdir=tmp_path / "w",
            kubeconfig=tmp_path / "k",
            cluster_hub=None,
            read_secret=lambda name: None,
        )


def test_the_exit_code_and_termination_message_become_the_pods_result(tmp_path: Path) -> None:
    message = tmp_path / "download.termination-log"

    def launch(_: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        code = f"open({str(message)!r}, 'w').write('{{\"status\": \"Failed\"}}'); raise SystemExit(3)"
        return [sys.executable, "-c", code], {}

    pod = {
        "metadata": {"name": "p", "namespace": "n", "uid": "u"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "download", "image": "i"}]},
        "status": {"podIP": "127.0.0.1", "conditions": []},
    }
    run = ContainerRun(spec={"name": "download"}, workdir=tmp_path, launch=launch, termination_file=message)
    run.start(pod)
    deadline = time.monotonic() + 20
    while run.terminated is None and time.monotonic() < deadline:
        run.step(pod, "Never", lambda _: None)
        time.sleep(0.05)
    status = pod_status(pod, {"download": run})
    assert status["phase"] == "Failed"
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3 and terminated["reason"] == "Error"
    assert terminated["message"] == '{"status": "Failed"}'
