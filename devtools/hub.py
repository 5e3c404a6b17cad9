"""A local hub-compatible server: olah in offline mode serving local git repositories on 127.0.0.1.

How olah is set up (read from its source, olah 0.5.x):
- `[accessibility] offline = true` stops every upstream request (and the periodic upstream probe);
- `[basic] mirrors-path = [ROOT]` serves the git repository at `ROOT/models/<org>/<name>` for the
  model `<org>/<name>`; an LFS pointer blob (120-150 bytes) is served from
  `<repo>/.git/lfs/objects/<aa>/<bb>/<sha256>`, and the tree/paths-info APIs report its `lfs.oid`;
- `mirror-netloc`/`mirror-lfs-netloc` must be the address clients use, or redirects point elsewhere.
Repositories can be added to ROOT while the server runs: olah looks them up per request.
olah ignores `Range` and reads a whole LFS object into memory per GET, so the tests that need
ranges use their own small file server (tests/downloader/servers.py).

    python -m devtools.hub up     # start in the background, build a demo repository, print HF_ENDPOINT
    python -m devtools.hub down   # stop it
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from devtools.procs import free_port

STATE_DIR = Path(__file__).resolve().parent.parent / ".local" / "hub"
DEMO_REPO = "ome-fixtures/tiny-kimi"


class Hub:
    """olah on 127.0.0.1 over `root` (mirrors under `root/mirrors`, olah's own state beside it)."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.mirrors = root / "mirrors"
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        self.mirrors.mkdir(parents=True, exist_ok=True)
        netloc = f"127.0.0.1:{self.port}"
        config = self.root / "olah.toml"
        config.write_text(
            "[basic]\n"
            'host = "127.0.0.1"\n'
            f"port = {self.port}\n"
            f"repos-path = {json.dumps(str(self.root / 'olah-cache'))}\n"
            f"mirrors-path = [{json.dumps(str(self.mirrors))}]\n"
            'mirror-scheme = "http"\n'
            f'mirror-netloc = "{netloc}"\n'
            f'mirror-lfs-netloc = "{netloc}"\n'
            "\n[accessibility]\n"
            "offline = true\n"
        )
        return config

    def start(self, timeout: float = 30.0, detach: bool = False, die_with_parent: bool = False) -> None:
        config = self.write_config()
        log = (self.root / "olah.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "olah.server", "--config", str(config), "--log-path", str(self.root / "logs")],
            cwd=self.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=detach,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )
        log.close()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"olah exited with {self.proc.returncode}; see {self.root / 'olah.log'}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/api/models/none/none", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # any HTTP answer means the server is up
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"olah did not answer on {self.endpoint} within {timeout}s")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> Hub:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _die_with_parent() -> None:
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


CATALOG = Path(__file__).resolve().parent.parent / "config" / "models"


def build_cluster_repos(mirrors: Path, catalog: Path = CATALOG) -> dict[str, str]:
    """The repositories a local cluster's hub serves: OME's Kimi K2 (devtools.fixtures) and one per
    `hf://` entry of the model catalog, carrying that entry's facts. Returns repo id -> commit."""
    import yaml

    from devtools.fixtures import KIMI_K2_REPO, build_kimi_k2_repo, build_repo, catalog_config

    commits = {KIMI_K2_REPO: build_kimi_k2_repo(mirrors).commit}
    for path in sorted(catalog.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            spec = (doc or {}).get("spec") or {}
            uri = str((spec.get("storage") or {}).get("storageUri") or "")
            if not uri.startswith("hf://"):
                continue
            repo_id = uri.removeprefix("hf://").partition("@")[0]
            if repo_id not in commits:
                commits[repo_id] = build_repo(mirrors, repo_id, config=catalog_config(spec), seed=len(commits)).commit
    return commits


def served_digests(repo_dir: Path) -> dict[str, str]:
    """path -> sha256 of every file the hub serves for the repository at `repo_dir` (LFS objects by
    their pointer's oid, other files by their bytes), read from the git working tree."""
    import hashlib

    out = {}
    for path in sorted(p for p in repo_dir.rglob("*") if p.is_file() and ".git" not in p.relative_to(repo_dir).parts):
        data = path.read_bytes()
        head = data[:200]
        if head.startswith(b"version https://git-lfs.github.com/spec/v1"):
            oid = next(line for line in data.decode().splitlines() if line.startswith("oid sha256:"))
            out[str(path.relative_to(repo_dir))] = oid.removeprefix("oid sha256:")
        else:
            out[str(path.relative_to(repo_dir))] = hashlib.sha256(data).hexdigest()
    return out


def up() -> int:
    from devtools.fixtures import build_repo

    state = STATE_DIR / "state.json"
    if state.exists():
        print(f"hub already running: {json.loads(state.read_text())['endpoint']} (make hub-down first)")
        return 1
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    hub = Hub(STATE_DIR)
    hub.mirrors.mkdir(parents=True, exist_ok=True)
    repo = build_repo(hub.mirrors, DEMO_REPO)
    hub.start(detach=True)
    assert hub.proc is not None
    state.write_text(json.dumps({"pid": hub.proc.pid, "endpoint": hub.endpoint, "root": str(STATE_DIR)}))
    print(f"hub up: pid {hub.proc.pid}, mirrors in {hub.mirrors}")
    print(f"export HF_ENDPOINT={hub.endpoint}")
    print(f"try:   ome-operator download hf://{DEMO_REPO}@{repo.commit[:12]} --dest /tmp/tiny-kimi")
    return 0


def down() -> int:
    state = STATE_DIR / "state.json"
    if not state.exists():
        print("hub not running")
        return 0
    pid = int(json.loads(state.read_text())["pid"])
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    state.unlink()
    print(f"hub down (pid {pid})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.hub")
    parser.add_argument("action", choices=["up", "down"])
    args = parser.parse_args(argv)
    return up() if args.action == "up" else down()


if __name__ == "__main__":
    sys.exit(main())
