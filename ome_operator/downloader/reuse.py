"""`downloadPolicy: ReuseIfExists`: take identical files from another model's copy on this node.

The operator mounts (read-only) the directory of another model that is Ready on this node with the
same source repository, and passes it as `--reuse-from`. Before anything is fetched, every file that
copy's manifest vouches for (a complete download of the same repository, the file unchanged since it
was verified) is hard-linked into this model's directory (copied when the two directories are
different mounts). Nothing is trusted because of where it came from: the download that follows hashes
every such file against the hub's listing for this model's revision, keeps it only on a match, and
fetches the rest from the hub. So only identical artifacts (same source, revision and file digests)
are reused, and the hub serves only what differs.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ome_operator.downloader.manifest import STATE_DIR, load_manifest

LOG = logging.getLogger("ome_operator.downloader")


@dataclass
class Seeded:
    source: Path
    files: int = 0
    bytes: int = 0
    linked: int = 0


def seed_from(source: Path, dest: Path, repo_id: str) -> Seeded:
    """Link or copy `source`'s verified files of `repo_id` into `dest` (files already there stay)."""
    seeded = Seeded(source)
    manifest = load_manifest(source)
    if manifest.repo != repo_id or not manifest.complete:
        LOG.info("reuse: %s holds no complete copy of %s; downloading everything", source, repo_id)
        return seeded
    for rel, entry in sorted(manifest.files.items()):
        src, dst = source / rel, dest / rel
        if STATE_DIR in Path(rel).parts or dst.exists():
            continue
        try:
            st = src.stat()
        except OSError:
            continue
        if not entry.same_stat(st):
            continue  # changed since it was verified there: not vouched for
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
            seeded.linked += 1
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            shutil.copyfile(src, dst)
        seeded.files += 1
        seeded.bytes += st.st_size
    LOG.info(
        "reuse: %d files (%d bytes) taken from %s (%d hard links); each is verified before it counts",
        seeded.files,
        seeded.bytes,
        source,
        seeded.linked,
    )
    return seeded
