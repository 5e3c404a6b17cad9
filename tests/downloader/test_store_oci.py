"""oci://n/<namespace>/b/<bucket>/o/<prefix> through Oracle's S3-compatible API, against SeaweedFS.

OCI's S3 compatibility endpoint is `https://<namespace>.compat.objectstorage.<region>.oraclecloud.com`
(path-style, SigV4 with the region, Customer Secret Keys as the access key pair); here
`parameters.endpoint` points it at the local server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.stores import FaultFront, S3Uploader, seaweedfs
from ome_operator.api.storage_uri import parse_storage_uri
from ome_operator.downloader.stores.common import StoreError
from ome_operator.downloader.stores.s3 import S3Credentials, resolve_s3_endpoint
from tests.downloader import store_cases as cases
from tests.downloader.servers import FakeKubeApi

ACCESS_KEY = "ocid1credentialtests0001"
SECRET_KEY = "oci-customer-secret-key-value-1a2b3c4d"
REGION = "us-ashburn-1"


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cases.StoreCase]:
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs-oci"), ACCESS_KEY, SECRET_KEY) as server:
        files = cases.model_files(seed=15)
        up = S3Uploader(server.endpoint, S3Credentials(ACCESS_KEY, SECRET_KEY), region=REGION)
        up.create_bucket("genai-models")
        for name, data in files.items():
            up.put("genai-models", f"moonshotai/tiny-kimi/{name}", data)
        yield cases.StoreCase(
            uri="oci://n/axtenancyns01/b/genai-models/o/moonshotai/tiny-kimi",
            endpoint=server.endpoint,
            env={"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "OME_STORAGE_REGION": REGION},
            files=files,
            secret_values=[SECRET_KEY],
            missing_credential_env="AWS_ACCESS_KEY_ID",
            make_front=lambda: FaultFront(server.endpoint),
        )


def test_the_endpoint_is_oracles_s3_compatibility_endpoint_for_the_region() -> None:
    uri = parse_storage_uri("oci://n/axtenancyns01/b/genai-models/o/kimi")
    assert resolve_s3_endpoint(uri, None, "eu-frankfurt-1") == (  # type: ignore[arg-type]
        "https://axtenancyns01.compat.objectstorage.eu-frankfurt-1.oraclecloud.com",
        "eu-frankfurt-1",
        True,
    )
    with pytest.raises(StoreError, match=r"parameters\.region"):
        resolve_s3_endpoint(uri, None, None)  # type: ignore[arg-type]


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
