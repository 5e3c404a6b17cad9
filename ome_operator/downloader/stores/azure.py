"""Azure Blob Storage through its REST API, signed with Shared Key (or a SAS token).

Credentials come from the Job's environment, filled from the model's `storage.key` Secret:
AZURE_STORAGE_KEY (the account key, Shared Key signing) or AZURE_STORAGE_SAS_TOKEN (appended to
every URL). With no Secret named, requests are anonymous (a public container). Blobs are verified
against their Content-MD5; a blob uploaded without one has nothing to check against and is refused.

Endpoint: `https://<account>.blob.core.windows.net`, or `parameters.endpoint` (Azurite serves
`http://127.0.0.1:10000/<account>`: the account is the first path segment, and Shared Key's
canonical resource then names it twice, as the service expects).
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import hashlib
import hmac
import urllib.parse
import xml.etree.ElementTree as ET
from functools import partial

import httpx

from ome_operator.api.storage_uri import ObjectStoreUri
from ome_operator.downloader.stores.calls import Calls
from ome_operator.downloader.stores.common import CredentialsMissing, StoreError, StoreFile, b64_to_hex, optional_env

API_VERSION = "2021-08-06"
_SIGNED_STANDARD = (
    "content-encoding", "content-language", "content-length", "content-md5", "content-type", "date",
    "if-modified-since", "if-match", "if-none-match", "if-unmodified-since", "range",
)  # fmt: skip


def sign_shared_key(
    method: str, url: str, headers: dict[str, str], account: str, key: str, now: datetime.datetime | None = None
) -> dict[str, str]:
    """Headers with x-ms-date, x-ms-version and a Shared Key Authorization for `method url`."""
    now = now or datetime.datetime.now(datetime.UTC)
    out = {k.lower(): v for k, v in headers.items()}
    out["x-ms-date"] = email.utils.format_datetime(now, usegmt=True)
    out.setdefault("x-ms-version", API_VERSION)
    parts = urllib.parse.urlsplit(url)
    lines = [method]
    for name in _SIGNED_STANDARD:
        value = out.get(name, "")
        lines.append("" if name == "content-length" and value == "0" else value)
    ms = sorted((k, v.strip()) for k, v in out.items() if k.startswith("x-ms-"))
    resource = f"/{account}{parts.path or '/'}"
    query: dict[str, list[str]] = {}
    for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        query.setdefault(k.lower(), []).append(v)
    for k in sorted(query):
        resource += f"\n{k}:{','.join(sorted(query[k]))}"
    to_sign = "\n".join(lines) + "\n" + "".join(f"{k}:{v}\n" for k, v in ms) + resource
    mac = hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()
    out["authorization"] = f"SharedKey {account}:{base64.b64encode(mac).decode()}"
    return out


class AzureStore:
    name = "Azure Blob Storage"

    def __init__(self, uri: ObjectStoreUri, endpoint: str | None, secret: str | None) -> None:
        self.uri = uri
        self.account = uri.account or ""
        self.endpoint = (endpoint or f"https://{self.account}.blob.core.windows.net").rstrip("/")
        self.secret = secret
        self.key = optional_env("AZURE_STORAGE_KEY")
        self.sas = (optional_env("AZURE_STORAGE_SAS_TOKEN") or "").lstrip("?") or None
        if secret and not self.key and not self.sas:
            raise CredentialsMissing(
                f"credential missing: Secret {secret} does not exist or has neither data key 'AZURE_STORAGE_KEY' nor "
                "'AZURE_STORAGE_SAS_TOKEN' (both env vars are empty); add one of them to the Secret, or fix spec.storage.key"
            )

    def url(self, blob: str = "", query: str = "") -> str:
        path = f"/{urllib.parse.quote(self.uri.bucket)}" + (f"/{urllib.parse.quote(blob)}" if blob else "")
        if self.sas and not self.key:
            query = f"{query}&{self.sas}" if query else self.sas
        return f"{self.endpoint}{path}" + (f"?{query}" if query else "")

    def request(self, method: str, url: str, headers: dict[str, str] | None = None) -> httpx.Request:
        headers = {"x-ms-version": API_VERSION, **(headers or {})}
        if self.key:
            headers = sign_shared_key(method, url, headers, self.account, self.key)
        return httpx.Request(method, url, headers=headers)

    def get_request(self, f: StoreFile, start: int) -> httpx.Request:
        # If-Match pins the content listed: a blob replaced mid-download answers 412, not new bytes.
        headers = {"if-match": f'"{f.version}"' if f.version and not f.version.startswith('"') else f.version}
        if start:
            headers["x-ms-range"] = f"bytes={start}-"
        return self.request("GET", self.url(f.key), {k: v for k, v in headers.items() if v})

    def describe_status(self, status: int, what: str) -> str:
        if status in (401, 403):
            where = f"Secret {self.secret}" if self.secret else "no credential (spec.storage.key unset)"
            return f"HTTP {status} for {what}: access denied by {self.name} with {where}"
        if status == 404:
            return f"HTTP 404 for {what}: no such container or blob in {self.name}"
        if status == 412:
            return f"HTTP 412 for {what}: the blob changed since it was listed; the next run lists it again"
        return f"HTTP {status} for {what} from {self.name}"

    def list_files(self, calls: Calls) -> list[StoreFile]:
        prefix = self.uri.prefix + "/" if self.uri.prefix else ""
        files: list[StoreFile] = []
        marker = ""
        while True:
            query = {"restype": "container", "comp": "list", "prefix": prefix}
            if marker:
                query["marker"] = marker
            url = self.url(query=urllib.parse.urlencode(query, quote_via=urllib.parse.quote))
            root = ET.fromstring(calls.get(f"listing {self.uri}", partial(self.request, "GET", url)))
            for blob in root.iterfind("Blobs/Blob"):
                name = blob.findtext("Name") or ""
                props = blob.find("Properties")
                size = int((props.findtext("Content-Length") if props is not None else None) or 0)
                md5 = (props.findtext("Content-MD5") if props is not None else None) or ""
                etag = (props.findtext("Etag") if props is not None else None) or ""
                if not md5:
                    raise StoreError(
                        f"{name}: the blob has no Content-MD5, so it cannot be verified; set it on upload "
                        "(azcopy --put-md5, or the SDK's content_md5)"
                    )
                files.append(
                    StoreFile(
                        path=name[len(prefix) :],
                        size=size,
                        sha256=None,
                        git_sha1="",
                        key=name,
                        digest_kind="md5",
                        digest=b64_to_hex(md5),
                        version=etag,
                    )
                )
            marker = root.findtext("NextMarker") or ""
            if not marker:
                return files
