"""S3, and Oracle Cloud Object Storage through its S3-compatible API: list, size up, ranged GET.

Requests are signed with AWS Signature Version 4 (header form). Credentials come from the Job's
environment, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally AWS_SESSION_TOKEN, which the
download Job fills from the model's `storage.key` Secret (data keys of the same names).

Endpoints: AWS is addressed virtual-host style (`<bucket>.s3.<region>.amazonaws.com`); an endpoint
given in `parameters.endpoint` (MinIO, SeaweedFS, Ceph...) and OCI's compat endpoint
(`<namespace>.compat.objectstorage.<region>.oraclecloud.com`) are addressed path style.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import partial

import httpx

from ome_operator.api.storage_uri import ObjectStoreUri
from ome_operator.downloader.stores.calls import Calls
from ome_operator.downloader.stores.common import StoreError, StoreFile, optional_env, require_env

LOG = logging.getLogger("ome_operator.downloader")
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_UNRESERVED = "-_.~"


@dataclass(frozen=True)
class S3Credentials:
    access_key: str
    secret_key: str
    session_token: str | None = None


def quote(value: str, safe: str = "") -> str:
    return urllib.parse.quote(value, safe=_UNRESERVED + safe)


def sign_v4(
    method: str,
    url: str,
    headers: dict[str, str],
    creds: S3Credentials,
    region: str,
    now: datetime.datetime | None = None,
    payload_sha256: str = EMPTY_SHA256,
    service: str = "s3",
) -> dict[str, str]:
    """Headers for `method url` signed with SigV4: the given ones plus host, x-amz-date,
    x-amz-content-sha256, the session token if any, and Authorization."""
    now = now or datetime.datetime.now(datetime.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    parts = urllib.parse.urlsplit(url)
    out = {k.lower(): v.strip() for k, v in headers.items()}
    out["host"] = parts.netloc
    out["x-amz-date"] = amz_date
    out["x-amz-content-sha256"] = payload_sha256
    if creds.session_token:
        out["x-amz-security-token"] = creds.session_token
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    canonical_query = "&".join(f"{quote(k)}={quote(v)}" for k, v in sorted(query))
    signed = sorted(k for k in out if k != "range")  # Range changes per retry; no need to sign it
    canonical = "\n".join(
        [
            method,
            parts.path or "/",  # already percent-encoded by build_url
            canonical_query,
            "".join(f"{k}:{out[k]}\n" for k in signed),
            ";".join(signed),
            payload_sha256,
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + creds.secret_key).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
    return out


def resolve_s3_endpoint(uri: ObjectStoreUri, endpoint: str | None, region: str | None) -> tuple[str, str, bool]:
    """(endpoint, signing region, path style) for the URI and the model's parameters."""
    if uri.scheme == "oci":
        if endpoint:
            return endpoint.rstrip("/"), region or "us-ashburn-1", True
        if not region:
            raise StoreError(
                f"{uri}: set spec.storage.parameters.region (e.g. us-ashburn-1): the S3-compatible endpoint "
                "of Oracle Object Storage is per region"
            )
        return f"https://{uri.account}.compat.objectstorage.{region}.oraclecloud.com", region, True
    region = uri.region or region or "us-east-1"
    if endpoint:
        return endpoint.rstrip("/"), region, True
    # Virtual-host addressing; a bucket name with dots breaks the TLS wildcard, so path style there.
    if "." in uri.bucket:
        return f"https://s3.{region}.amazonaws.com", region, True
    return f"https://{uri.bucket}.s3.{region}.amazonaws.com", region, False


class S3Store:
    def __init__(self, uri: ObjectStoreUri, endpoint: str | None, region: str | None, secret: str | None) -> None:
        self.uri = uri
        self.name = "Oracle Object Storage (S3 API)" if uri.scheme == "oci" else "S3"
        self.endpoint, self.region, self.path_style = resolve_s3_endpoint(uri, endpoint, region)
        self.secret = secret
        self.creds = S3Credentials(
            require_env("AWS_ACCESS_KEY_ID", secret, "AWS_ACCESS_KEY_ID"),
            require_env("AWS_SECRET_ACCESS_KEY", secret, "AWS_SECRET_ACCESS_KEY"),
            optional_env("AWS_SESSION_TOKEN"),
        )

    def url(self, key: str = "", query: str = "") -> str:
        path = f"/{quote(self.uri.bucket)}" if self.path_style else ""
        if key or not self.path_style:
            path += "/" + quote(key, safe="/")
        return f"{self.endpoint}{path}" + (f"?{query}" if query else "")

    def request(self, method: str, url: str, headers: dict[str, str] | None = None) -> httpx.Request:
        return httpx.Request(method, url, headers=sign_v4(method, url, headers or {}, self.creds, self.region))

    def get_request(self, f: StoreFile, start: int) -> httpx.Request:
        # If-Match pins the content listed: an object replaced mid-download answers 412, not new bytes.
        headers = {"if-match": f'"{f.version}"'}
        if start:
            headers["range"] = f"bytes={start}-"
        return self.request("GET", self.url(f.key), headers)

    def describe_status(self, status: int, what: str) -> str:
        if status in (401, 403):
            where = f"Secret {self.secret}" if self.secret else "the environment"
            return (
                f"HTTP {status} for {what}: access denied by {self.name}; check AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY in {where} and the bucket's policy"
            )
        if status == 404:
            return f"HTTP 404 for {what}: no such bucket or object in {self.name}"
        if status == 412:
            return f"HTTP 412 for {what}: the object changed since it was listed; the next run lists it again"
        return f"HTTP {status} for {what} from {self.name}"

    def list_files(self, calls: Calls) -> list[StoreFile]:
        prefix = self.uri.prefix + "/" if self.uri.prefix else ""
        files: list[StoreFile] = []
        token: str | None = None
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if token:
                query["continuation-token"] = token
            url = self.url(query=urllib.parse.urlencode(sorted(query.items()), quote_via=urllib.parse.quote))
            body = calls.get(f"listing {self.uri}", partial(self.request, "GET", url))
            root = ET.fromstring(body)
            for item in root.iterfind("{*}Contents"):
                key = item.findtext("{*}Key") or ""
                if key.endswith("/"):
                    continue  # a "directory" placeholder object
                size = int(item.findtext("{*}Size") or 0)
                etag = (item.findtext("{*}ETag") or "").strip('"')
                files.append(self._describe(calls, key, key[len(prefix) :], size, etag))
            if (root.findtext("{*}IsTruncated") or "").lower() != "true":
                return files
            token = root.findtext("{*}NextContinuationToken")
            if not token:
                raise StoreError(
                    f"{self.name} said the listing of {self.uri} is truncated but gave no continuation token"
                )

    def _describe(self, calls: Calls, key: str, rel: str, size: int, etag: str) -> StoreFile:
        base = {"path": rel, "size": size, "sha256": None, "git_sha1": "", "key": key, "version": etag}
        if "-" not in etag:
            if len(etag) != 32:
                raise StoreError(f"{key}: {self.name} gives no MD5 ETag ({etag!r}); the object cannot be verified")
            return StoreFile(**base, digest_kind="md5", digest=etag.lower())  # type: ignore[arg-type]
        # A multipart ETag: its value depends on the part size, which HEAD ?partNumber=1 reveals.
        parts = int(etag.rsplit("-", 1)[1])
        head = calls.head(f"sizing the parts of {key}", lambda: self.request("HEAD", self.url(key, "partNumber=1")))
        part_size = int(head.get("content-length", "0"))
        if parts < 1 or part_size <= 0 or part_size * (parts - 1) >= size or part_size * parts < size:
            raise StoreError(
                f"{key}: a multipart object ({parts} parts) whose part size the store does not report; "
                "its ETag cannot be checked, so it is refused: upload it again in one part or with the same part size"
            )
        return StoreFile(**base, digest_kind="s3-multipart-md5", digest=etag.lower(), part_size=part_size)  # type: ignore[arg-type]
