"""What to download: the revision resolved to one commit, and the files with their expected hashes.

The hub's tree API gives, per file, its size and either the LFS object's sha256 (weights) or the
git blob sha1 (small files). Both can be computed while the bytes stream in, so every file is
verified in the same pass that writes it. The revision is resolved once; every later request
names the commit, so a branch that moves during a 1 TB download cannot mix two revisions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, TypeVar

from ome_operator.downloader.retry import TransientError, backoff_delay, parse_retry_after

LOG = logging.getLogger("ome_operator.downloader")

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Weights for other frameworks: large, never loaded by the serving engines, so not fetched.
OTHER_WEIGHT_SUFFIXES = (".h5", ".msgpack", ".onnx", ".onnx_data", ".tflite", ".ot", ".gguf", ".mlmodel", ".nemo")
SAFE_WEIGHT_SUFFIXES = (".safetensors",)


class ListingError(RuntimeError):
    """The repository cannot be listed or is unusable as a model; the message says why."""

    def __init__(self, message: str, permanent: bool = True) -> None:
        super().__init__(message)
        self.permanent = permanent  # False: the hub kept failing (throttled, down); a later run may work


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None  # the LFS object's sha256, when the file is stored in LFS
    git_sha1: str  # the git blob id (of the LFS pointer, for LFS files)

    @property
    def hash_kind(self) -> str:
        return "sha256" if self.sha256 else "git-sha1"

    @property
    def expected_digest(self) -> str:
        return self.sha256 or self.git_sha1


@dataclass
class Listing:
    repo_id: str
    revision: str
    commit: str
    files: list[RemoteFile]
    skipped: dict[str, str] = field(default_factory=dict)  # path -> reason

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def skip_reason(path: str, allow_pickle: bool) -> str | None:
    """Why a repository file is not fetched, or None when it is.

    Everything not excluded here is fetched: tokenizer files come in too many shapes
    (tokenizer.json, *.model, *.tiktoken, vocab.txt, merges.txt, chat templates) and remote-code
    models (Kimi K2) need their *.py files next to the weights.
    """
    name = PurePosixPath(path).name.lower()
    if name == ".gitattributes":
        return "git metadata"
    if name.endswith(PICKLE_SUFFIXES) and not allow_pickle:
        return "pickle format (code execution on load); opt in with --allow-pickle"
    if name.endswith(OTHER_WEIGHT_SUFFIXES):
        return "weights for another framework"
    return None


def is_weight_file(path: str, allow_pickle: bool) -> bool:
    name = path.lower()
    return name.endswith(SAFE_WEIGHT_SUFFIXES) or (allow_pickle and name.endswith(PICKLE_SUFFIXES))


def check_safe_path(path: str) -> None:
    """A hostile or broken listing must not write outside the destination."""
    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts or not p.parts or "\x00" in path or "\\" in path:
        raise ListingError(f"the repository lists an unsafe path {path!r}; refusing to write it")
    if p.parts[0] == ".ome-download":
        raise ListingError(f"the repository lists {path!r}, which collides with the downloader's state")


def select_files(raw: list[RemoteFile], allow_pickle: bool) -> tuple[list[RemoteFile], dict[str, str]]:
    keep: list[RemoteFile] = []
    skipped: dict[str, str] = {}
    for f in raw:
        check_safe_path(f.path)
        reason = skip_reason(f.path, allow_pickle)
        if reason:
            skipped[f.path] = reason
        else:
            keep.append(f)
    paths = {f.path for f in keep}
    if "config.json" not in paths:
        raise ListingError("the repository has no config.json at its root; it is not a model this runtime can load")
    if not any(is_weight_file(p, allow_pickle) for p in paths):
        pickled = sorted(p for p in skipped if p.lower().endswith(PICKLE_SUFFIXES))
        if pickled:
            raise ListingError(
                f"the repository's weights are only in pickle format ({', '.join(pickled[:3])}); "
                "pickle runs code when loaded: use a safetensors revision or opt in with --allow-pickle"
            )
        raise ListingError("the repository has no *.safetensors weights")
    return keep, skipped


T = TypeVar("T")


def call_hub(what: str, call: Callable[[], T], max_retries: int, sleep: Callable[[float], None] = time.sleep) -> T:
    """Run a hub API call, retrying 429/5xx/transport errors with backoff and Retry-After."""
    attempt = 0
    while True:
        try:
            return call()
        except Exception as exc:  # huggingface_hub raises several unrelated exception types
            transient = classify_hub_error(exc)
            if transient is None:
                raise ListingError(f"{what}: {describe_hub_error(exc)}") from None
            attempt += 1
            if attempt > max_retries:
                raise ListingError(
                    f"{what}: gave up after {max_retries} retries: {transient}", permanent=False
                ) from None
            delay = backoff_delay(attempt, transient.retry_after)
            LOG.warning("%s: %s; retry %d/%d in %.1fs", what, transient, attempt, max_retries, delay)
            sleep(delay)


def classify_hub_error(exc: BaseException) -> TransientError | None:
    import httpx

    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        if status == 429 or status >= 500 or status == 408:
            headers = getattr(response, "headers", {}) or {}
            said = getattr(exc, "server_message", None)
            reason = f"HTTP {status}: {str(said)[:200]}" if said else f"HTTP {status}"
            return TransientError(reason, parse_retry_after(headers.get("retry-after")))
        return None
    # huggingface_hub may run on httpx or on its fork httpx2, whose classes are unrelated to
    # httpx's: recognise a transport failure by its class name anywhere in the hierarchy.
    transport = {"TransportError", "TimeoutException"} & {cls.__name__ for cls in type(exc).__mro__}
    if transport or isinstance(exc, httpx.TransportError | ConnectionError | TimeoutError):
        return TransientError(f"{type(exc).__name__}: {exc}"[:300])
    return None


def describe_hub_error(exc: BaseException) -> str:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(exc, GatedRepoError):
        return "the repository is gated: accept its terms on the hub and give a token (HF_TOKEN) that has access"
    if isinstance(exc, RevisionNotFoundError):
        return "the revision does not exist in the repository"
    if isinstance(exc, RepositoryNotFoundError):
        return "repository (or revision) not found, or private and the token (HF_TOKEN) has no access"
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line}"


def list_repository(
    endpoint: str,
    token: str | None,
    repo_id: str,
    revision: str,
    allow_pickle: bool,
    max_retries: int,
) -> Listing:
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    # token=False keeps huggingface_hub from falling back to a token file it may find on disk.
    api = HfApi(endpoint=endpoint, token=token if token else False, library_name="ome-operator")
    info: Any = call_hub(
        f"resolving {repo_id}@{revision}", lambda: api.model_info(repo_id, revision=revision), max_retries
    )
    commit = str(info.sha or "")
    if len(commit) != 40:
        raise ListingError(f"the hub did not return a commit for {repo_id}@{revision}")
    entries = call_hub(
        f"listing {repo_id}@{commit[:12]}",
        lambda: list(api.list_repo_tree(repo_id, recursive=True, revision=commit)),
        max_retries,
    )
    raw = [
        RemoteFile(
            path=e.path,
            size=int(e.size),
            sha256=e.lfs.sha256 if e.lfs is not None else None,
            git_sha1=e.blob_id,
        )
        for e in entries
        if isinstance(e, RepoFile)
    ]
    files, skipped = select_files(raw, allow_pickle)
    return Listing(repo_id=repo_id, revision=revision, commit=commit, files=files, skipped=skipped)
