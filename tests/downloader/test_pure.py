"""The downloader's pure functions, tested directly."""

from __future__ import annotations

import email.utils
import json
import random
import struct
from pathlib import Path, PurePosixPath

import pytest

from devtools.fixtures import Tensor, safetensors_bytes
from ome_operator.api.storage_uri import (
    HfUri,
    LocalUri,
    ObjectStoreUri,
    PvcUri,
    StorageUriError,
    effective_revision,
    parse_storage_uri,
)
from ome_operator.downloader.fetch import parse_content_range_start
from ome_operator.downloader.listing import ListingError, RemoteFile, check_safe_path, select_files, skip_reason
from ome_operator.downloader.metadata import (
    ModelFormatError,
    format_parameter_size,
    normalise_quantization,
    read_safetensors_header,
)
from ome_operator.downloader.peer import compute_waiting_for
from ome_operator.downloader.peer_board import PeerRecord, parse_expected
from ome_operator.downloader.progress import Progress, render_bar
from ome_operator.downloader.report import Redactor, fit_termination_message
from ome_operator.downloader.retry import backoff_delay, parse_retry_after


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("hf://moonshotai/Kimi-K2-Instruct", HfUri("moonshotai/Kimi-K2-Instruct", None)),
        ("hf://moonshotai/Kimi-K2-Instruct@main", HfUri("moonshotai/Kimi-K2-Instruct", "main")),
        ("hf://org/m.v1_2@" + "a" * 40, HfUri("org/m.v1_2", "a" * 40)),
        ("hf://org/repo@refs/pr/1", HfUri("org/repo", "refs/pr/1")),
        ("hf://gpt2", HfUri("gpt2", None)),
        ("local:///raid/models/kimi", LocalUri(PurePosixPath("/raid/models/kimi"))),
        ("pvc://models/kimi-k2", PvcUri(None, "models", PurePosixPath("kimi-k2"))),
        ("pvc://team-a:models/a/b", PvcUri("team-a", "models", PurePosixPath("a/b"))),
        ("pvc://models", PvcUri(None, "models", PurePosixPath("."))),
        ("HF://org/repo", HfUri("org/repo", None)),
        ("s3://models/moonshotai/Kimi-K2/", ObjectStoreUri("s3", "models", "moonshotai/Kimi-K2")),
        ("s3://models@eu-west-1/kimi", ObjectStoreUri("s3", "models", "kimi", region="eu-west-1")),
        ("s3://models", ObjectStoreUri("s3", "models", "")),
        ("oci://n/axns/b/models/o/kimi/k2", ObjectStoreUri("oci", "models", "kimi/k2", account="axns")),
        ("oci://n/axns/b/models/o", ObjectStoreUri("oci", "models", "", account="axns")),
        ("gs://my.bucket/a//b", ObjectStoreUri("gs", "my.bucket", "a/b")),
        ("az://contoso/weights/qwen", ObjectStoreUri("az", "weights", "qwen", account="contoso")),
        ("az://contoso.blob.core.windows.net/weights/qwen", ObjectStoreUri("az", "weights", "qwen", account="contoso")),
    ],
)
def test_accepted_storage_uris(uri: str, expected: object) -> None:
    assert parse_storage_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("ftp://host/key", "unsupported storage URI scheme 'ftp'"),
        ("oci://bucket/key", "expected oci://n/<namespace>/b/<bucket>/o/<prefix>"),
        ("s3://b/key", "not a valid bucket name"),
        ("s3://bucket@Bad_Region/key", "not a valid region"),
        ("gs://bucket/a/../b", "'.' and '..' are not allowed"),
        ("az://Contoso/models/x", "not a storage account name"),
        ("az://contoso/a/x", "not a valid container name"),
        ("moonshotai/Kimi-K2", "has no scheme"),
        ("hf://", "not a hub repository id"),
        ("hf://a/b/c", "not a hub repository id"),
        ("hf://org/-bad", "not a hub repository id"),
        ("hf://org/a--b", "not a hub repository id"),
        ("hf://org/repo@", "not a valid revision"),
        ("hf://org/repo@../x", "not a valid revision"),
        ("local://relative/path", "must be absolute"),
        ("local:///raid/../etc", "'..' is not allowed"),
        ("pvc://Bad_Claim/x", "not a valid PersistentVolumeClaim name"),
        ("pvc://NS:claim/x", "not a valid namespace"),
        ("pvc://claim/../x", "'..' is not allowed"),
    ],
)
def test_rejected_storage_uris_say_why(uri: str, needle: str) -> None:
    with pytest.raises(StorageUriError, match=None) as err:
        parse_storage_uri(uri)
    assert needle in str(err.value)
    if "scheme" in needle:
        assert "hf://org/repo[@revision]" in str(err.value)


def test_revision_from_uri_and_flag_must_agree() -> None:
    assert effective_revision(HfUri("o/r", None), None) == "main"
    assert effective_revision(HfUri("o/r", "v1"), None) == "v1"
    assert effective_revision(HfUri("o/r", None), "v2") == "v2"
    assert effective_revision(HfUri("o/r", "v1"), "v1") == "v1"
    with pytest.raises(StorageUriError, match="give one of them"):
        effective_revision(HfUri("o/r", "v1"), "v2")


def test_retry_after_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("100000") == 900.0  # capped
    now = 1_800_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0


def test_backoff_honours_retry_after_and_grows_exponentially_without_it() -> None:
    rng = random.Random(1)
    for _ in range(100):
        d = backoff_delay(3, retry_after=5.0, rng=rng)
        assert 5.0 <= d <= 5.5
    steps = [backoff_delay(n, rng=rng, base=1.0, cap=60.0) for n in range(1, 10)]
    assert all(0.5 * min(60, 2 ** (n - 1)) <= s <= min(60, 2 ** (n - 1)) for n, s in enumerate(steps, 1))


def test_content_range_start() -> None:
    assert parse_content_range_start("bytes 100-199/200") == 100
    assert parse_content_range_start("bytes 0-0/*") == 0
    assert parse_content_range_start(None) is None
    assert parse_content_range_start("items 1-2/3") is None


def test_file_selection_policy() -> None:
    assert skip_reason("model-00001-of-00002.safetensors", False) is None
    assert skip_reason("tokenizer.model", False) is None
    assert skip_reason("modeling_deepseek.py", False) is None  # remote-code models need it
    assert skip_reason("pytorch_model.bin", False) is not None
    assert skip_reason("original/consolidated.00.pth", False) is not None
    assert skip_reason("pytorch_model.bin", True) is None
    assert skip_reason("onnx/model.onnx", True) is not None
    assert skip_reason(".gitattributes", True) is not None


def rf(path: str) -> RemoteFile:
    return RemoteFile(path, 1, None, "0" * 40)


def test_selection_needs_a_config_and_safe_weights() -> None:
    keep, skipped = select_files([rf("config.json"), rf("model.safetensors"), rf("pytorch_model.bin")], False)
    assert [f.path for f in keep] == ["config.json", "model.safetensors"]
    assert "pytorch_model.bin" in skipped
    with pytest.raises(ListingError, match="--allow-pickle"):
        select_files([rf("config.json"), rf("pytorch_model.bin")], False)
    with pytest.raises(ListingError, match=r"no config\.json"):
        select_files([rf("model.safetensors")], False)


@pytest.mark.parametrize("path", ["../etc/passwd", "/abs", "a/../../b", ".ome-download/manifest.json", "a\\b"])
def test_unsafe_listed_paths_are_refused(path: str) -> None:
    with pytest.raises(ListingError):
        check_safe_path(path)


def test_safetensors_header_parsing_and_consistency(tmp_path: Path) -> None:
    tensors = [Tensor("a", "BF16", (4, 8)), Tensor("b", "F8_E4M3", (16,)), Tensor("c", "F32", (3,))]
    path = tmp_path / "m.safetensors"
    path.write_bytes(safetensors_bytes(tensors, random.Random(0).randbytes))
    parsed = read_safetensors_header(path)
    assert [(t.name, t.dtype, t.shape, t.numel) for t in parsed] == [
        (t.name, t.dtype, t.shape, t.numel) for t in tensors
    ]
    data = path.read_bytes()
    path.write_bytes(data[:-1])
    with pytest.raises(ModelFormatError, match="outside the file"):
        read_safetensors_header(path)
    path.write_bytes(data + b"\0")
    with pytest.raises(ModelFormatError, match="accounts for"):
        read_safetensors_header(path)
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(ModelFormatError, match="does not fit"):
        read_safetensors_header(path)
    bad = json.dumps({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 15]}}).encode()
    path.write_bytes(struct.pack("<Q", len(bad)) + bad + b"\0" * 15)
    with pytest.raises(ModelFormatError, match="does not match its F32 shape"):
        read_safetensors_header(path)


@pytest.mark.parametrize(
    ("count", "text"),
    [(7_000_000_000, "7B"), (7_110_000_000, "7.11B"), (1_026_000_000_000, "1.03T"), (3_670_944, "3.67M"), (0, None)],
)
def test_parameter_size_formatting(count: int, text: str | None) -> None:
    assert format_parameter_size(count) == text


def test_quantization_normalisation() -> None:
    assert normalise_quantization({"quantization_config": {"quant_method": "fp8"}}) == "fp8"
    assert normalise_quantization({"quantization_config": {"quant_method": "AWQ"}}) == "awq"
    ct = {"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 4, "type": "int"}}}}
    assert normalise_quantization({"quantization_config": ct}) == "int4"
    assert normalise_quantization({}) is None


def test_redactor_covers_plain_and_url_encoded_forms() -> None:
    r = Redactor(["hf_a/b+c", None, ""])
    assert r("token hf_a/b+c here") == "token [REDACTED] here"
    assert r("q=hf_a%2Fb%2Bc") == "q=[REDACTED]"
    assert r("q=hf_a%2Fb%2Bc".replace("%2B", "%2B")) == "q=[REDACTED]"
    assert Redactor([])("nothing") == "nothing"


def test_termination_message_is_cut_to_fit_4_kib_keeping_the_essentials() -> None:
    summary = {
        "status": "Succeeded",
        "commit": "c" * 40,
        "files": 3,
        "bytes": 10,
        "skippedFiles": [f"file-{i}.bin" for i in range(500)],
        "tensorDtypes": {f"T{i}": i for i in range(50)},
        "metadata": {"modelType": "kimi_k2", "modelArchitecture": "X", "extra": "y" * 5000},
    }
    fitted = fit_termination_message(summary)
    assert len(json.dumps(fitted, separators=(",", ":")).encode()) <= 4096
    assert fitted["commit"] == "c" * 40 and fitted["files"] == 3
    assert fitted["metadata"] == {"modelType": "kimi_k2", "modelArchitecture": "X"}


def test_progress_counts_and_bar() -> None:
    clock = iter([0.0, 10.0, 20.0]).__next__
    p = Progress(clock=clock)
    p.set_plan(total_files=2, total_bytes=1000, commit="c" * 40)
    p.set_phase("Downloading")
    p.received(300)
    p.rehashed(100)
    p.file_done()
    p.file_done(untracked_bytes=200)
    snap = p.snapshot()
    assert snap["completedBytes"] == 600
    assert snap["completedFiles"] == 2
    assert snap["bytesTransferred"] == 300
    assert snap["speedBytesPerSec"] == 30
    assert snap["etaSeconds"] == 13
    assert "60.0%" in render_bar(snap) and "files 2/2" in render_bar(snap)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, frozenset()),  # an operator that does not publish the list: nobody waits
        ('["node-a","node-b"]', frozenset({"node-a", "node-b"})),
        ("[]", frozenset()),
        ("not json", frozenset()),
        ('{"node-a": 1}', frozenset()),
    ],
)
def test_expected_nodes_from_the_progress_configmap(value: str | None, expected: frozenset[str]) -> None:
    data = {"node-a": "{}"} if value is None else {"_expected": value}
    assert parse_expected(data) == expected


def _record(have: int, done: bool = False, failed: bool = False) -> PeerRecord:
    return PeerRecord("http://127.0.0.1:1", "t", "c", [f"f{i}" for i in range(have)], done=done, failed=failed)


@pytest.mark.parametrize(
    ("others", "expected", "working", "unseen"),
    [
        ({}, set(), [], []),
        ({}, {"me", "b", "c"}, [], ["b", "c"]),  # registered nobody yet: wait for both
        ({"b": _record(1)}, {"me", "b"}, ["b"], []),  # still downloading
        ({"b": _record(3)}, {"me", "b"}, [], []),  # has every file, not yet marked done
        ({"b": _record(1, done=True)}, {"me", "b"}, [], []),
        ({"b": _record(0, failed=True)}, {"me", "b", "c"}, [], ["c"]),  # failed counts as seen
        ({"x": _record(0)}, set(), ["x"], []),  # a node not on the list is still served
    ],
)
def test_what_a_finished_node_keeps_serving_for(
    others: dict[str, PeerRecord], expected: set[str], working: list[str], unseen: list[str]
) -> None:
    assert compute_waiting_for(others, frozenset(expected), "me", 3) == (working, unseen)
