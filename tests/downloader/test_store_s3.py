"""s3:// against SeaweedFS (built from its Go module), on loopback, SigV4 signed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools.stores import FaultFront, S3Uploader, seaweedfs
from ome_operator.api.storage_uri import ObjectStoreUri, parse_storage_uri
from ome_operator.downloader.stores.calls import Calls
from ome_operator.downloader.stores.s3 import S3Credentials, S3Store
from tests.downloader import store_cases as cases
from tests.downloader.servers import FakeKubeApi

ACCESS_KEY = "AKIDTESTS3STORE00001"
SECRET_KEY = "s3-test-secret-key-value-9f8e7d6c5b4a"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs"), ACCESS_KEY, SECRET_KEY) as running:
        yield running.endpoint


@pytest.fixture(scope="module")
def case(server: str) -> cases.StoreCase:
    files = cases.model_files(seed=13)
    up = S3Uploader(server, S3Credentials(ACCESS_KEY, SECRET_KEY))
    up.create_bucket("models")
    for name, data in files.items():
        up.put("models", f"moonshotai/tiny-kimi/{name}", data)
    up.put("models", "moonshotai/tiny-kimi-other/config.json", b"{}")  # a sibling prefix: not part of the model
    return cases.StoreCase(
        uri="s3://models/moonshotai/tiny-kimi",
        endpoint=server,
        env={"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY},
        files=files,
        secret_values=[SECRET_KEY],
        missing_credential_env="AWS_SECRET_ACCESS_KEY",
        make_front=lambda: FaultFront(server),
    )


def test_clean_download(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: cases.StoreCase, kube_api: FakeKubeApi
) -> None:
    cases.check_clean_download(monkeypatch, tmp_path, case, kube_api)


def test_transient_errors_are_retried(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: cases.StoreCase) -> None:
    cases.check_transient_errors_are_retried(monkeypatch, tmp_path, case)


def test_resume_after_kill(tmp_path: Path, case: cases.StoreCase) -> None:
    cases.check_resume_after_kill(tmp_path, case)


def test_corrupted_object_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: cases.StoreCase) -> None:
    cases.check_corrupted_refused(monkeypatch, tmp_path, case)


def test_missing_credential_names_the_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: cases.StoreCase
) -> None:
    cases.check_missing_credential(monkeypatch, tmp_path, case)


def test_wrong_secret_key_is_refused_as_access_denied(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: cases.StoreCase
) -> None:
    env = {**case.env, "AWS_SECRET_ACCESS_KEY": "not-the-key", "OME_STORAGE_ENDPOINT": case.endpoint,
           "OME_STORAGE_SECRET": cases.SECRET}  # fmt: skip
    out = cases.download(monkeypatch, tmp_path, case, env, "--dest", str(tmp_path / "model"))
    assert out.code == 3, out.log
    assert out.termination is not None and "access denied" in out.termination["error"]
    assert f"Secret {cases.SECRET}" in out.termination["error"]


def test_multipart_object_is_verified_by_its_composite_etag(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: str
) -> None:
    files = cases.model_files(seed=14)
    up = S3Uploader(server, S3Credentials(ACCESS_KEY, SECRET_KEY))
    for name, data in files.items():
        if name == cases.BIG:
            etag = up.put_multipart("models", f"multipart/m/{name}", data, part_size=5 << 20)
            assert etag.endswith("-2"), etag
        else:
            up.put("models", f"multipart/m/{name}", data)
    case = cases.StoreCase(
        uri="s3://models/multipart/m", endpoint=server,
        env={"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY},
        files=files, secret_values=[SECRET_KEY], missing_credential_env="AWS_SECRET_ACCESS_KEY",
        make_front=lambda: FaultFront(server),
    )  # fmt: skip
    dest = tmp_path / "model"
    env = {**case.env, "OME_STORAGE_ENDPOINT": server}
    out = cases.download(monkeypatch, tmp_path, case, env, "--dest", str(dest))
    assert out.code == 0, out.log
    cases.assert_identical(dest, files)
    assert out.termination is not None
    assert "s3-multipart-md5" in out.termination["verification"]


def test_a_get_is_pinned_to_the_listed_etag(
    monkeypatch: pytest.MonkeyPatch, case: cases.StoreCase, server: str
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    uri = parse_storage_uri(case.uri)
    assert isinstance(uri, ObjectStoreUri)
    store = S3Store(uri, server, None, cases.SECRET)
    with httpx.Client() as client:
        listed = {f.path: f for f in store.list_files(Calls(client, store.describe_status, 0))}
        f = listed[cases.BIG]
        assert client.send(store.get_request(f, 0)).status_code == 200
        stale = type(f)(**{**f.__dict__, "version": "0" * 32})  # the ETag of some other content
        assert client.send(store.get_request(stale, 0)).status_code == 412
