"""The record of what is verified on disk, and the hashes that verify it.

Re-hashing 1 TB costs 5-20 minutes per node, so a file verified once is not hashed again: the
manifest (`<dest>/.ome-download/manifest.json`) records, per file, the hash it was verified
against and the size, mtime and inode it had right after it was renamed into place. A later run
trusts a file only if the listing still expects that same hash and the file's stat is unchanged;
anything else (a touched, replaced or truncated file) is hashed again. The manifest is rewritten
after every file, so a crash loses at most the files in flight.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ome_operator.downloader.listing import RemoteFile

LOG = logging.getLogger("ome_operator.downloader")

STATE_DIR = ".ome-download"
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
HASH_BLOCK = 4 << 20


class StreamHasher:
    """The digest a file is checked against, fed as bytes arrive.

    LFS files are checked against the object's sha256. Small files have only a git blob id,
    sha1 over `blob <size>\\0` + content; the size is known from the listing, so the prefix can
    be fed before the first byte arrives.
    """

    def __init__(self, expected: RemoteFile) -> None:
        self.kind = expected.hash_kind
        if expected.sha256:
            self._h = hashlib.sha256()
        else:
            self._h = hashlib.sha1(usedforsecurity=False)
            self._h.update(b"blob %d\0" % expected.size)
        self.fed = 0

    def update(self, data: bytes | memoryview) -> None:
        self._h.update(data)
        self.fed += len(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def hash_prefix(path: Path, expected: RemoteFile, length: int) -> StreamHasher:
    """Hash the first `length` bytes of `path` (a partial download being resumed, or a whole file)."""
    hasher = StreamHasher(expected)
    left = length
    with path.open("rb", buffering=0) as f:
        buf = bytearray(HASH_BLOCK)
        view = memoryview(buf)
        while left > 0:
            n = f.readinto(view[: min(HASH_BLOCK, left)])
            if not n:
                break
            hasher.update(view[:n])
            left -= n
    return hasher


@dataclass
class ManifestEntry:
    size: int
    hashKind: str
    digest: str
    mtimeNs: int
    inode: int

    def same_stat(self, st: os.stat_result) -> bool:
        return self.size == st.st_size and self.mtimeNs == st.st_mtime_ns and self.inode == st.st_ino

    def still_valid(self, expected: RemoteFile, st: os.stat_result) -> bool:
        return (
            self.digest == expected.expected_digest
            and self.hashKind == expected.hash_kind
            and self.size == expected.size
            and self.same_stat(st)
        )


@dataclass
class Manifest:
    repo: str = ""
    commit: str = ""
    complete: bool = False
    files: dict[str, ManifestEntry] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "repo": self.repo,
            "commit": self.commit,
            "complete": self.complete,
            "files": {p: asdict(e) for p, e in sorted(self.files.items())},
        }


def state_dir(dest: Path) -> Path:
    return dest / STATE_DIR


def partial_path(dest: Path, rel: str) -> Path:
    # Partials live in the state directory, never under a name an engine might glob for.
    return state_dir(dest) / "partial" / rel


def load_manifest(dest: Path) -> Manifest:
    path = state_dir(dest) / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("version") != MANIFEST_VERSION:
            raise ValueError(f"version {raw.get('version')!r}")
        return Manifest(
            repo=str(raw["repo"]),
            commit=str(raw["commit"]),
            complete=bool(raw.get("complete")),
            files={p: ManifestEntry(**e) for p, e in raw["files"].items()},
        )
    except FileNotFoundError:
        return Manifest()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # An unreadable manifest costs a re-hash, never a wrong answer.
        LOG.warning("ignoring unreadable manifest %s (%s); files will be re-verified", path, exc)
        return Manifest()


class ManifestWriter:
    """Thread-safe updates, each persisted atomically (write a temp file, fsync, rename)."""

    def __init__(self, dest: Path, manifest: Manifest) -> None:
        self._dest = dest
        self._lock = threading.Lock()
        self.manifest = manifest

    def record(self, rel: str, expected: RemoteFile, final: Path) -> None:
        st = final.stat()
        entry = ManifestEntry(expected.size, expected.hash_kind, expected.expected_digest, st.st_mtime_ns, st.st_ino)
        with self._lock:
            self.manifest.files[rel] = entry
            self._save()

    def forget(self, rel: str) -> None:
        with self._lock:
            if self.manifest.files.pop(rel, None) is not None:
                self._save()

    def finish(self, repo: str, commit: str, complete: bool) -> None:
        with self._lock:
            self.manifest.repo, self.manifest.commit, self.manifest.complete = repo, commit, complete
            self._save()

    def _save(self) -> None:
        directory = state_dir(self._dest)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (MANIFEST_NAME + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(self.manifest.to_json(), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / MANIFEST_NAME)
