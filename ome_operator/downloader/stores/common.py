"""What every object store shares: the listed objects, the checksums that verify them, credentials.

Each store names its own whole-object checksum, and each can be computed while the bytes stream in:
- S3 (and OCI through its S3 API): the ETag is the MD5 of a single-part upload; a multipart upload's
  ETag is the MD5 of the parts' MD5s with `-<parts>` appended, computable once the part size is known;
- GCS: `md5Hash` (base64), or only `crc32c` for composite objects;
- Azure: `Content-MD5` (base64), set by the uploader; a blob without one has nothing to check against.
A listing with a SHA-256 the uploader recorded (S3 `x-amz-checksum-sha256`) is checked against that.
An object with no usable checksum is refused rather than trusted on its size.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Protocol

from ome_operator.downloader.listing import RemoteFile

PART_HASH_KINDS = ("s3-multipart-md5",)


class StoreError(Exception):
    """The store cannot be listed or read; `permanent`: retrying the Job will not help."""

    def __init__(self, message: str, *, permanent: bool = True) -> None:
        super().__init__(message)
        self.permanent = permanent


class CredentialsMissing(StoreError):
    """A credential the scheme needs is absent; the message names the Secret and its data key."""


@dataclass(frozen=True)
class StoreFile(RemoteFile):
    """An object under the model's prefix, with the checksum the store vouches for.

    `path` is relative to the prefix (where it lands under --dest); `key` is the object's full name.
    `digest_kind` is md5, crc32c, sha256 or s3-multipart-md5 (then `part_size` is set).
    """

    key: str = ""
    digest_kind: str = "md5"
    digest: str = ""
    part_size: int = 0
    version: str = ""  # ETag / generation: identifies this content for the manifest

    @property
    def hash_kind(self) -> str:
        return self.digest_kind

    @property
    def expected_digest(self) -> str:
        return self.digest


def b64_to_hex(value: str) -> str:
    return base64.b64decode(value).hex()


class _Hash(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...
    def hexdigest(self) -> str: ...


class _Crc32c:
    """CRC-32C, from google-crc32c's C implementation when present (GCS composite objects only)."""

    def __init__(self) -> None:
        import google_crc32c

        self._c: Any = google_crc32c.Checksum()  # type: ignore[no-untyped-call]

    def update(self, data: bytes | memoryview, /) -> None:
        self._c.update(bytes(data))

    def hexdigest(self) -> str:
        return str(self._c.digest().hex())


class _MultipartMd5:
    """An S3 multipart ETag: md5 over the concatenated md5 of each `part_size` slice, plus `-<parts>`."""

    def __init__(self, part_size: int) -> None:
        self._part_size = part_size
        self._parts: list[bytes] = []
        self._current = hashlib.md5(usedforsecurity=False)
        self._in_part = 0

    def update(self, data: bytes | memoryview, /) -> None:
        view = memoryview(data)
        while len(view):
            take = min(len(view), self._part_size - self._in_part)
            self._current.update(view[:take])
            self._in_part += take
            view = view[take:]
            if self._in_part == self._part_size:
                self._parts.append(self._current.digest())
                self._current, self._in_part = hashlib.md5(usedforsecurity=False), 0

    def hexdigest(self) -> str:
        parts = list(self._parts)
        if self._in_part:
            parts.append(self._current.digest())
        return hashlib.md5(b"".join(parts), usedforsecurity=False).hexdigest() + f"-{len(parts)}"


@dataclass
class StoreHasher:
    """Feeds the checksum `f` is verified against; `fed` counts the bytes seen."""

    f: StoreFile
    fed: int = 0
    _h: _Hash = field(init=False)

    def __post_init__(self) -> None:
        kind = self.f.digest_kind
        if kind == "md5":
            self._h = hashlib.md5(usedforsecurity=False)
        elif kind == "sha256":
            self._h = hashlib.sha256()
        elif kind == "crc32c":
            self._h = _Crc32c()
        elif kind == "s3-multipart-md5":
            self._h = _MultipartMd5(self.f.part_size)
        else:
            raise ValueError(f"unknown checksum kind {kind!r}")

    def update(self, data: bytes | memoryview) -> None:
        self._h.update(data)
        self.fed += len(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def hash_file_prefix(path: os.PathLike[str] | str, f: StoreFile, length: int, block: int = 4 << 20) -> StoreHasher:
    hasher = StoreHasher(f)
    left = length
    with open(path, "rb", buffering=0) as src:
        buf = bytearray(block)
        view = memoryview(buf)
        while left > 0:
            n = src.readinto(view[: min(block, left)])
            if not n:
                break
            hasher.update(view[:n])
            left -= n
    return hasher


def require_env(name: str, secret: str | None, data_key: str) -> str:
    """A credential from the Job's environment, or CredentialsMissing naming where it should come from."""
    value = os.environ.get(name, "").strip()
    if value:
        return value
    if secret:
        raise CredentialsMissing(
            f"credential missing: Secret {secret} or its data key {data_key!r} does not exist (env {name} is "
            "empty); create the Secret with that key, or fix spec.storage.key"
        )
    raise CredentialsMissing(
        f"credential missing: env {name} is empty and spec.storage.key names no Secret; "
        f"create a Secret with data key {data_key!r} and set spec.storage.key to its name"
    )


def optional_env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None
