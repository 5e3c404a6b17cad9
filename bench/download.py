"""Download benchmark: `ome-operator download` (verifying every file) against huggingface_hub.

    python -m bench.download [--size-gib 1] [--shards 8] [--workers 8] [--keep]
        [--fleet-nodes 16] [--fleet-size-gib 0.1] [--hub-egress-mib 0,20] [--fleet-only]

Part 2, the fleet: N download processes at once, one per node, all from the same hub front,
which counts the file bytes it sends (hub egress): (c) `ome-operator download` per node, alone;
(d) the same with peer sharing (each Job serves the others what it has verified; coordination
through the model's progress ConfigMap on a real local API server, started here); (e) `hf
download` per node. Printed per case: hub egress as a multiple of the model's size, per-node time
(min/median/max, launch to exit, which is when a Job's node is Ready) and fleet time (the last
node). The fleet runs once per `--hub-egress-mib` value, a cap on the hub's total send rate as a
real hub link or a shared NAT imposes; uncapped (0), loopback and a shared CPU make every case
CPU-bound here, and there sharing can only add work.

Generates a repository of --size-gib GiB in --shards safetensors shards, serves it from the local
hub (olah, offline, 127.0.0.1), and times, each into an empty directory and in a fresh process:
  (a) `ome-operator download hf://<repo>@<commit>` (sha256 of every LFS file while writing it),
  (b) huggingface_hub's own `hf download <repo> --revision <commit> --local-dir ...`,
then prints the ratio (a)/(b) and single-core hashlib sha256 throughput as the physical
reference for the verification cost. The same pair is then timed again with the files served by
the Range-capable loopback front (devtools/hub_front.py; the hub API is still olah's), which
takes olah's slow file streaming out of the measurement. Everything lives in a temporary directory that is removed
at the end (unless --keep), so the disk needs about 3x --size-gib free while it runs.

olah reads each LFS object whole and streams it in 4 KiB pieces, so with it the server is usually
the bottleneck and both clients see the same ceiling. On a small machine the servers share the
CPU with the clients: the numbers compare the two clients, not what a real hub or CDN delivers.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devtools.fixtures import FixtureRepo, Tensor, build_repo
from devtools.hub import Hub
from devtools.hub_front import HubFront

REPO_ID = "bench/model"


def make_repo(mirrors: Path, size_gib: float, shards: int) -> FixtureRepo:
    per_shard = int(size_gib * (1 << 30)) // shards
    tensors = [[Tensor(f"layer.{i}.weight", "BF16", (per_shard // 2,))] for i in range(shards)]
    return build_repo(mirrors, REPO_ID, shards=tensors, large=True)


def compare(
    root: Path, label: str, endpoint: str, commit: str, workers: int, bin_dir: Path, repeat: int
) -> tuple[list[float], list[float], int, int]:
    """Time both clients, alternating, each run into a fresh directory; return the times and bytes."""
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_ENDPOINT")},
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(root / "hf-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    tag = "".join(c for c in label if c.isalnum())
    ours, theirs = root / f"ours-{tag}", root / f"theirs-{tag}"
    times_a, times_b = [], []
    for _ in range(repeat):
        got_a, got_b = _pair(root, ours, theirs, commit, workers, bin_dir, env, times_a, times_b)
    return times_a, times_b, got_a, got_b


def _pair(
    root: Path,
    ours: Path,
    theirs: Path,
    commit: str,
    workers: int,
    bin_dir: Path,
    env: dict[str, str],
    times_a: list[float],
    times_b: list[float],
) -> tuple[int, int]:
    subprocess.run(["sync"], check=False)  # do not bill one client for the other's dirty pages
    a = timed(
        [str(bin_dir / "ome-operator"), "download", f"hf://{REPO_ID}@{commit}", "--dest", str(ours),
         "--workers", str(workers), "--termination-log", str(root / "termination.json")],
        env,
    )  # fmt: skip
    subprocess.run(["sync"], check=False)
    b = timed(
        [str(bin_dir / "hf"), "download", REPO_ID, "--revision", commit, "--local-dir", str(theirs),
         "--max-workers", str(workers)],
        env,
    )  # fmt: skip
    got_a, got_b = tree_bytes(ours), tree_bytes(theirs)
    shutil.rmtree(ours)
    shutil.rmtree(theirs)
    times_a.append(a)
    times_b.append(b)
    return got_a, got_b


def fmt(times: list[float]) -> str:
    return " ".join(f"{t:.2f}s" for t in times)


def timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}")
    return elapsed


def tree_bytes(root: Path) -> int:
    return sum(
        p.stat().st_size for p in root.rglob("*") if p.is_file() and not {".cache", ".ome-download"} & set(p.parts)
    )


def sha256_throughput(seconds: float = 2.0) -> float:
    block = os.urandom(1 << 20) * 64  # 64 MiB, updated in 1 MiB slices like the downloader's reads
    view = memoryview(block)
    h = hashlib.sha256()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for off in range(0, len(block), 1 << 20):
            h.update(view[off : off + (1 << 20)])
        done += len(block)
    return done / (time.perf_counter() - started)


def _fleet(root: Path, bin_dir: Path, args: argparse.Namespace) -> None:
    from bench.download_fleet import run_fleet

    caps = [float(c) for c in args.hub_egress_mib.split(",") if c.strip()]
    run_fleet(root, bin_dir, args.fleet_nodes, args.fleet_size_gib, args.shards, args.workers, caps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.download")
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--workers", type=int, default=8, help="parallel files for both clients")
    parser.add_argument("--repeat", type=int, default=2, help="runs per client; the best is compared")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--fleet-nodes", type=int, default=16, help="nodes in the fleet part (0: skip it)")
    parser.add_argument("--fleet-only", action="store_true", help="run only the fleet part")
    parser.add_argument("--fleet-size-gib", type=float, default=0.1, help="model size in the fleet part")
    parser.add_argument(
        "--hub-egress-mib", default="0,20", help="caps on the hub's total MiB/s to run the fleet under (0: none)"
    )
    args = parser.parse_args(argv)

    bin_dir = Path(sys.executable).parent
    root = Path(tempfile.mkdtemp(prefix="ome-bench-download-"))
    try:
        if args.fleet_only:
            _fleet(root, bin_dir, args)
            return 0
        hub = Hub(root / "hub")
        t0 = time.perf_counter()
        repo = make_repo(hub.mirrors, args.size_gib, args.shards)
        commit, total = repo.commit, repo.total_bytes
        print(f"repository: {REPO_ID}@{commit[:12]}, {args.shards} shards, {total / (1 << 30):.2f} GiB "
              f"(generated in {time.perf_counter() - t0:.1f}s)")  # fmt: skip
        mib = 1 << 20
        with hub:
            front = HubFront(hub.endpoint, [repo]).start()
            try:
                for label, endpoint in (("local hub (olah)", hub.endpoint), ("Range-capable front", front.endpoint)):
                    ta, tb, got_a, got_b = compare(root, label, endpoint, commit, args.workers, bin_dir, args.repeat)
                    a, b = min(ta), min(tb)
                    print(f"[{label}] best of {args.repeat}; all runs: (a) {fmt(ta)}  (b) {fmt(tb)}")
                    print(f"  (a) ome-operator download, verified: {a:7.2f} s  {got_a / a / mib:8.1f} MiB/s")
                    print(f"  (b) hf download:                     {b:7.2f} s  {got_b / b / mib:8.1f} MiB/s")
                    print(f"  ratio (a)/(b): {a / b:.3f}  (target <= 1.1)")
            finally:
                front.stop()
        startup_a = min(
            timed([str(bin_dir / "ome-operator"), "download", "--help"], dict(os.environ)) for _ in range(3)
        )
        startup_b = min(timed([str(bin_dir / "hf"), "download", "--help"], dict(os.environ)) for _ in range(3))
        print(f"process start-up included above (`... download --help`): (a) {startup_a:.2f} s  (b) {startup_b:.2f} s")
        sha = sha256_throughput()
        print(f"sha256, one core (hashlib, 1 MiB updates): {sha / mib:.0f} MiB/s "
              f"-> verifying {total / (1 << 30):.2f} GiB costs {total / sha:.2f} s of one core")  # fmt: skip
        if args.fleet_nodes:
            _fleet(root, bin_dir, args)
        return 0
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
