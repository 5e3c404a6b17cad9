"""`make demo`: OME's Kimi K2 files, unchanged, to a Ready 1P1D deployment on a local 16-node cluster,
and the seed walkthrough's `kubectl port-forward` + `curl /generate` answered through it.

Starts (or reuses) the local control plane `demo` (with its runner: the real router, stand-in SGLang
engines and the real `ome-operator download` for the pods, and the cluster's hub serving a small
repository under OME's Kimi K2 name with Kimi K2's real config.json), installs the CRDs, starts the
operator in the background, applies the three reference files (the byte-identical copies under
tests/golden/kimi-k2-reference/input), waits for Ready (16 real downloads first), prints every node's
verified copy, the metadata read from the files and the runtime match, where everything landed, then
runs the seed's two commands verbatim and prints the reply and which prefill and decode pods served it. The port-forward keeps running for more requests.
`make demo-down` stops the port-forward, the operator and the cluster (the runner stops the
processes it started for the pods) and removes their files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from devtools.cluster import AlreadyRunning, LocalCluster, kubectl_path
from devtools.hub import served_digests
from devtools.operator import OperatorProcess, reference_files
from devtools.walkthrough import CURL, PORT_FORWARD, PortForward, port_8080, run_curl, served_by

REPO = Path(__file__).resolve().parents[1]
NAME = os.environ.get("OME_DEMO_NAME", "demo")
ISVC, NS = "kimi-k2-instruct", "kimi-k2-instruct"


def say(text: str) -> None:
    print(text, flush=True)


def kubectl(kubeconfig: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(
        [str(kubectl_path()), f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def kjson(kubeconfig: Path, *args: str) -> Any:
    return json.loads(kubectl(kubeconfig, *args, "-o", "json"))


def operator_pid_file(cluster: LocalCluster) -> Path:
    return cluster.dir / "operator.pid"


def start_operator(cluster: LocalCluster) -> OperatorProcess:
    pid_file = operator_pid_file(cluster)
    if pid_file.exists():
        stop_operator(cluster)
    hub = json.loads((cluster.dir / "runner" / "hub.json").read_text())["endpoint"]
    args = ("--resync-seconds", "30", "--hf-endpoint", hub)
    op = OperatorProcess(cluster.kubeconfig, cluster.dir / "logs" / "operator.log", *args).start()
    assert op.proc is not None
    pid_file.write_text(f"{op.proc.pid}\n{op.port}\n")
    op.wait_ready()
    return op


def stop_operator(cluster: LocalCluster) -> None:
    _stop_pid_file(operator_pid_file(cluster), b"ome-operator")


def _stop_pid_file(pid_file: Path, marker: bytes) -> None:
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().split()[0])
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if marker in cmdline:  # never signal a recycled pid
            os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            if Path(f"/proc/{pid}").exists():
                os.killpg(pid, signal.SIGKILL)
    except (FileNotFoundError, ProcessLookupError):
        pass
    pid_file.unlink(missing_ok=True)


def port_forward_pid_file(cluster: LocalCluster) -> Path:
    return cluster.dir / "port-forward.pid"


def walkthrough(cluster: LocalCluster) -> None:
    """The seed's last two commands, verbatim, with KUBECONFIG set to the demo cluster."""
    _stop_pid_file(port_forward_pid_file(cluster), b"port-forward")
    with port_8080(timeout=5):
        pf = PortForward(cluster.kubeconfig, cluster.dir / "logs" / "port-forward.log")
        try:
            pf.start()
        except RuntimeError as exc:
            raise SystemExit(f"{exc}\n(is something else listening on port 8080?)") from exc
        assert pf.proc is not None
        port_forward_pid_file(cluster).write_text(f"{pf.proc.pid}\n")
        say(f"  $ {PORT_FORWARD} &")
        for line in pf.output().strip().splitlines():
            say(f"  {line}")
        say("  $ " + CURL.replace("\n", "\n  "))
        t0 = time.monotonic()
        body = run_curl(cluster.kubeconfig)
        say(f"  {body}")
    try:
        reply = json.loads(body)
    except ValueError as exc:
        raise SystemExit(f"no JSON reply from the router: {body!r}") from exc
    words = len(str(reply.get("text", "")).split())
    say(f"\n  HTTP reply in {time.monotonic() - t0:.2f} s: {words} words, served by {served_by(reply)}")
    say(
        "  (the engines here are stand-ins that check their command lines, group rendezvous and PD\n"
        "  bootstrap for real and answer with deterministic words; the router is the real one.\n"
        "  SGLang reads max_new_tokens from sampling_params, and the router forwards only the fields\n"
        "  SGLang's /generate defines: the seed's top-level max_new_tokens is dropped on the way, so\n"
        '  SGLang\'s default of 128 applies; send {"sampling_params": {"max_new_tokens": 50}} for 50)'
    )


def wait_ready(kubeconfig: Path, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        obj = kjson(kubeconfig, "get", "isvc", ISVC, "-n", NS)
        ready: dict[str, Any] = next(
            (c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Ready"), {}
        )
        if not ready:
            line = "  (waiting for the operator's first status)"
        else:
            line = f"  Ready={ready['status']} {ready.get('reason', '')}: {ready.get('message', '')}"
        if line != last:
            say(line)
            last = line
        if ready.get("status") == "True":
            return dict(obj)
        time.sleep(1)
    raise SystemExit(f"InferenceService not Ready after {timeout:.0f} s; see `kubectl describe isvc -n {NS} {ISVC}`")


def verify_node_copies(cluster: LocalCluster, model: dict[str, Any]) -> tuple[int, int, int]:
    """(nodes whose copy verifies, files, bytes per copy): every file on the node hashes to what the hub
    serves, and every weight shard and config.json the hub serves is there."""
    from devtools.runner_download import node_host_path

    repo = model["spec"]["storage"]["storageUri"].removeprefix("hf://").partition("@")[0]
    digests = served_digests(cluster.dir / "hub" / "mirrors" / "models" / repo)
    needed = {p for p in digests if p.endswith(".safetensors") or p == "config.json"}
    good, files, size = 0, 0, 0
    for node in model["status"]["nodesReady"]:
        root = node_host_path(cluster.dir, node, model["spec"]["storage"]["path"])
        present = {
            str(p.relative_to(root)): p
            for p in root.rglob("*")
            if p.is_file() and ".ome-download" not in p.relative_to(root).parts
        }
        ok = needed <= set(present) and all(
            digests.get(name) == hashlib.sha256(path.read_bytes()).hexdigest() for name, path in present.items()
        )
        if ok:
            good += 1
            files, size = len(present), sum(p.stat().st_size for p in present.values())
    return good, files, size


def print_model(cluster: LocalCluster, isvc: dict[str, Any]) -> None:
    model = kjson(cluster.kubeconfig, "get", "clusterbasemodel", ISVC)
    status = model["status"]
    good, files, size = verify_node_copies(cluster, model)
    say(
        f"  {model['spec']['storage']['storageUri']} -> {model['spec']['storage']['path']} on "
        f"{status['nodesSummary']} nodes; {good}/{len(status['nodesReady'])} copies verified here against the "
        f"hub's sha256 ({files} files, {size / 2**20:.1f} MiB each)"
    )
    meta = status.get("metadata") or {}
    say(
        "  read from the files: "
        + ", ".join(
            f"{key} {meta[key]}"
            for key in ("architecture", "modelType", "parameterSize", "parameterCount", "quantization", "maxTokens")
            if key in meta
        )
        + f", commit {str(meta.get('commit', '?'))[:12]}"
    )
    resolved = next(c for c in isvc["status"]["conditions"] if c["type"] == "RuntimeResolved")
    say(f"  RuntimeResolved={resolved['status']} {resolved['reason']}: {resolved['message']}")


def print_placement(kubeconfig: Path) -> None:
    pods = kjson(kubeconfig, "get", "pods", "-n", NS, "-l", f"ome.io/inferenceservice={ISVC}")["items"]
    rows = []
    per_node: Counter[str] = Counter()
    for pod in sorted(pods, key=lambda p: (p["metadata"]["labels"].get("component", ""), p["metadata"]["name"])):
        labels = pod["metadata"]["labels"]
        gpus = sum(
            int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) for c in pod["spec"]["containers"]
        )
        node = pod["spec"].get("nodeName", "-")
        per_node[node] += gpus
        role = labels.get("ome.io/role", "-")
        rows.append(
            (
                pod["metadata"]["name"],
                labels.get("component", "-"),
                role,
                node,
                str(gpus),
                pod["status"].get("podIP", "-"),
            )
        )
    header = ("POD", "COMPONENT", "ROLE", "NODE", "GPUS", "POD IP")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        say("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    gpu_nodes = {n: g for n, g in per_node.items() if g}
    say(
        f"\n  GPU nodes used: {len(gpu_nodes)}; GPUs per node: {sorted(set(gpu_nodes.values()))}; "
        f"total GPUs: {sum(gpu_nodes.values())} ({len(gpu_nodes)} nodes x 8 = {8 * len(gpu_nodes)})"
    )


def up() -> int:
    started = time.monotonic()
    cluster = LocalCluster(NAME, nodes=16)
    say(
        "== 1/6 local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok: 16 H200 nodes;\n"
        "        runner: the router, stand-in SGLang engines and real model downloads for the pods, and a hub)"
    )
    try:
        cluster.start()
    except AlreadyRunning:
        say("  (reusing the running demo cluster)")
    kc = cluster.kubeconfig
    say("== 2/6 CRDs")
    kubectl(kc, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kubectl(kc, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    kubectl(kc, "create", "namespace", "ome", check=False)
    say("== 3/6 operator (ome-operator run, in the background)")
    op = start_operator(cluster)
    say(f"  pid {op.proc.pid if op.proc else '?'}, health/metrics on {op.health_url}, log {op.log_path}")
    say(
        f"  download Jobs fetch from the cluster's hub, {json.loads((cluster.dir / 'runner' / 'hub.json').read_text())['endpoint']}"
    )
    say("== 4/6 kubectl apply: OME's Kimi K2 model, runtime and InferenceService, unchanged")
    for path in reference_files():
        say("  " + kubectl(kc, "apply", "-f", str(path)).strip().replace("\n", "\n  "))
    say("== 5/6 waiting for Ready (16 download Jobs, then the leaders answer /health)")
    obj = wait_ready(kc, timeout=420)
    say(f"\nReady in {time.monotonic() - started:.0f} s.\n\n== Model: one real download per node")
    print_model(cluster, obj)
    say("\n== Placement")
    print_placement(kc)
    say("\n== Objects")
    for line in kubectl(kc, "get", "clusterbasemodels,clusterservingruntimes").splitlines():
        say("  " + line)
    for line in kubectl(kc, "get", "isvc", "-A").splitlines():
        say("  " + line)
    say(f"\n  status.url: {obj['status']['url']}")
    say("\n== 6/6 the walkthrough: kubectl port-forward + curl, the seed's commands verbatim")
    walkthrough(cluster)
    say(f"\nReply printed {time.monotonic() - started:.0f} s after `make demo` started.")
    say(
        "\n== Keep exploring (the port-forward keeps running)\n"
        f"  export KUBECONFIG={kc}\n"
        f'  export PATH="{REPO}/.venv/bin:$PATH"   # kubectl and ome-operator\n'
        "  curl -s http://localhost:8080/v1/chat/completions -H 'Content-Type: application/json' \\\n"
        """    -d '{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16}'\n"""
        f"  kubectl logs -n {NS} {ISVC}-decoder-0-0\n"
        f"  kubectl logs -n {NS} deployment/{ISVC}-router\n"
        f"  kubectl describe isvc -n {NS} {ISVC}\n"
        f"  kubectl get pods -n {NS} -o wide\n"
        f"  curl -s {op.health_url}/metrics | grep ^ome_\n"
        "  make demo-down     # stops the port-forward, the operator, the pods' processes and the cluster"
    )
    return 0


def down() -> int:
    cluster = LocalCluster(NAME)
    _stop_pid_file(port_forward_pid_file(cluster), b"port-forward")
    stop_operator(cluster)
    cluster.stop()
    say("demo stopped: port-forward, operator, the pods' processes and the cluster ended, files removed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("up", "down"))
    args = parser.parse_args(argv)
    return up() if args.command == "up" else down()


if __name__ == "__main__":
    sys.exit(main())
