"""gs:// against fake-gcs-server (built from its Go module), on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.stores import FaultFront, GcsUploader, fake_gcs
from tests.downloader import store_cases as cases
from tests.downloader.servers import FakeKubeApi

TOKEN = "gcs-test-token-value-3c1f"


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cases.StoreCase]:
    with fake_gcs(tmp_path_factory.mktemp("gcs")) as server:
        files = cases.model_files(seed=11)
        up = GcsUploader(server.endpoint)
        up.create_bucket("models")
        for name, data in files.items():
            up.put("models", f"kimi/tiny/{name}", data)
        up.put("models", "kimi/tiny-other/config.json", b"{}")  # a sibling prefix: not part of the model
        yield cases.StoreCase(
            uri="gs://models/kimi/tiny",
            endpoint=server.endpoint,
            env={"GOOGLE_OAUTH_ACCESS_TOKEN": TOKEN},
            files=files,
            secret_values=[TOKEN],
            missing_credential_env="GOOGLE_OAUTH_ACCESS_TOKEN",
            make_front=lambda: FaultFront(server.endpoint),
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
