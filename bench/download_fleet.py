"""The fleet part of `make bench-download`: N nodes downloading one model at once (see bench/download.py).

Every node is a process with its own destination (and, for `hf download`, its own HF_HOME, so no
cache is shared); all of them talk to the same Range-capable hub front, which counts the file
bytes it sends. The peer case coordinates through a ConfigMap on a local API server started here
(devtools/cluster.py, one kwok node: only the API matters).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from devtools.cluster import LocalCluster, find_bin_dir
from devtools.fixtures import FixtureRepo, Tensor, build_repo
from devtools.hub import Hub
from devtools.hub_front import HubFront
from ome_operator.api.model import PROGRESS_EXPECTED_KEY

REPO_ID = "bench/fleet-model"
MIB = 1 << 20


def make_repo(mirrors: Path, size_gib: float, shards: int) -> FixtureRepo:
    per_shard = int(size_gib * (1 << 30)) // shards
    tensors = [[Tensor(f"layer.{i}.weight", "BF16", (per_shard // 2,))] for i in range(shards)]
    return build_repo(mirrors, REPO_ID, shards=tensors, large=True)


def _configmap(cluster: LocalCluster, name: str, nodes: int) -> None:
    """As the operator renders it: empty but for the nodes it created Jobs for."""
    from kubernetes import client, config

    expected = json.dumps([f"node-{i:02d}" for i in range(nodes)], separators=(",", ":"))

    new_client: Any = config.new_client_from_config
    with new_client(config_file=str(cluster.kubeconfig)) as api:
        core: Any = client.CoreV1Api(api)
        body = {"metadata": {"name": name}, "data": {PROGRESS_EXPECTED_KEY: expected}}
        core.create_namespaced_config_map("default", body)


def _launch(cmds: list[tuple[list[str], dict[str, str]]]) -> list[float]:
    """Start every command at once; the wall time of each, launch to exit."""
    started = time.perf_counter()
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for cmd, env in cmds]  # fmt: skip
    times: list[float] = [0.0] * len(procs)
    pending = set(range(len(procs)))
    while pending:
        for i in list(pending):
            if procs[i].poll() is not None:
                times[i] = time.perf_counter() - started
                pending.discard(i)
        time.sleep(0.05)
    for proc, (cmd, _) in zip(procs, cmds, strict=True):
        if proc.returncode != 0:
            raise SystemExit(f"fleet command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.read()[-3000:]}")
    return times


def _tree_bytes(root: Path) -> int:
    return sum(
        p.stat().st_size for p in root.rglob("*") if p.is_file() and not {".cache", ".ome-download"} & set(p.parts)
    )


def run_fleet(
    root: Path, bin_dir: Path, nodes: int, size_gib: float, shards: int, workers: int, egress_caps: list[float]
) -> None:
    work = root / "fleet"
    work.mkdir()
    hub = Hub(work / "hub")
    repo = make_repo(hub.mirrors, size_gib, shards)
    size = sum(f.size for f in repo.files.values() if f.path != ".gitattributes")
    print(f"\nfleet: {REPO_ID}@{repo.commit[:12]}, {shards} shards, {size / MIB:.1f} MiB")
    cluster = LocalCluster(f"bench-dl-{os.getpid()}", nodes=1, bin_dir=find_bin_dir(), die_with_parent=True)
    cluster.start()
    try:
        with hub:
            front = HubFront(hub.endpoint, [repo]).start()
            try:
                base_env = {
                    **{k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_ENDPOINT", "KUBECONFIG")},
                    "HF_ENDPOINT": front.endpoint,
                    "HF_HUB_DISABLE_TELEMETRY": "1",
                    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                }
                for egress_mib in egress_caps:
                    front.faults.egress_limit = egress_mib * MIB
                    cap = f"{egress_mib:g} MiB/s for all nodes together" if egress_mib else "none (loopback, CPU-bound)"
                    print(f"hub egress cap: {cap}")
                    print(
                        f"  {'nodes':>5}  {'client':<34} {'hub egress':>11}  {'per node min/median/max':>25}  {'fleet':>8}"
                    )
                    for n in sorted({1, nodes}):
                        cases = ["ours", "ours+peers", "hf"] if n > 1 else ["ours", "hf"]
                        for case in cases:
                            _run_case(work, bin_dir, cluster, front, repo, size, base_env, n, case, workers)
            finally:
                front.stop()
    finally:
        cluster.stop()


def _run_case(
    work: Path,
    bin_dir: Path,
    cluster: LocalCluster,
    front: HubFront,
    repo: FixtureRepo,
    size: int,
    base_env: dict[str, str],
    n: int,
    case: str,
    workers: int,
) -> None:
    with front._lock:
        front.bytes_sent.clear()
        front.requests.clear()
    tag = f"{case.replace('+', '-')}-{n}-{int(front.faults.egress_limit)}"
    cm = f"bench-{tag}"
    if case == "ours+peers":
        _configmap(cluster, cm, n)
    cmds = []
    for i in range(n):
        dest = work / tag / f"node-{i:02d}"
        env = dict(base_env)
        if case == "hf":
            env["HF_HOME"] = str(work / tag / f"hf-home-{i:02d}")
            cmd = [str(bin_dir / "hf"), "download", REPO_ID, "--revision", repo.commit, "--local-dir", str(dest),
                   "--max-workers", str(workers)]  # fmt: skip
        else:
            cmd = [str(bin_dir / "ome-operator"), "download", f"hf://{REPO_ID}@{repo.commit}", "--dest", str(dest),
                   "--workers", str(workers), "--termination-log", str(work / tag / f"t-{i:02d}.json")]  # fmt: skip
            if case == "ours+peers":
                cmd += ["--node-name", f"node-{i:02d}", "--progress-configmap", f"default/{cm}",
                        "--kubeconfig", str(cluster.kubeconfig), "--peer-address", "127.0.0.1", "--peer-port", "0"]  # fmt: skip
        cmds.append((cmd, env))
    subprocess.run(["sync"], check=False)
    times = _launch(cmds)
    for i in range(n):
        got = _tree_bytes(work / tag / f"node-{i:02d}")
        if got < size:
            raise SystemExit(f"{tag} node {i}: only {got} of {size} bytes in place")
    egress = front.total_sent() / size
    label = {"ours": "ome-operator download, each alone", "ours+peers": "ome-operator download, peers",
             "hf": "hf download"}[case]  # fmt: skip
    spread = f"{min(times):.1f}/{statistics.median(times):.1f}/{max(times):.1f} s"
    print(f"  {n:>5}  {label:<34} {egress:>10.2f}x  {spread:>25}  {max(times):>6.1f} s")
    shutil.rmtree(work / tag, ignore_errors=True)
