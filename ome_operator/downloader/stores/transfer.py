"""One object onto disk, verified: the same invariants as an hf:// file (see `downloader.fetch`).

Bytes land in the partial file under `<dest>/.ome-download/partial/`; the final name appears only
after the store's checksum matched; a partial left by a killed run is re-hashed and continued with
`Range`; a stalled or dropped connection, 429 and 5xx are retried with backoff (Retry-After when
given); a checksum mismatch discards the partial and counts as a failed attempt.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import httpx

from ome_operator.downloader.fetch import parse_content_range_start
from ome_operator.downloader.manifest import ManifestWriter, partial_path
from ome_operator.downloader.progress import Progress
from ome_operator.downloader.report import human_bytes
from ome_operator.downloader.retry import RETRYABLE_STATUS, Attempts, TransientError, parse_retry_after
from ome_operator.downloader.stores.common import StoreFile, StoreHasher, hash_file_prefix

LOG = logging.getLogger("ome_operator.downloader")
WRITE_BUFFER = 4 << 20


class ObjectFailed(Exception):
    def __init__(self, path: str, reason: str, permanent: bool = False) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason, self.permanent = path, reason, permanent


class Stopped(Exception):
    """Another object failed; leave this partial for the next run."""


class Mismatch(TransientError):
    pass


class Store(Protocol):
    """What transfer needs from a store: a signed ranged GET, and a way to describe refusals."""

    name: str

    def get_request(self, f: StoreFile, start: int) -> httpx.Request: ...

    def describe_status(self, status: int, what: str) -> str: ...


def status_failure(store: Store, response: httpx.Response, what: str) -> Exception:
    status = response.status_code
    if status in RETRYABLE_STATUS:
        return TransientError(f"HTTP {status} for {what}", parse_retry_after(response.headers.get("retry-after")))
    if status == 416:
        return TransientError(f"HTTP 416 for {what}: the store rejected the resume offset")
    # 412: the object changed since it was listed; a new run lists it again, so not permanent.
    return ObjectFailed(what, store.describe_status(status, what), permanent=status != 412)


class ObjectFetcher:
    def __init__(
        self,
        store: Store,
        client: httpx.Client,
        dest: Path,
        progress: Progress,
        manifest: ManifestWriter,
        cancel: threading.Event,
        max_retries: int,
        stall_timeout: float,
        place: Callable[[Path, Path], None],
    ) -> None:
        self._store, self._client, self._dest = store, client, dest
        self._progress, self._manifest, self._cancel = progress, manifest, cancel
        self._max_retries, self._stall = max_retries, stall_timeout
        self._place = place

    def fetch(self, f: StoreFile) -> None:
        attempts = Attempts(self._max_retries)
        partial = partial_path(self._dest, f.path)
        hasher: StoreHasher | None = None
        while True:
            if self._cancel.is_set():
                raise Stopped()
            try:
                if hasher is None:
                    hasher = self._open_partial(f, partial)
                if hasher.fed < f.size:
                    hasher = self._stream_rest(f, partial, hasher)
                digest = hasher.hexdigest()
                if digest != f.digest:
                    raise Mismatch(f"{f.digest_kind} mismatch: the store lists {f.digest}, received {digest}")
                final = self._dest / f.path
                self._place(partial, final)
                self._manifest.record(f.path, f, final)
                self._progress.file_done()
                return
            except TransientError as exc:
                if isinstance(exc, Mismatch) and hasher is not None:
                    self._progress.discarded(hasher.fed)  # never keep bytes that failed verification
                    partial.unlink(missing_ok=True)
                    hasher = None
                delay = attempts.next_delay(exc)
                if delay is None:
                    raise ObjectFailed(
                        f.path, f"gave up after {self._max_retries} retries; last error: {exc}"
                    ) from None
                LOG.warning("%s: %s; retry %d/%d in %.1fs", f.path, exc, attempts.used, self._max_retries, delay)
                if self._cancel.wait(delay):
                    raise Stopped() from None
            except OSError as exc:
                raise ObjectFailed(f.path, f"local I/O error: {exc}", permanent=True) from None

    def _open_partial(self, f: StoreFile, path: Path) -> StoreHasher:
        path.parent.mkdir(parents=True, exist_ok=True)
        have = path.stat().st_size if path.exists() else 0
        if have > f.size:
            LOG.warning("%s: partial file is larger than the listed size; starting over", f.path)
            have = 0
        if have == 0:
            with path.open("wb"):
                pass
            return StoreHasher(f)
        hasher = hash_file_prefix(path, f, have)
        self._progress.rehashed(hasher.fed)
        LOG.info("%s: resuming at %s of %s (prefix re-hashed)", f.path, human_bytes(have), human_bytes(f.size))
        return hasher

    def _restart(self, path: Path, hasher: StoreHasher) -> StoreHasher:
        self._progress.discarded(hasher.fed)
        with path.open("wb"):
            pass
        return StoreHasher(hasher.f)

    def _stream_rest(self, f: StoreFile, path: Path, hasher: StoreHasher) -> StoreHasher:
        try:
            response = self._client.send(self._store.get_request(f, hasher.fed), stream=True)
            try:
                status = response.status_code
                if status == 206 and hasher.fed:
                    start = parse_content_range_start(response.headers.get("content-range"))
                    if start != hasher.fed:
                        hasher = self._restart(path, hasher)
                        raise TransientError(f"the store resumed at byte {start}, not where we stopped; starting over")
                elif status == 200:
                    if hasher.fed:
                        LOG.info("%s: the store ignored Range; reading from the start", f.path)
                        hasher = self._restart(path, hasher)
                else:
                    raise status_failure(self._store, response, f.key)
                with path.open("r+b", buffering=WRITE_BUFFER) as out:
                    out.seek(hasher.fed)
                    out.truncate()
                    for chunk in response.iter_bytes():
                        if hasher.fed + len(chunk) > f.size:
                            raise Mismatch(f"the store sent more than the listed {f.size} bytes")
                        out.write(chunk)
                        hasher.update(chunk)
                        self._progress.received(len(chunk))
                        if self._cancel.is_set():
                            raise Stopped()
            finally:
                response.close()
        except httpx.TimeoutException:
            raise TransientError(f"stalled: no data for {self._stall:g}s at {human_bytes(hasher.fed)}") from None
        except httpx.TransportError as exc:
            raise TransientError(f"connection error at {human_bytes(hasher.fed)}: {type(exc).__name__}") from None
        if hasher.fed < f.size:
            raise TransientError(f"connection closed at {hasher.fed} of {f.size} bytes")
        return hasher


def place_file(partial: Path, final: Path) -> None:
    # fsync before rename: the manifest vouches for this file later without reading it again.
    with partial.open("rb") as fd:
        os.fsync(fd.fileno())
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, final)
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
