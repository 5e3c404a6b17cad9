"""Google Cloud Storage through its JSON API: list the prefix, then ranged `alt=media` GETs.

Auth: a Bearer token from GOOGLE_OAUTH_ACCESS_TOKEN, which the Job fills from the `token` data
key of the model's `storage.key` Secret; with no Secret named, requests are anonymous (public
buckets). Every GET names the object's generation, so an object replaced during the download
cannot mix two versions. Verified against `md5Hash`, or `crc32c` for composite objects.
"""

from __future__ import annotations

import json
import urllib.parse
from functools import partial

import httpx

from ome_operator.api.storage_uri import ObjectStoreUri
from ome_operator.downloader.stores.calls import Calls
from ome_operator.downloader.stores.common import StoreError, StoreFile, b64_to_hex, require_env

DEFAULT_ENDPOINT = "https://storage.googleapis.com"


class GcsStore:
    name = "Google Cloud Storage"

    def __init__(self, uri: ObjectStoreUri, endpoint: str | None, secret: str | None) -> None:
        self.uri = uri
        self.endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self.secret = secret
        self.token = require_env("GOOGLE_OAUTH_ACCESS_TOKEN", secret, "token") if secret else None

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        return headers

    def _object_url(self, name: str) -> str:
        bucket = urllib.parse.quote(self.uri.bucket, safe="")
        return f"{self.endpoint}/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}"

    def get_request(self, f: StoreFile, start: int) -> httpx.Request:
        url = (
            f"{self._object_url(f.key)}?alt=media&generation={f.version}"
            if f.version
            else f"{self._object_url(f.key)}?alt=media"
        )
        return httpx.Request("GET", url, headers=self._headers({"range": f"bytes={start}-"} if start else None))

    def describe_status(self, status: int, what: str) -> str:
        if status in (401, 403):
            where = (
                f"the `token` key of Secret {self.secret}" if self.secret else "no credential (spec.storage.key unset)"
            )
            return f"HTTP {status} for {what}: access denied by {self.name} with {where}"
        if status == 404:
            return f"HTTP 404 for {what}: no such bucket or object in {self.name}"
        return f"HTTP {status} for {what} from {self.name}"

    def list_files(self, calls: Calls) -> list[StoreFile]:
        prefix = self.uri.prefix + "/" if self.uri.prefix else ""
        bucket = urllib.parse.quote(self.uri.bucket, safe="")
        files: list[StoreFile] = []
        page: str | None = None
        while True:
            query = {"prefix": prefix, "fields": "items(name,size,md5Hash,crc32c,generation),nextPageToken"}
            if page:
                query["pageToken"] = page
            url = f"{self.endpoint}/storage/v1/b/{bucket}/o?{urllib.parse.urlencode(query)}"
            request = partial(httpx.Request, "GET", url, headers=self._headers())
            body = json.loads(calls.get(f"listing {self.uri}", request))
            for item in body.get("items") or []:
                name = str(item["name"])
                if name.endswith("/"):
                    continue
                files.append(self._describe(item, name, name[len(prefix) :]))
            page = body.get("nextPageToken")
            if not page:
                return files

    def _describe(self, item: dict[str, str], name: str, rel: str) -> StoreFile:
        base = {"path": rel, "size": int(item.get("size") or 0), "sha256": None, "git_sha1": "", "key": name}
        version = str(item.get("generation") or "")
        if item.get("md5Hash"):
            return StoreFile(**base, digest_kind="md5", digest=b64_to_hex(item["md5Hash"]), version=version)  # type: ignore[arg-type]
        if item.get("crc32c"):
            return StoreFile(**base, digest_kind="crc32c", digest=b64_to_hex(item["crc32c"]), version=version)  # type: ignore[arg-type]
        raise StoreError(f"{name}: {self.name} lists neither md5Hash nor crc32c; the object cannot be verified")
