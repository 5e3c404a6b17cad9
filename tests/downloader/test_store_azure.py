"""az:// against Azurite (Microsoft's storage emulator, from npm), on loopback, Shared Key signed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.stores import AZURITE_ACCOUNT, AZURITE_KEY, AzureUploader, FaultFront, azurite
from tests.downloader import store_cases as cases
from tests.downloader.servers import FakeKubeApi


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cases.StoreCase]:
    with azurite(tmp_path_factory.mktemp("azurite")) as server:
        files = cases.model_files(seed=12)
        up = AzureUploader(server.endpoint)
        up.create_container("models")
        for name, data in files.items():
            up.put("models", f"kimi/tiny/{name}", data)
        yield cases.StoreCase(
            uri=f"az://{AZURITE_ACCOUNT}/models/kimi/tiny",
            endpoint=server.endpoint,
            env={"AZURE_STORAGE_KEY": AZURITE_KEY},
            files=files,
            secret_values=[AZURITE_KEY],
            missing_credential_env="AZURE_STORAGE_KEY",
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
