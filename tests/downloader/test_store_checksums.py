"""The stores' checksums, computed while streaming: each must equal the one-shot value, whatever the
chunking and wherever a resumed download picks up again."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from ome_operator.downloader.stores.common import StoreFile, StoreHasher, hash_file_prefix

DATA = random.Random(7).randbytes(100_003)


def store_file(kind: str, digest: str = "", part_size: int = 0) -> StoreFile:
    return StoreFile(
        path="w.safetensors", size=len(DATA), sha256=None, git_sha1="", key="p/w.safetensors",
        digest_kind=kind, digest=digest, part_size=part_size,
    )  # fmt: skip


def composite_md5(data: bytes, part: int) -> str:
    parts = [hashlib.md5(data[i : i + part]).digest() for i in range(0, len(data), part)]
    return hashlib.md5(b"".join(parts)).hexdigest() + f"-{len(parts)}"


def test_crc32c_matches_the_standard_check_value() -> None:
    hasher = StoreHasher(store_file("crc32c"))
    hasher.update(b"1234")
    hasher.update(b"56789")
    assert hasher.hexdigest() == "e3069283"  # CRC-32C of "123456789" (RFC 3720, B.4)


@pytest.mark.parametrize("part", [4096, 33_333, 100_003, 1 << 20])
def test_multipart_etag_whatever_the_chunking(part: int) -> None:
    hasher = StoreHasher(store_file("s3-multipart-md5", part_size=part))
    rng = random.Random(part)
    at = 0
    while at < len(DATA):
        n = rng.randint(1, 9000)
        hasher.update(DATA[at : at + n])
        at += n
    assert hasher.hexdigest() == composite_md5(DATA, part)


@pytest.mark.parametrize(("kind", "part"), [("md5", 0), ("sha256", 0), ("crc32c", 0), ("s3-multipart-md5", 30_000)])
def test_a_resumed_hash_equals_the_whole_files(tmp_path: Path, kind: str, part: int) -> None:
    partial = tmp_path / "partial"
    partial.write_bytes(DATA[:45_678])
    f = store_file(kind, part_size=part)
    resumed = hash_file_prefix(partial, f, 45_678, block=1000)
    resumed.update(DATA[45_678:])
    whole = StoreHasher(f)
    whole.update(DATA)
    assert resumed.fed == len(DATA) and resumed.hexdigest() == whole.hexdigest()
