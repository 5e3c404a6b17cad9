"""Fetching one file: streamed to a partial file, hashed in the same pass, renamed when verified.

The invariants, per file:
- bytes land in `<dest>/.ome-download/partial/<path>`; the final name exists only after the
  complete file's digest matched the listing (sha256 for LFS objects, git blob sha1 otherwise);
- a partial left by an earlier run is re-hashed from disk and continued with `Range`; a server
  that ignores `Range` (answers 200) is read from the start instead, on the same response;
- a connection that delivers no byte for `stall_timeout` seconds is abandoned and retried from
  where it stopped; 429/5xx are retried after Retry-After or an exponential backoff;
- a digest mismatch deletes the partial and counts as a failed attempt; when the retry budget is
  spent the file's name and the last reason are reported.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import httpx

from ome_operator.downloader.listing import RemoteFile
from ome_operator.downloader.manifest import ManifestWriter, StreamHasher, hash_prefix, partial_path
from ome_operator.downloader.progress import Progress
from ome_operator.downloader.report import human_bytes
from ome_operator.downloader.retry import Attempts, FatalError, TransientError, status_error

LOG = logging.getLogger("ome_operator.downloader")

WRITE_BUFFER = 4 << 20
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class FetchFailed(Exception):
    def __init__(self, path: str, reason: str, permanent: bool = False) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.permanent = permanent  # retrying the Job will not help (not found, no access, local I/O)


class Cancelled(Exception):
    """Another file failed; stop early and leave the partial for the next run to resume."""


class HashMismatch(TransientError):
    pass


@dataclass(frozen=True)
class FetchSettings:
    endpoint: str
    repo_id: str
    commit: str
    stall_timeout: float
    max_retries: int

    def url(self, path: str) -> str:
        return f"{self.endpoint.rstrip('/')}/{self.repo_id}/resolve/{self.commit}/{urllib.parse.quote(path)}"


def make_client(token: str | None, stall_timeout: float, workers: int, user_agent: str) -> httpx.Client:
    headers = {"user-agent": user_agent, "accept-encoding": "identity"}
    if token:
        # httpx drops Authorization on redirects to another origin (the hub's CDN URLs are signed).
        headers["authorization"] = f"Bearer {token}"
    return httpx.Client(
        headers=headers,
        follow_redirects=True,
        # read= is the stall timeout: the longest wait for the next bytes of a response.
        timeout=httpx.Timeout(stall_timeout, pool=None),
        limits=httpx.Limits(max_connections=workers * 2, max_keepalive_connections=workers),
    )


def parse_content_range_start(value: str | None) -> int | None:
    match = _CONTENT_RANGE.match((value or "").strip())
    return int(match.group(1)) if match else None


class _Partial:
    """The partial file on disk and the hash of exactly the bytes it holds."""

    def __init__(self, path: Path, expected: RemoteFile, hasher: StreamHasher, have: int) -> None:
        self.path, self.expected, self.hasher, self.have = path, expected, hasher, have

    def restart(self, progress: Progress) -> None:
        progress.discarded(self.have)
        self.hasher, self.have = StreamHasher(self.expected), 0
        with self.path.open("wb"):
            pass

    def discard(self, progress: Progress) -> None:
        progress.discarded(self.have)
        self.path.unlink(missing_ok=True)


class Fetcher:
    def __init__(
        self,
        client: httpx.Client,
        settings: FetchSettings,
        dest: Path,
        progress: Progress,
        manifest: ManifestWriter,
        cancel: threading.Event,
    ) -> None:
        self._client = client
        self._s = settings
        self._dest = dest
        self._progress = progress
        self._manifest = manifest
        self._cancel = cancel

    def fetch(self, f: RemoteFile) -> None:
        """Bring `f` into place verified, or raise FetchFailed / Cancelled."""
        final = self._dest / f.path
        attempts = Attempts(self._s.max_retries)
        state: _Partial | None = None
        while True:
            if self._cancel.is_set():
                raise Cancelled()
            try:
                if state is None:
                    state = self._open_partial(f, partial_path(self._dest, f.path))
                if state.have < f.size:
                    self._stream_rest(f, state)
                digest = state.hasher.hexdigest()
                if digest != f.expected_digest:
                    raise HashMismatch(f"{f.hash_kind} mismatch: the hub lists {f.expected_digest}, received {digest}")
                self._place(state.path, final)
                self._manifest.record(f.path, f, final)
                self._progress.file_done()
                return
            except TransientError as exc:
                if isinstance(exc, HashMismatch) and state is not None:
                    state.discard(self._progress)  # never keep bytes that failed verification
                    state = None
                delay = attempts.next_delay(exc)
                if delay is None:
                    raise FetchFailed(
                        f.path, f"gave up after {self._s.max_retries} retries; last error: {exc}"
                    ) from None
                LOG.warning("%s: %s; retry %d/%d in %.1fs", f.path, exc, attempts.used, self._s.max_retries, delay)
                if self._cancel.wait(delay):
                    raise Cancelled() from None
            except FatalError as exc:
                raise FetchFailed(f.path, str(exc), permanent=True) from None
            except OSError as exc:
                # Local I/O (disk full, permissions) is not something a retry fixes.
                raise FetchFailed(f.path, f"local I/O error: {exc}", permanent=True) from None

    def _open_partial(self, f: RemoteFile, path: Path) -> _Partial:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            have = path.stat().st_size
        except FileNotFoundError:
            have = 0
        if have > f.size:
            LOG.warning("%s: partial file is larger than the listed size; starting over", f.path)
            have = 0
        if have == 0:
            with path.open("wb"):
                pass
            return _Partial(path, f, StreamHasher(f), 0)
        hasher = hash_prefix(path, f, have)
        self._progress.rehashed(hasher.fed)
        LOG.info("%s: resuming at %s of %s (prefix re-hashed)", f.path, human_bytes(have), human_bytes(f.size))
        return _Partial(path, f, hasher, hasher.fed)

    def _stream_rest(self, f: RemoteFile, state: _Partial) -> None:
        headers = {"range": f"bytes={state.have}-"} if state.have else {}
        try:
            with self._client.stream("GET", self._s.url(f.path), headers=headers) as response:
                self._accept_response(f, state, response)
                with state.path.open("r+b", buffering=WRITE_BUFFER) as out:
                    out.seek(state.have)
                    out.truncate()
                    for chunk in response.iter_bytes():
                        if state.have + len(chunk) > f.size:
                            raise HashMismatch(f"the server sent more than the listed {f.size} bytes")
                        out.write(chunk)
                        state.hasher.update(chunk)
                        state.have += len(chunk)
                        self._progress.received(len(chunk))
                        if self._cancel.is_set():
                            raise Cancelled()
        except httpx.TimeoutException:
            raise TransientError(
                f"stalled: no data for {self._s.stall_timeout:g}s at {human_bytes(state.have)}"
            ) from None
        except httpx.TransportError as exc:
            raise TransientError(f"connection error at {human_bytes(state.have)}: {type(exc).__name__}") from None
        if state.have < f.size:
            raise TransientError(f"connection closed at {state.have} of {f.size} bytes")

    def _accept_response(self, f: RemoteFile, state: _Partial, response: httpx.Response) -> None:
        status = response.status_code
        if status == 206 and state.have:
            start = parse_content_range_start(response.headers.get("content-range"))
            if start != state.have:
                state.restart(self._progress)
                raise TransientError(f"the server resumed at byte {start}, not {state.have}; starting over")
        elif status == 200:
            if state.have:
                LOG.info("%s: the server ignored Range; reading from the start", f.path)
                state.restart(self._progress)
        else:
            raise status_error(status, response.headers, f.path)
        length = response.headers.get("content-length")
        if length is not None and length.isdigit() and state.have + int(length) != f.size:
            raise HashMismatch(f"the server offers {state.have + int(length)} bytes, the listing says {f.size}")

    def _place(self, partial: Path, final: Path) -> None:
        # fsync before rename: the manifest will vouch for this file without reading it again,
        # so its bytes must be on disk before its name is.
        with partial.open("rb") as fd:
            os.fsync(fd.fileno())
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, final)
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
