"""Object stores: s3://, oci:// (through Oracle's S3-compatible API), gs:// and az://.

The same guarantees as hf:// (see `downloader.pipeline`): everything under the URI's prefix is
listed once with the store's own checksum; files a manifest already vouches for are kept; the rest
are streamed into partial files, hashed in the same pass, renamed only when verified, resumed after
a kill, retried with backoff; progress goes through the same `Progress`.

Configuration reaches the Job as environment, never as arguments: OME_STORAGE_ENDPOINT and
OME_STORAGE_REGION (from `storage.parameters`), OME_STORAGE_SECRET (the *name* of the credentials
Secret, so that a missing key can be reported by name) and the credentials themselves (per store,
see each module), which the Job maps from that Secret with secretKeyRef.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ome_operator.api.storage_uri import ObjectStoreUri
from ome_operator.downloader.listing import Listing, select_files
from ome_operator.downloader.manifest import ManifestWriter, load_manifest
from ome_operator.downloader.metadata import extract_metadata
from ome_operator.downloader.pipeline import DeliveryError, check_free_space, remove_stale_files
from ome_operator.downloader.progress import Progress
from ome_operator.downloader.report import human_bytes
from ome_operator.downloader.stores.azure import AzureStore
from ome_operator.downloader.stores.calls import Calls
from ome_operator.downloader.stores.common import StoreError, StoreFile, hash_file_prefix, optional_env
from ome_operator.downloader.stores.gcs import GcsStore
from ome_operator.downloader.stores.s3 import S3Store
from ome_operator.downloader.stores.transfer import ObjectFailed, ObjectFetcher, Stopped, place_file

LOG = logging.getLogger("ome_operator.downloader")
# Env vars that may hold a credential: their values are redacted from every log line and message.
SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
)

AnyStore = S3Store | GcsStore | AzureStore


@dataclass(frozen=True)
class StoreRequest:
    uri: ObjectStoreUri
    dest: Path
    workers: int
    allow_pickle: bool
    stall_timeout: float
    max_retries: int
    user_agent: str


def store_secrets() -> list[str | None]:
    return [optional_env(name) for name in SECRET_ENV]


def resolve_store(uri: ObjectStoreUri) -> AnyStore:
    endpoint, region, secret = (
        optional_env("OME_STORAGE_ENDPOINT"),
        optional_env("OME_STORAGE_REGION"),
        optional_env("OME_STORAGE_SECRET"),
    )
    if uri.scheme in ("s3", "oci"):
        return S3Store(uri, endpoint, region, secret)
    if uri.scheme == "gs":
        return GcsStore(uri, endpoint, secret)
    return AzureStore(uri, endpoint, secret)


def fingerprint(files: list[StoreFile]) -> str:
    """One id for the listed content (the role a commit plays for hf://): paths and their checksums."""
    h = hashlib.sha1(usedforsecurity=False)
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"{f.path}\0{f.digest_kind}\0{f.digest}\0{f.size}\n".encode())
    return h.hexdigest()


def download_store(req: StoreRequest, progress: Progress) -> dict[str, Any]:
    started = time.monotonic()
    try:
        store = resolve_store(req.uri)
        with _client(req) as client:
            calls = Calls(client, store.describe_status, req.max_retries)
            raw = store.list_files(calls)
            if not raw:
                raise StoreError(f"{req.uri}: no objects under this prefix in {store.name}")
            kept, skipped = select_files(list(raw), req.allow_pickle)
            kept_ids = {id(f) for f in kept}
            files = [f for f in raw if id(f) in kept_ids]
            version = fingerprint(files)
            listing = Listing(repo_id=str(req.uri), revision="", commit=version, files=list(files), skipped=skipped)
            LOG.info(
                "%s: %d objects, %s (%d skipped)", req.uri, len(files), human_bytes(listing.total_bytes), len(skipped)
            )
            progress.set_plan(len(files), listing.total_bytes, version)
            progress.set_phase("Downloading")
            req.dest.mkdir(parents=True, exist_ok=True)
            writer = ManifestWriter(req.dest, load_manifest(req.dest))
            remove_stale_files(req.dest, listing, writer)
            todo: list[StoreFile] = []
            for f in sorted(files, key=lambda f: f.size, reverse=True):
                entry, st = writer.manifest.files.get(f.path), _stat(req.dest / f.path)
                if entry is not None and st is not None and entry.still_valid(f, st):
                    progress.file_done(untracked_bytes=f.size)
                else:
                    todo.append(f)
            if todo:
                check_free_space(req.dest, list(todo))
                _run_pool(req, store, client, todo, progress, writer)
            writer.finish(str(req.uri), version, complete=True)
    except StoreError as exc:
        raise DeliveryError(str(exc), permanent=exc.permanent) from None
    metadata = extract_metadata(req.dest)
    return {
        "status": "Succeeded",
        "storageUri": str(req.uri),
        "contentId": version,
        "path": str(req.dest),
        "files": len(files),
        "bytes": listing.total_bytes,
        "filesReused": len(files) - len(todo),
        "bytesTransferred": progress.transferred,
        "bytesHashed": progress.hashed,
        "seconds": round(time.monotonic() - started, 2),
        "verification": "checksums listed by the store (" + ", ".join(sorted({f.digest_kind for f in files})) + ")",
        "skippedFiles": sorted(skipped),
        "tensorDtypes": metadata.tensor_dtypes,
        "metadata": metadata.to_json(),
    }


def _client(req: StoreRequest) -> httpx.Client:
    return httpx.Client(
        headers={"user-agent": req.user_agent, "accept-encoding": "identity"},
        follow_redirects=False,  # a signed request must not be replayed at another host
        timeout=httpx.Timeout(req.stall_timeout, pool=None),
        limits=httpx.Limits(max_connections=req.workers * 2, max_keepalive_connections=req.workers),
    )


def _run_pool(
    req: StoreRequest,
    store: AnyStore,
    client: httpx.Client,
    todo: list[StoreFile],
    progress: Progress,
    writer: ManifestWriter,
) -> None:
    cancel = threading.Event()
    fetcher = ObjectFetcher(
        store, client, req.dest, progress, writer, cancel, req.max_retries, req.stall_timeout, place_file
    )
    with ThreadPoolExecutor(max_workers=req.workers, thread_name_prefix="fetch") as pool:
        futures: list[Future[None]] = [
            pool.submit(_bring_into_place, f, req.dest, fetcher, progress, writer) for f in todo
        ]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        if any(fut.exception() is not None for fut in done):
            cancel.set()  # the others stop at their next chunk, leaving partials to resume
        wait(futures)
    failures = [e for fut in futures if isinstance(e := fut.exception(), ObjectFailed)]
    others = [e for fut in futures if (e := fut.exception()) is not None and not isinstance(e, ObjectFailed | Stopped)]
    if others:
        raise others[0]
    if failures:
        first = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise DeliveryError(f"{first.path}: {first.reason}{more}", permanent=first.permanent, file=first.path)


def _bring_into_place(
    f: StoreFile, dest: Path, fetcher: ObjectFetcher, progress: Progress, writer: ManifestWriter
) -> None:
    final = dest / f.path
    st = _stat(final)
    if st is not None:
        # Present but not vouched for by the manifest: a matching checksum saves the transfer.
        if st.st_size == f.size:
            hasher = hash_file_prefix(final, f, f.size)
            good = hasher.fed == f.size and hasher.hexdigest() == f.digest
            progress.rehashed(hasher.fed, good=good)
            if good:
                writer.record(f.path, f, final)
                progress.file_done()
                return
        LOG.warning("%s: the copy on disk does not match the store's %s; fetching it again", f.path, f.digest_kind)
        final.unlink()
        writer.forget(f.path)
    fetcher.fetch(f)


def _stat(path: Path) -> Any:
    try:
        return path.stat()
    except FileNotFoundError:
        return None
