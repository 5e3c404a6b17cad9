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

import errno
import logging
import os
import re
import shutil
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
    """The bytes received are not the listed file. `digest` is what they hashed to, when the whole
    file came from one source in one response (so two such digests can be compared)."""

    def __init__(self, reason: str, digest: str | None = None) -> None:
        super().__init__(reason)
        self.digest = digest


class SourceFailed(Exception):
    """A secondary source (a peer) could not deliver the file; the caller picks another source.
    The partial keeps any bytes that may be good; the final hash decides."""

    def __init__(self, source: str, reason: str, corrupt: bool) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason
        self.corrupt = corrupt  # it sent bytes that failed verification


# A wrong digest is retried once: a flipped bit in transit does not repeat, a corrupt object does.
MISMATCH_RETRIES = 1


@dataclass(frozen=True)
class FetchSettings:
    endpoint: str
    repo_id: str
    commit: str
    stall_timeout: float
    max_retries: int

    def url(self, path: str) -> str:
        return f"{self.endpoint.rstrip('/')}/{self.repo_id}/resolve/{self.commit}/{urllib.parse.quote(path)}"


@dataclass(frozen=True)
class Source:
    """Where one file's bytes come from: the hub (retried, with backoff) or a peer (tried once).
    `client` carries the credentials for that source only: the hub token never goes to a peer."""

    name: str
    client: httpx.Client
    url: Callable[[str], str]
    headers: Mapping[str, str] = field(default_factory=dict)
    is_hub: bool = True


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
        # Whether every byte held came from one response that started at byte 0: only then is
        # the digest of a mismatch a fact about the source rather than about a mix of sources.
        self.single_response = have == 0

    def restart(self, progress: Progress) -> None:
        progress.discarded(self.have)
        self.hasher, self.have = StreamHasher(self.expected), 0
        self.single_response = True
        with self.path.open("wb"):
            pass

    def discard(self, progress: Progress) -> None:
        progress.discarded(self.have)
        self.path.unlink(missing_ok=True)


class DiskFull(Exception):
    pass


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
        self.hub = Source("hub", client, settings.url)

    def fetch(self, f: RemoteFile, source: Source | None = None) -> None:
        """Bring `f` into place verified from `source` (default the hub), or raise FetchFailed /
        Cancelled; a peer source that fails raises SourceFailed instead, after one try."""
        src = source or self.hub
        final = self._dest / f.path
        attempts = Attempts(self._s.max_retries)
        wrong: list[str | None] = []  # digests of the mismatching copies received, in order
        state: _Partial | None = None
        while True:
            if self._cancel.is_set():
                raise Cancelled()
            try:
                if state is None:
                    state = self._open_partial(f, partial_path(self._dest, f.path))
                if state.have < f.size:
                    self._stream_rest(f, state, src)
                digest = state.hasher.hexdigest()
                if digest != f.expected_digest:
                    raise HashMismatch(
                        f"{f.hash_kind} mismatch: the hub lists {f.expected_digest}, received {digest}",
                        digest if state.single_response else None,
                    )
                self._place(state.path, final)
                self._manifest.record(f.path, f, final)
                self._progress.file_done()
                return
            except TransientError as exc:
                if isinstance(exc, HashMismatch) and state is not None:
                    state.discard(self._progress)  # never keep bytes that failed verification
                    state = None
                if not src.is_hub:
                    raise SourceFailed(src.name, str(exc), corrupt=isinstance(exc, HashMismatch)) from None
                if isinstance(exc, HashMismatch):
                    self._judge_mismatch(f, exc, wrong)
                delay = attempts.next_delay(exc)
                if delay is None:
                    raise FetchFailed(
                        f.path, f"gave up after {self._s.max_retries} retries; last error: {exc}"
                    ) from None
                LOG.warning("%s: %s; retry %d/%d in %.1fs", f.path, exc, attempts.used, self._s.max_retries, delay)
                if self._cancel.wait(delay):
                    raise Cancelled() from None
            except FatalError as exc:
                if not src.is_hub:
                    raise SourceFailed(src.name, str(exc), corrupt=False) from None
                raise FetchFailed(f.path, str(exc), permanent=True) from None
            except DiskFull as exc:
                raise FetchFailed(f.path, str(exc), permanent=True) from None
            except OSError as exc:
                # Local I/O (permissions, a read-only file system) is not something a retry fixes.
                raise FetchFailed(f.path, f"local I/O error: {exc}", permanent=True) from None

    def _judge_mismatch(self, f: RemoteFile, exc: HashMismatch, wrong: list[str | None]) -> None:
        """Raise when retrying the hub cannot help: the same wrong bytes twice are the object
        itself (a corrupt upload or a listing that names another object), not the network."""
        if exc.digest is not None and exc.digest in wrong:
            raise FetchFailed(
                f.path,
                f"the hub served the same wrong bytes twice ({f.hash_kind} {exc.digest}, the listing says "
                f"{f.expected_digest}): the object on the hub does not match its listed hash; "
                "fix or re-upload it on the hub, or pin a revision whose files verify",
                permanent=True,
            )
        wrong.append(exc.digest)
        if len(wrong) > MISMATCH_RETRIES:
            raise FetchFailed(
                f.path, f"bytes failed verification {len(wrong)} times, with different digests; last: {exc}"
            )

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

    def _stream_rest(self, f: RemoteFile, state: _Partial, src: Source) -> None:
        headers = dict(src.headers)
        if state.have:
            headers["range"] = f"bytes={state.have}-"
            state.single_response = False
        try:
            with src.client.stream("GET", src.url(f.path), headers=headers) as response:
                self._accept_response(f, state, response)
                try:
                    self._write_body(f, state, response)
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                        raise self._disk_full(f, state, exc) from None
                    raise
        except httpx.TimeoutException:
            raise TransientError(
                f"stalled: no data for {self._s.stall_timeout:g}s at {human_bytes(state.have)}"
            ) from None
        except httpx.TransportError as exc:
            raise TransientError(f"connection error at {human_bytes(state.have)}: {type(exc).__name__}") from None
        if state.have < f.size:
            raise TransientError(f"connection closed at {state.have} of {f.size} bytes")

    def _write_body(self, f: RemoteFile, state: _Partial, response: httpx.Response) -> None:
        with state.path.open("r+b", buffering=WRITE_BUFFER) as out:
            out.seek(state.have)
            out.truncate()
            # Bytes are hashed once they are on disk, so `have` and the hash describe exactly the
            # bytes the partial holds, also when the buffer's flush is what fails (disk full).
            pending: list[bytes] = []
            pending_len = 0
            try:
                for chunk in response.iter_bytes():
                    if state.have + pending_len + len(chunk) > f.size:
                        raise HashMismatch(f"the server sent more than the listed {f.size} bytes")
                    out.write(chunk)
                    pending.append(chunk)
                    pending_len += len(chunk)
                    if pending_len >= WRITE_BUFFER:
                        out.flush()
                        self._commit_written(state, pending)
                        pending, pending_len = [], 0
                    if self._cancel.is_set():
                        raise Cancelled()
            finally:
                # Also after a stall or a cut: what arrived is kept and the next try resumes after it.
                out.flush()
                self._commit_written(state, pending)

    def _commit_written(self, state: _Partial, chunks: list[bytes]) -> None:
        for chunk in chunks:
            state.hasher.update(chunk)
            state.have += len(chunk)
            self._progress.received(len(chunk))

    def _disk_full(self, f: RemoteFile, state: _Partial, exc: OSError) -> DiskFull:
        try:
            free = shutil.disk_usage(state.path.parent).free
        except OSError:
            free = 0
        return DiskFull(
            f"no space left writing {state.path} ({exc.strerror}): {human_bytes(f.size - state.have)} more "
            f"needed for this file, {human_bytes(free)} free; the {human_bytes(state.have)} written are "
            "kept there and resumed once space is freed"
        )

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
