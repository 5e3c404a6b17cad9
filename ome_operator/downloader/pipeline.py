"""The two ways a model reaches a node: downloaded from a hub, or validated where it already is.

`download_hf`: resolve and list once, then per file decide between "trusted from the manifest"
(no I/O beyond a stat), "present but unrecorded" (hash it in place), and "fetch" (stream, hash,
rename); run the hashing and fetching in a thread pool (hashlib and socket reads release the GIL),
largest files first so the tail of the download is not one big file on one thread.
`validate_mounted`: for local:// and pvc:// nothing is copied; the directory must hold a config
and weights whose safetensors headers agree with their sizes.
Both return the summary that becomes the termination message.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from ome_operator.downloader.fetch import (
    Cancelled,
    Fetcher,
    FetchFailed,
    FetchSettings,
    Source,
    SourceFailed,
    make_client,
)
from ome_operator.downloader.kubeapi import KubeTarget
from ome_operator.downloader.listing import PICKLE_SUFFIXES, Listing, RemoteFile, list_repository
from ome_operator.downloader.manifest import (
    STATE_DIR,
    ManifestWriter,
    hash_prefix,
    load_manifest,
    partial_path,
)
from ome_operator.downloader.metadata import extract_metadata, weight_files
from ome_operator.downloader.peer import CooperativeQueue, Coordinator
from ome_operator.downloader.peer_board import Board
from ome_operator.downloader.peer_server import PeerServer
from ome_operator.downloader.progress import Progress
from ome_operator.downloader.report import human_bytes

LOG = logging.getLogger("ome_operator.downloader")


class DeliveryError(Exception):
    """The model is not in place. `permanent` failures (bad input, no access, no space) will not
    be fixed by running the Job again; the others (network, verification) may be."""

    def __init__(self, message: str, *, permanent: bool, file: str | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.file = file


@dataclass(frozen=True)
class HfRequest:
    repo_id: str
    revision: str
    dest: Path
    endpoint: str
    token: str | None
    workers: int
    allow_pickle: bool
    stall_timeout: float
    max_retries: int
    user_agent: str
    peers: PeerSettings | None = None


@dataclass(frozen=True)
class PeerSettings:
    """Sharing files with the model's other download Jobs (downloader/peer.py)."""

    target: KubeTarget
    namespace: str
    configmap: str
    node: str
    address: str
    port: int
    linger: float


class FileQueue(Protocol):
    """Hands files to the workers, each with the source to fetch it from (None: the hub)."""

    def take(self, cancel: threading.Event) -> tuple[RemoteFile, Source | None] | None: ...
    def retry(self, f: RemoteFile, source_name: str) -> None: ...
    def done(self, f: RemoteFile) -> None: ...
    def abandon(self, f: RemoteFile) -> None: ...


class HubQueue:
    """Every file from the hub, in the order given."""

    def __init__(self, files: list[RemoteFile]) -> None:
        self._files = list(files)
        self._lock = threading.Lock()

    def take(self, cancel: threading.Event) -> tuple[RemoteFile, Source | None] | None:
        with self._lock:
            return (self._files.pop(0), None) if self._files and not cancel.is_set() else None

    def retry(self, f: RemoteFile, source_name: str) -> None:
        raise AssertionError("the hub is not a secondary source")

    def done(self, f: RemoteFile) -> None:
        pass

    def abandon(self, f: RemoteFile) -> None:
        pass


def download_hf(req: HfRequest, progress: Progress) -> dict[str, Any]:
    started = time.monotonic()
    listing = list_repository(req.endpoint, req.token, req.repo_id, req.revision, req.allow_pickle, req.max_retries)
    LOG.info(
        "%s@%s is commit %s: %d files, %s (%d skipped)",
        req.repo_id, req.revision, listing.commit, len(listing.files),
        human_bytes(listing.total_bytes), len(listing.skipped),
    )  # fmt: skip
    for path, reason in sorted(listing.skipped.items()):
        LOG.info("skipping %s: %s", path, reason)
    progress.set_plan(len(listing.files), listing.total_bytes, listing.commit)
    progress.set_phase("Downloading")
    req.dest.mkdir(parents=True, exist_ok=True)
    writer = ManifestWriter(req.dest, load_manifest(req.dest))
    remove_stale_files(req.dest, listing, writer)

    todo: list[RemoteFile] = []
    for f in sorted(listing.files, key=lambda f: f.size, reverse=True):
        entry = writer.manifest.files.get(f.path)
        st = _stat(req.dest / f.path)
        if entry is not None and st is not None and entry.still_valid(f, st):
            progress.file_done(untracked_bytes=f.size)
        else:
            todo.append(f)
    reused = len(listing.files) - len(todo)
    coordinator = start_peers(req, listing, todo)
    succeeded = False
    try:
        if todo:
            LOG.info("%d files already verified (manifest); %d to verify or fetch", reused, len(todo))
            check_free_space(req.dest, todo)
            queue: FileQueue = CooperativeQueue(coordinator, todo) if coordinator else HubQueue(todo)
            run_pool(req, listing.commit, queue, progress, writer)
        else:
            LOG.info("all %d files already verified (manifest); nothing to fetch", reused)
        succeeded = True
    finally:
        if coordinator is not None:
            if succeeded:
                progress.set_phase("Downloading", "all files verified; serving the nodes still downloading")
            coordinator.finish(succeeded)

    complete_before = writer.manifest.complete and writer.manifest.commit == listing.commit
    if todo or not complete_before:
        writer.finish(req.repo_id, listing.commit, complete=True)
    metadata = extract_metadata(req.dest)
    return {
        "status": "Succeeded",
        "repo": req.repo_id,
        "revision": req.revision,
        "commit": listing.commit,
        "path": str(req.dest),
        "files": len(listing.files),
        "bytes": listing.total_bytes,
        "filesReused": reused,
        "bytesTransferred": progress.transferred,
        "bytesHashed": progress.hashed,
        "seconds": round(time.monotonic() - started, 2),
        "verification": "sha256 (LFS) / git-sha1 (others), every file",
        "skippedFiles": sorted(listing.skipped),
        "tensorDtypes": metadata.tensor_dtypes,
        "metadata": metadata.to_json(),
    }


def remove_stale_files(dest: Path, listing: Listing, writer: ManifestWriter) -> None:
    """Files this downloader wrote for an earlier revision and that the new one no longer has:
    left in place, an engine that globs *.safetensors would load a stale shard."""
    wanted = {f.path for f in listing.files}
    for rel in [p for p in writer.manifest.files if p not in wanted]:
        LOG.info("removing %s: not part of commit %s", rel, listing.commit[:12])
        (dest / rel).unlink(missing_ok=True)
        writer.forget(rel)


def check_free_space(dest: Path, todo: list[RemoteFile]) -> None:
    needed = 0
    for f in todo:
        have = _stat(partial_path(dest, f.path))
        needed += f.size - (have.st_size if have is not None else 0)
        existing = _stat(dest / f.path)  # an unrecorded copy that may verify needs no new space
        if existing is not None and existing.st_size == f.size:
            needed -= f.size
    free = shutil.disk_usage(dest).free
    if needed > free:
        raise DeliveryError(
            f"not enough space in {dest}: {human_bytes(needed)} still to write, {human_bytes(free)} free",
            permanent=True,
        )


def start_peers(req: HfRequest, listing: Listing, todo: list[RemoteFile]) -> Coordinator | None:
    """Join the model's other Jobs on the board, or None (no peers configured, or they cannot be)."""
    peers = req.peers
    if peers is None:
        return None
    try:
        server = PeerServer(req.dest, listing.commit, peers.address, peers.port).start()
    except OSError as exc:
        LOG.warning(
            "peer sharing off: cannot listen on %s:%d (%s); fetching from the hub", peers.address, peers.port, exc
        )
        return None
    board = Board(peers.target, peers.namespace, peers.configmap)
    # No hub token on this client: peers get only the per-peer token from the board.
    client = make_client(None, req.stall_timeout, req.workers, req.user_agent)
    coordinator = Coordinator(board, peers.node, server, listing.commit, client, peers.linger)
    if not coordinator.start(listing.files, [f.path for f in listing.files if f not in todo]):
        LOG.warning("peer sharing off: could not set up the claims in %s/%s", peers.namespace, peers.configmap)
        coordinator.close()
        return None
    LOG.info("sharing files with the model's other nodes: serving on %s", server.url)
    return coordinator


def run_pool(req: HfRequest, commit: str, queue: FileQueue, progress: Progress, writer: ManifestWriter) -> None:
    settings = FetchSettings(req.endpoint, req.repo_id, commit, req.stall_timeout, req.max_retries)
    cancel = threading.Event()
    with make_client(req.token, req.stall_timeout, req.workers, req.user_agent) as client:
        fetcher = Fetcher(client, settings, req.dest, progress, writer, cancel)

        def work() -> None:
            try:
                while True:
                    asked = time.monotonic()
                    if (task := queue.take(cancel)) is None:
                        break
                    f, source = task
                    took = time.monotonic()
                    try:
                        bring_into_place(f, req.dest, partial(fetcher.fetch, source=source), progress, writer)
                        LOG.debug(
                            "%s: from %s after waiting %.2f s for a source, in %.2f s",
                            f.path, source.name if source else "the hub", took - asked, time.monotonic() - took,
                        )  # fmt: skip
                    except SourceFailed as exc:
                        LOG.warning("%s: %s; trying another source", f.path, exc)
                        queue.retry(f, exc.source)
                        continue
                    except BaseException:
                        queue.abandon(f)
                        raise
                    queue.done(f)
            except BaseException:
                cancel.set()  # the others stop at their next chunk, leaving partials to resume
                raise

        with ThreadPoolExecutor(max_workers=req.workers, thread_name_prefix="fetch") as pool:
            futures: list[Future[None]] = [pool.submit(work) for _ in range(req.workers)]
            wait(futures)
    failures = [e for fut in futures if isinstance(e := fut.exception(), FetchFailed)]
    others = [e for fut in futures if (e := fut.exception()) is not None and not isinstance(e, FetchFailed | Cancelled)]
    if others:
        raise others[0]
    if failures:
        first = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise DeliveryError(f"{first.path}: {first.reason}{more}", permanent=first.permanent, file=first.path)


def bring_into_place(
    f: RemoteFile, dest: Path, fetch: Callable[[RemoteFile], None], progress: Progress, writer: ManifestWriter
) -> None:
    final = dest / f.path
    st = _stat(final)
    if st is not None:
        # Present but not vouched for by the manifest (copied in, touched, or from another tool):
        # a matching hash saves the transfer; anything else must not keep the final name.
        entry = writer.manifest.files.get(f.path)
        if entry is not None and entry.same_stat(st):
            # Unchanged since we verified it against another digest: an older revision's file.
            LOG.info("%s: changed in this revision; fetching the new version", f.path)
        elif st.st_size == f.size:
            hasher = hash_prefix(final, f, f.size)
            good = hasher.fed == f.size and hasher.hexdigest() == f.expected_digest
            progress.rehashed(hasher.fed, good=good)
            if good:
                writer.record(f.path, f, final)
                progress.file_done()
                return
            LOG.warning("%s: the copy on disk does not match the hub's %s; fetching it again", f.path, f.hash_kind)
        else:
            LOG.warning("%s: the copy on disk has the wrong size; fetching it again", f.path)
        final.unlink()
        writer.forget(f.path)
    fetch(f)


def validate_mounted(model_dir: Path, allow_pickle: bool, progress: Progress) -> dict[str, Any]:
    """local:// and pvc://: nothing to copy; the directory must be a usable model."""
    started = time.monotonic()
    if not model_dir.exists():
        raise DeliveryError(f"{model_dir} does not exist on this node", permanent=True)
    if not model_dir.is_dir():
        raise DeliveryError(f"{model_dir} is not a directory", permanent=True)
    progress.set_phase("Validating")
    files = [p for p in model_dir.rglob("*") if p.is_file() and STATE_DIR not in p.relative_to(model_dir).parts]
    total = sum(p.stat().st_size for p in files)
    progress.set_plan(len(files), total, None)
    if not (model_dir / "config.json").is_file():
        raise DeliveryError(f"{model_dir} has no config.json", permanent=True)
    if not weight_files(model_dir):
        pickled = [p.name for p in files if p.name.lower().endswith(PICKLE_SUFFIXES)]
        if not pickled:
            raise DeliveryError(f"{model_dir} has no *.safetensors weights", permanent=True)
        if not allow_pickle:
            raise DeliveryError(
                f"{model_dir} has only pickle weights ({pickled[0]}); opt in with --allow-pickle", permanent=True
            )
    metadata = extract_metadata(model_dir)  # parses every header: catches truncated copies
    progress.all_done()
    return {
        "status": "Succeeded",
        "path": str(model_dir),
        "files": len(files),
        "bytes": total,
        "bytesTransferred": 0,
        "seconds": round(time.monotonic() - started, 2),
        "verification": "config.json present; safetensors headers consistent with file sizes",
        "tensorDtypes": metadata.tensor_dtypes,
        "metadata": metadata.to_json(),
    }


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None
