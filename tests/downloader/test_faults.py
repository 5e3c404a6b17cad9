"""Resume, throttling and stalls.

olah ignores HTTP Range (it always answers 200 with the whole file), so these tests download
through `HubFront` (tests/downloader/servers.py): the hub API is still olah's, but file bodies
come from a small Range-capable server over the same fixture files, which can also answer 429,
go silent mid-body, or ignore Range on purpose.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.fixtures import FixtureRepo, Tensor
from devtools.hub_front import HubFront
from ome_operator.downloader.manifest import load_manifest
from tests.downloader.conftest import REPO_ROOT, run_download

pytestmark = pytest.mark.hub

SHARD = "model-00001-of-00003.safetensors"


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_mid_file_then_rerun_resumes_from_the_partial(
    front: HubFront, make_repo: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first run is SIGKILLed while a 24 MiB shard is half-way; the second run re-hashes the
    partial prefix and asks only for the rest (Range), so it transfers less than the total."""
    repo: FixtureRepo = make_repo(  # type: ignore[operator]
        shards=[[Tensor("big", "BF16", (12 << 20,))], [Tensor("small", "BF16", (1024,))]]
    )
    front.repos[repo.repo_id] = repo
    big = "model-00001-of-00002.safetensors"
    front.faults.stall_after[big] = (14 << 20, 1)  # 14 MiB, then silence until the test kills the client
    dest = tmp_path / "model"
    partial = dest / ".ome-download" / "partial" / big
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "KUBECONFIG")}
    env.update(HF_ENDPOINT=front.endpoint, HF_HUB_DISABLE_TELEMETRY="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ome_operator.cli", "download", f"hf://{repo.repo_id}", "--dest", str(dest)],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # The writer buffers 4 MiB, so at least 8 MiB of the 14 sent are on disk by now.
        wait_for(lambda: partial.exists() and partial.stat().st_size >= 8 << 20, 30, "a partial file")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    kept = partial.stat().st_size
    size = repo.files[big].size
    assert 0 < kept < size
    assert not (dest / big).exists()
    # The kill can land between a finished file's rename and its manifest entry, or in another
    # file's partial: the rerun must re-hash exactly those bytes too, and nothing else.
    recorded = load_manifest(dest).files
    unrecorded = sum(
        p.stat().st_size
        for p in dest.rglob("*")
        if p.is_file()
        and ".ome-download" not in p.relative_to(dest).parts
        and p.relative_to(dest).as_posix() not in recorded
    )
    other_partials = sum(p.stat().st_size for p in partial.parent.rglob("*") if p.is_file() and p != partial)
    sent_before = front.bytes_sent.get(big, 0)

    out = run_download(monkeypatch, tmp_path, front.endpoint, f"hf://{repo.repo_id}", "--dest", str(dest))
    assert out.code == 0, out.log
    second = front.bytes_sent[big] - sent_before
    assert second == size - kept
    resumed = [r for r in front.resolve_requests(big) if r.range]
    assert resumed and resumed[-1].range == f"bytes={kept}-" and resumed[-1].status == 206
    assert out.termination is not None
    assert out.termination["bytesTransferred"] < out.termination["bytes"]
    assert out.termination["bytesHashed"] == kept + unrecorded + other_partials
    assert hashlib.sha256((dest / big).read_bytes()).hexdigest() == repo.files[big].sha256


def test_a_corrupt_partial_is_caught_by_the_final_hash_and_fetched_again(
    front: HubFront, tiny_repo: FixtureRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "model"
    partial = dest / ".ome-download" / "partial" / SHARD
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\x00" * 4096)  # not the file's first 4 KiB
    out = run_download(
        monkeypatch, tmp_path, front.endpoint, f"hf://{tiny_repo.repo_id}", "--dest", str(dest), "--max-retries", "2"
    )
    assert out.code == 0, out.log
    assert "sha256 mismatch" in out.log
    assert hashlib.sha256((dest / SHARD).read_bytes()).hexdigest() == tiny_repo.files[SHARD].sha256


def test_a_server_that_ignores_range_is_read_from_the_start(
    front: HubFront, tiny_repo: FixtureRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    front.faults.ignore_range = True
    dest = tmp_path / "model"
    partial = dest / ".ome-download" / "partial" / SHARD
    partial.parent.mkdir(parents=True)
    good = tiny_repo.files[SHARD].content_path.read_bytes()
    partial.write_bytes(good[: len(good) // 2])
    out = run_download(monkeypatch, tmp_path, front.endpoint, f"hf://{tiny_repo.repo_id}", "--dest", str(dest))
    assert out.code == 0, out.log
    assert "ignored Range" in out.log
    assert (dest / SHARD).read_bytes() == good


def test_429_with_retry_after_is_obeyed(
    front: HubFront, tiny_repo: FixtureRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retry-After: 2 is longer than the first backoff step (0.5-1 s), so the gap shows which was used."""
    front.faults.rate_limit["config.json"] = (1, "2")
    out = run_download(
        monkeypatch, tmp_path, front.endpoint, f"hf://{tiny_repo.repo_id}", "--dest", str(tmp_path / "m")
    )
    assert out.code == 0, out.log
    tries = front.resolve_requests("config.json")
    assert [r.status for r in tries] == [429, 200]
    gap = tries[1].at - tries[0].at
    assert 2.0 <= gap < 2.0 * 1.1 + 2.0, gap  # at least what was asked; the slack is for a busy machine
    assert "retry after 2s" in out.log


def test_a_stalled_transfer_times_out_in_seconds_and_fails_naming_the_file(
    front: HubFront, tiny_repo: FixtureRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    front.faults.stall_after[SHARD] = (1000, 100)
    started = time.monotonic()
    out = run_download(
        monkeypatch,
        tmp_path,
        front.endpoint,
        f"hf://{tiny_repo.repo_id}",
        "--dest",
        str(tmp_path / "m"),
        "--stall-timeout",
        "0.5",
        "--max-retries",
        "1",
    )
    elapsed = time.monotonic() - started
    assert out.code == 1, out.log
    assert elapsed < 10
    assert "stalled: no data for 0.5s" in out.log
    assert out.termination is not None and out.termination["file"] == SHARD
    assert not (tmp_path / "m" / SHARD).exists()


def test_a_stall_that_clears_resumes_where_it_stopped(
    front: HubFront, tiny_repo: FixtureRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    front.faults.stall_after[SHARD] = (300_000, 1)
    out = run_download(
        monkeypatch,
        tmp_path,
        front.endpoint,
        f"hf://{tiny_repo.repo_id}",
        "--dest",
        str(tmp_path / "m"),
        "--stall-timeout",
        "0.5",
    )
    assert out.code == 0, out.log
    tries = front.resolve_requests(SHARD)
    assert [r.range for r in tries] == [None, "bytes=300000-"]
    # Only finished responses are counted (the stalled one is still parked): the resumed one sent the rest.
    assert front.bytes_sent[SHARD] == tiny_repo.files[SHARD].size - 300_000
    assert hashlib.sha256((tmp_path / "m" / SHARD).read_bytes()).hexdigest() == tiny_repo.files[SHARD].sha256


# --- C7: poisoned downloads (issue 11) ------------------------------------------------------------


def test_the_same_wrong_bytes_twice_fail_at_once_as_permanent(
    front: HubFront, tiny_repo: FixtureRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One retry, not ten: the second identical wrong digest proves the object itself is bad."""
    front.faults.corrupt[SHARD] = (1234, 99)
    started = time.monotonic()
    out = run_download(
        monkeypatch, tmp_path, front.endpoint, f"hf://{tiny_repo.repo_id}", "--dest", str(tmp_path / "m")
    )
    elapsed = time.monotonic() - started
    assert out.code == 3, out.log
    assert [r.status for r in front.resolve_requests(SHARD)] == [200, 200]
    assert out.termination is not None and out.termination["permanent"] is True
    assert out.termination["file"] == SHARD
    assert "same wrong bytes twice" in out.termination["error"]
    assert elapsed < 15, elapsed  # one backoff step (<= 1 s) plus two transfers, on a busy machine
    assert not (tmp_path / "m" / SHARD).exists()
    assert not (tmp_path / "m" / ".ome-download" / "partial" / SHARD).exists()


def test_wrong_bytes_once_are_fetched_again_and_verify(
    front: HubFront, tiny_repo: FixtureRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    front.faults.corrupt[SHARD] = (1234, 1)  # a bit flipped in transit, once
    out = run_download(
        monkeypatch, tmp_path, front.endpoint, f"hf://{tiny_repo.repo_id}", "--dest", str(tmp_path / "m")
    )
    assert out.code == 0, out.log
    assert [r.range for r in front.resolve_requests(SHARD)] == [None, None]  # the bad copy was not resumed
    assert hashlib.sha256((tmp_path / "m" / SHARD).read_bytes()).hexdigest() == tiny_repo.files[SHARD].sha256


def test_different_wrong_bytes_twice_fail_as_retryable(
    front: HubFront, tiny_repo: FixtureRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two different wrong digests look like a bad path, not a bad object: exit 1, the Job may retry."""
    front.faults.corrupt_varying[SHARD] = 2  # each response flips a different byte
    out = run_download(
        monkeypatch, tmp_path, front.endpoint, f"hf://{tiny_repo.repo_id}", "--dest", str(tmp_path / "m")
    )
    assert out.code == 1, out.log
    assert len(front.resolve_requests(SHARD)) == 2
    assert out.termination is not None and out.termination["permanent"] is False
    assert "different digests" in out.termination["error"]
    assert not (tmp_path / "m" / SHARD).exists()


def test_a_hub_answering_503_with_retry_after_for_a_while_is_waited_out(
    front: HubFront, tiny_repo: FixtureRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    front.faults.busy[SHARD] = (503, 3, "1")
    front.faults.busy["config.json"] = (429, 2, "1")
    out = run_download(
        monkeypatch, tmp_path, front.endpoint, f"hf://{tiny_repo.repo_id}", "--dest", str(tmp_path / "m")
    )
    assert out.code == 0, out.log
    tries = front.resolve_requests(SHARD)
    assert [r.status for r in tries] == [503, 503, 503, 200]
    gaps = [b.at - a.at for a, b in itertools.pairwise(tries)]
    assert all(g >= 1.0 for g in gaps), gaps  # never sooner than the hub asked
    assert [r.status for r in front.resolve_requests("config.json")] == [429, 429, 200]
    assert hashlib.sha256((tmp_path / "m" / SHARD).read_bytes()).hexdigest() == tiny_repo.files[SHARD].sha256


def test_a_connection_cut_mid_file_resumes_from_the_verified_offset(
    front: HubFront, tiny_repo: FixtureRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cut = 200_000
    front.faults.cut_after[SHARD] = (cut, 1)
    out = run_download(
        monkeypatch, tmp_path, front.endpoint, f"hf://{tiny_repo.repo_id}", "--dest", str(tmp_path / "m")
    )
    assert out.code == 0, out.log
    assert [r.range for r in front.resolve_requests(SHARD)] == [None, f"bytes={cut}-"]
    assert front.bytes_sent[SHARD] == tiny_repo.files[SHARD].size  # not one byte sent twice
    assert hashlib.sha256((tmp_path / "m" / SHARD).read_bytes()).hexdigest() == tiny_repo.files[SHARD].sha256


def small_fs_command(mountpoint: Path, size: int, argv: list[str], listing: Path, pidfile: Path) -> list[str]:
    """`argv` in its own user and mount namespace with a `size`-byte tmpfs on `mountpoint`: a disk
    that really fills up (ENOSPC), no root and no loop device needed. The tmpfs lives only as long
    as the namespace, so the wrapper records what is left on it before it goes."""
    script = (
        'mount -t tmpfs -o size="$1" tmpfs "$2" || exit 90; mp="$2"; ls="$3"; pf="$4"; shift 4; '
        '"$@" & child=$!; echo "$child" > "$pf"; wait "$child"; rc=$?; '
        'find "$mp" -type f -printf "%P %s\\n" > "$ls"; exit "$rc"'
    )
    return ["unshare", "-rm", "sh", "-c", script, "sh", str(size), str(mountpoint), str(listing), str(pidfile), *argv]


def download_argv(repo_id: str, dest: Path, term: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ome_operator.cli", "download", f"hf://{repo_id}", "--dest", str(dest),
            "--termination-log", str(term), *extra]  # fmt: skip


def hub_env(endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "KUBECONFIG")}
    env.update(HF_ENDPOINT=endpoint, HF_HUB_DISABLE_TELEMETRY="1")
    return env


def left_on_disk(listing: Path) -> dict[str, int]:
    rows = [line.rsplit(" ", 1) for line in listing.read_text().splitlines() if line]
    return {name: int(size) for name, size in rows}


def test_a_disk_too_small_for_the_model_fails_permanently_before_writing(
    front: HubFront, tiny_repo: FixtureRepo, tmp_path: Path
) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    dest, term, listing = mount / "model", tmp_path / "term.json", tmp_path / "left.txt"
    size = 256 << 10  # the tiny model is larger than this
    assert tiny_repo.total_bytes > size
    proc = subprocess.run(
        small_fs_command(mount, size, download_argv(tiny_repo.repo_id, dest, term), listing, tmp_path / "pid"),
        env=hub_env(front.endpoint), cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    result = json.loads(term.read_text())
    assert result["permanent"] is True
    assert f"not enough space in {dest}" in result["error"] and "still to write" in result["error"]
    assert front.resolve_requests() == []  # nothing fetched into a disk that cannot hold it
    assert not {n for n in left_on_disk(listing) if not n.startswith("model/.ome-download/")}


def test_a_disk_that_fills_up_mid_file_fails_permanently_naming_the_path_and_the_space(
    front: HubFront, make_repo: object, tmp_path: Path
) -> None:
    """The space is there at the start; another writer takes it while a shard is on its way."""
    repo: FixtureRepo = make_repo(  # type: ignore[operator]
        shards=[[Tensor("big", "BF16", (4 << 20,))], [Tensor("small", "BF16", (1024,))]]
    )
    front.repos[repo.repo_id] = repo
    big = "model-00001-of-00002.safetensors"
    front.faults.stall_after[big] = (5 << 20, 1)  # past the first 4 MiB write-buffer flush
    mount = tmp_path / "small"
    mount.mkdir()
    dest, term, listing, pidfile = mount / "model", tmp_path / "term.json", tmp_path / "left.txt", tmp_path / "pid"
    argv = download_argv(repo.repo_id, dest, term, "--stall-timeout", "2", "--workers", "1")
    proc = subprocess.Popen(
        small_fs_command(mount, 12 << 20, argv, listing, pidfile),
        env=hub_env(front.endpoint), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: front.resolve_requests(big), 30, "the big shard's request")
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "the downloader's pid")
        view = Path(f"/proc/{pidfile.read_text().strip()}/root") / mount.relative_to("/")
        on_disk = view / "model" / ".ome-download" / "partial" / big
        wait_for(lambda: on_disk.exists() and on_disk.stat().st_size >= 4 << 20, 30, "4 MiB of the shard on disk")
        with (view / "filler").open("wb") as filler:  # the other writer, inside the same tmpfs
            try:
                while True:
                    filler.write(b"\0" * (64 << 10))
                    filler.flush()
            except OSError:
                pass
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, stderr
    result = json.loads(term.read_text())
    assert result["permanent"] is True and result["file"] == big
    partial = dest / ".ome-download" / "partial" / big
    assert f"no space left writing {partial}" in result["error"], result["error"]
    assert "more needed for this file" in result["error"]
    left = left_on_disk(listing)
    assert f"model/{big}" not in left  # never under the final name
    assert 0 < left[f"model/.ome-download/partial/{big}"] < repo.files[big].size  # kept for a resume
