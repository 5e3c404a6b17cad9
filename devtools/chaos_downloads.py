"""C7, poisoned downloads: the downloader against a local hub that misbehaves, one case per row.

    python -m devtools.chaos_downloads [--runs N]

`run_c7()` starts olah (devtools/hub.py) and the fault-injecting front (devtools/hub_front.py)
on 127.0.0.1, generates a small sharded model, and runs `ome-operator download` in a child
process per run, each into a fresh directory:

- wrong-digest: the hub serves the same wrong bytes every time; expected: exit 3 (permanent)
  after exactly two transfers of the shard, no final and no partial file;
- flipped-once: one transfer has a flipped bit; expected: one more transfer, the file verifies;
- throttled: 429 and 503 with Retry-After for several requests; expected: success, no retry
  sooner than asked;
- cut: the connection is cut mid-file; expected: the next request resumes at the cut, no byte
  sent twice;
- disk-full: the dest is a 12 MiB tmpfs in a private mount namespace (a real ENOSPC, no root)
  that another writer fills mid-file; expected: exit 3, the error names the partial's path and
  the bytes still needed, nothing under the final name;
- sigkill: the process is killed mid-file; the rerun resumes from the partial (Range) and
  transfers less than the model.

Each row: `{"row": "C7 <case>", "runs", "failures": {what: count}, "figures": {what: text}}`,
the shape of the `make chaos` table. The same cases run in `make test` (tests/downloader/test_faults.py).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.fixtures import FixtureRepo, Tensor, build_repo
from devtools.hub import Hub
from devtools.hub_front import HubFront

REPO = Path(__file__).resolve().parents[1]
BIG = "model-00001-of-00002.safetensors"


@dataclass
class Row:
    case: str
    runs: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)

    def fail(self, what: str, ok: bool) -> None:
        self.failures[what] = self.failures.get(what, 0) + (0 if ok else 1)

    def sample(self, what: str, value: float) -> None:
        self.samples.setdefault(what, []).append(value)

    def to_json(self) -> dict[str, Any]:
        figures = dict(self.figures)
        for what, values in self.samples.items():
            figures[what] = f"max {max(values):.2f}"
        return {"row": f"C7 {self.case}", "runs": self.runs, "failures": self.failures, "figures": figures}


@dataclass
class Run:
    code: int
    result: dict[str, Any]
    seconds: float
    stderr: str


class Bench:
    def __init__(self, root: Path, front: HubFront, repo: FixtureRepo) -> None:
        self.root, self.front, self.repo = root, front, repo
        self.counter = 0

    def fresh(self) -> Path:
        self.counter += 1
        path = self.root / f"run-{self.counter}"
        path.mkdir()
        return path

    def argv(self, dest: Path, term: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "ome_operator.cli", "download", f"hf://{self.repo.repo_id}",
                "--dest", str(dest), "--termination-log", str(term), *extra]  # fmt: skip

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "KUBECONFIG")}
        env.update(HF_ENDPOINT=self.front.endpoint, HF_HUB_DISABLE_TELEMETRY="1")
        return env

    def run(self, dest: Path, *extra: str, wrap: Callable[[list[str]], list[str]] | None = None) -> Run:
        term = self.root / f"term-{self.counter}.json"  # outside any private tmpfs
        argv = self.argv(dest, term, *extra)
        started = time.monotonic()
        proc = subprocess.run(
            wrap(argv) if wrap else argv, env=self.env(), cwd=REPO, capture_output=True, text=True, timeout=300
        )
        text = term.read_text() if term.exists() else ""
        return Run(proc.returncode, json.loads(text) if text else {}, time.monotonic() - started, proc.stderr)

    def verified(self, dest: Path) -> bool:
        return all(
            (dest / f.path).is_file() and hashlib.sha256((dest / f.path).read_bytes()).hexdigest() == f.sha256
            for f in self.repo.files.values()
            if f.path != ".gitattributes"  # git's own file: not part of the model, never fetched
        )

    def reset(self) -> None:
        self.front.faults.__init__()  # type: ignore[misc]
        with self.front._lock:
            self.front.requests.clear()
            self.front.bytes_sent.clear()


def case_wrong_digest(b: Bench, row: Row) -> None:
    b.front.faults.corrupt[BIG] = (4321, 1_000)
    dest = b.fresh() / "m"
    out = b.run(dest)
    tries = len(b.front.resolve_requests(BIG))
    row.fail("not permanent", out.code == 3 and out.result.get("permanent") is True)
    row.fail("transfers != 2", tries == 2)
    row.fail("file left", not (dest / BIG).exists() and not (dest / ".ome-download" / "partial" / BIG).exists())
    row.sample("seconds to fail", out.seconds)
    row.sample("wasted MiB", b.front.bytes_sent.get(BIG, 0) / (1 << 20))


def case_flipped_once(b: Bench, row: Row) -> None:
    b.front.faults.corrupt[BIG] = (4321, 1)
    dest = b.fresh() / "m"
    out = b.run(dest)
    row.fail("not verified", out.code == 0 and b.verified(dest))
    row.fail("transfers != 2", len(b.front.resolve_requests(BIG)) == 2)
    row.sample("seconds", out.seconds)


def case_throttled(b: Bench, row: Row) -> None:
    b.front.faults.busy[BIG] = (503, 3, "1")
    b.front.faults.busy["config.json"] = (429, 2, "1")
    dest = b.fresh() / "m"
    out = b.run(dest)
    tries = b.front.resolve_requests(BIG)
    early = sum(1 for a, c in itertools.pairwise(tries) if c.at - a.at < 1.0)
    row.fail("not verified", out.code == 0 and b.verified(dest))
    row.fail("retried before Retry-After", early == 0)
    row.sample("seconds", out.seconds)


def case_cut(b: Bench, row: Row) -> None:
    cut = 3 << 20
    b.front.faults.cut_after[BIG] = (cut, 1)
    dest = b.fresh() / "m"
    out = b.run(dest)
    ranges = [r.range for r in b.front.resolve_requests(BIG)]
    row.fail("not verified", out.code == 0 and b.verified(dest))
    row.fail("not resumed at the cut", ranges == [None, f"bytes={cut}-"])
    row.fail("bytes sent twice", b.front.bytes_sent.get(BIG, 0) == b.repo.files[BIG].size)
    row.sample("seconds", out.seconds)


def small_fs(mount: Path, size: int, listing: Path, pidfile: Path) -> Callable[[list[str]], list[str]]:
    script = (
        'mount -t tmpfs -o size="$1" tmpfs "$2" || exit 90; mp="$2"; ls="$3"; pf="$4"; shift 4; '
        '"$@" & child=$!; echo "$child" > "$pf"; wait "$child"; rc=$?; '
        'find "$mp" -type f -printf "%P\\n" > "$ls"; exit "$rc"'
    )
    return lambda argv: ["unshare", "-rm", "sh", "-c", script, "sh", str(size), str(mount), str(listing),
                         str(pidfile), *argv]  # fmt: skip


def case_disk_full(b: Bench, row: Row) -> None:
    b.front.faults.stall_after[BIG] = (5 << 20, 1)
    base = b.fresh()
    mount, listing, pidfile = base / "small", base / "left.txt", base / "pid"
    mount.mkdir()
    dest = mount / "m"
    filler = _Filler(b.front, pidfile, mount, dest / ".ome-download" / "partial" / BIG)
    filler.start()
    out = b.run(dest, "--stall-timeout", "2", "--workers", "1", wrap=small_fs(mount, 12 << 20, listing, pidfile))
    filler.join()
    left = listing.read_text().split() if listing.exists() else []
    error = str(out.result.get("error", ""))
    row.fail("not permanent", out.code == 3 and out.result.get("permanent") is True)
    row.fail("error lacks path or space", str(dest / ".ome-download" / "partial" / BIG) in error and "needed" in error)
    row.fail("final name left", f"m/{BIG}" not in left)
    row.sample("seconds to fail", out.seconds)


class _Filler:
    """Takes every free byte of the child's tmpfs once 4 MiB of the shard are on it."""

    def __init__(self, front: HubFront, pidfile: Path, mount: Path, partial: Path) -> None:
        import threading

        self._thread = threading.Thread(target=self._run, args=(front, pidfile, mount, partial), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join(timeout=60)

    @staticmethod
    def _run(front: HubFront, pidfile: Path, mount: Path, partial: Path) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pid = pidfile.read_text().strip() if pidfile.exists() else ""
            if pid:
                view = Path(f"/proc/{pid}/root")
                seen = view / partial.relative_to("/")
                try:
                    if seen.stat().st_size >= 4 << 20:
                        with (view / mount.relative_to("/") / "filler").open("wb") as out:
                            while True:
                                out.write(b"\0" * (64 << 10))
                                out.flush()
                except OSError:
                    if seen.exists():
                        return
            time.sleep(0.02)


def case_sigkill(b: Bench, row: Row) -> None:
    b.front.faults.stall_after[BIG] = (6 << 20, 1)
    base = b.fresh()
    dest = base / "m"
    partial = dest / ".ome-download" / "partial" / BIG
    proc = subprocess.Popen(
        b.argv(dest, base / "t0.json"), env=b.env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (partial.exists() and partial.stat().st_size >= 4 << 20):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = partial.stat().st_size if partial.exists() else 0
    sent_before = b.front.bytes_sent.get(BIG, 0)
    out = b.run(dest)
    resent = b.front.bytes_sent.get(BIG, 0) - sent_before
    row.fail("not verified", out.code == 0 and b.verified(dest))
    row.fail("not resumed", kept > 0 and resent == b.repo.files[BIG].size - kept)
    row.sample("seconds to finish", out.seconds)


CASES: list[tuple[str, Callable[[Bench, Row], None]]] = [
    ("wrong digest twice", case_wrong_digest),
    ("wrong digest once", case_flipped_once),
    ("429/503 Retry-After", case_throttled),
    ("connection cut", case_cut),
    ("disk full", case_disk_full),
    ("SIGKILL mid-file", case_sigkill),
]


def run_c7(runs: int = 2) -> list[dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="ome-chaos-c7-"))
    try:
        with Hub(root / "hub") as hub:
            repo = build_repo(
                hub.mirrors,
                "chaos/poisoned",
                shards=[[Tensor("big", "BF16", (4 << 20,))], [Tensor("s", "BF16", (1024,))]],
            )
            front = HubFront(hub.endpoint, [repo]).start()
            try:
                bench = Bench(root, front, repo)
                rows = []
                for case, fn in CASES:
                    row = Row(case)
                    for _ in range(runs):
                        bench.reset()
                        try:
                            fn(bench, row)
                        except Exception as exc:  # a crashed case is a failed run, not a crashed table
                            row.fail(f"error: {type(exc).__name__}", False)
                        row.runs += 1
                    rows.append(row.to_json())
                return rows
            finally:
                front.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.chaos_downloads")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)
    rows = run_c7(args.runs)
    for row in rows:
        failed = sum(row["failures"].values())
        figures = ", ".join(f"{k} {v}" for k, v in row["figures"].items())
        print(f"{row['row']:<28} runs {row['runs']:>2}  failures {failed:>2}  {figures}")
        for what, n in row["failures"].items():
            if n:
                print(f"    {what}: {n}")
    return 0 if all(sum(r["failures"].values()) == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
