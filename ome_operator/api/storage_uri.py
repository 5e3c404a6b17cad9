"""Storage URIs a model may name, parsed into typed references.

Accepted (as in OME's `storage.storageUri`):
- `hf://org/repo` or `hf://org/repo@revision` (a branch, tag or 40-hex commit; default `main`);
  a bare `hf://repo` is a legacy single-segment model id and is accepted too;
- `local:///absolute/path`: a directory already on the node; validated, never copied;
- `pvc://name/sub/path` or `pvc://namespace:name/sub/path`: a PersistentVolumeClaim the Job mounts;
  the sub path is relative to the claim's root.
- `s3://bucket/prefix` or `s3://bucket@region/prefix`: an S3 (or S3-compatible) bucket;
- `oci://n/<namespace>/b/<bucket>/o/<prefix>`: Oracle Cloud Object Storage, read through its
  S3-compatible API (`https://<namespace>.compat.objectstorage.<region>.oraclecloud.com`);
- `gs://bucket/prefix`: Google Cloud Storage;
- `az://account/container/prefix` (or `az://account.blob.core.windows.net/container/prefix`): Azure Blob.
Object-store prefixes name a "directory": every object under `<prefix>/` is part of the model.
Any other scheme is refused (at admission by the CRD's CEL rule built from SERVED_SCHEMES, offline
by the same parser) with a message that names the accepted forms, instead of failing in a Job.

This module is the one place that knows what a storage URI means: validation, render (is a model
served in place, which claim to mount), the downloader and reconcile all call it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

# Hub repository names: alphanumerics plus `-_.`, not starting or ending with `-`/`.`, no `--`/`..`.
_HF_NAME = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")
# Git ref names are permissive; reject only what cannot be a ref or would break a URL path.
_REVISION = re.compile(r"^(?!.*\.\.)(?!/)(?!.*//)[A-Za-z0-9._/+-]{1,255}(?<!/)$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")

SUPPORTED = (
    "hf://org/repo[@revision], local:///absolute/path, pvc://[namespace:]claim/sub/path, "
    "s3://bucket[@region]/prefix, oci://n/<namespace>/b/<bucket>/o/<prefix>, gs://bucket/prefix, "
    "az://account/container/prefix"
)
# Schemes the downloader serves, in the order the CRD rule and messages list them.
SERVED_SCHEMES = ("hf", "local", "pvc", "s3", "oci", "gs", "az")
# Object-store schemes: downloaded by ome_operator.downloader.stores.
OBJECT_STORE_SCHEMES = ("s3", "oci", "gs", "az")
# S3 bucket names (also OCI's, which allow upper case and '_'), GCS bucket names (may contain dots),
# Azure account and container names, OCI namespaces.
_S3_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")
_GCS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_AZ_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_AZ_CONTAINER = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_OCI_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
_AZ_HOST_SUFFIX = ".blob.core.windows.net"


class StorageUriError(ValueError):
    """The storage URI cannot be used; the message says why and what is accepted."""


@dataclass(frozen=True)
class HfUri:
    repo_id: str
    revision: str | None  # None: the caller's default (`--revision`, else main)

    def __str__(self) -> str:
        return f"hf://{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class LocalUri:
    path: PurePosixPath

    def __str__(self) -> str:
        return f"local://{self.path}"


@dataclass(frozen=True)
class PvcUri:
    namespace: str | None  # None: the model's own namespace
    claim: str
    sub_path: PurePosixPath  # relative, possibly "."

    def __str__(self) -> str:
        ns = f"{self.namespace}:" if self.namespace else ""
        return f"pvc://{ns}{self.claim}/{self.sub_path}"


@dataclass(frozen=True)
class ObjectStoreUri:
    """An object-store location: every object under `prefix` (a "directory"; "" is the whole bucket).

    `scheme` is s3, oci, gs or az. `bucket` is the bucket (Azure: the container). `account` is the
    Azure storage account or the OCI namespace; `region` is an S3 region given in the URI.
    """

    scheme: str
    bucket: str
    prefix: str
    account: str | None = None
    region: str | None = None

    def __str__(self) -> str:
        if self.scheme == "oci":
            return f"oci://n/{self.account}/b/{self.bucket}/o/{self.prefix}"
        if self.scheme == "az":
            return f"az://{self.account}/{self.bucket}/{self.prefix}"
        where = f"{self.bucket}@{self.region}" if self.region else self.bucket
        return f"{self.scheme}://{where}/{self.prefix}"


StorageUri = HfUri | LocalUri | PvcUri | ObjectStoreUri


def parse_storage_uri(uri: str) -> StorageUri:
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise StorageUriError(f"storage URI {uri!r} has no scheme; use one of {SUPPORTED}")
    scheme = scheme.lower()
    if scheme == "hf":
        return _parse_hf(uri, rest)
    if scheme == "local":
        return _parse_local(uri, rest)
    if scheme == "pvc":
        return _parse_pvc(uri, rest)
    if scheme in ("s3", "gs"):
        return _parse_bucket(uri, scheme, rest)
    if scheme == "oci":
        return _parse_oci(uri, rest)
    if scheme == "az":
        return _parse_az(uri, rest)
    raise StorageUriError(f"unsupported storage URI scheme {scheme!r} in {uri!r}; use one of {SUPPORTED}")


def _parse_hf(uri: str, rest: str) -> HfUri:
    repo, at, revision = rest.partition("@")
    parts = repo.split("/")
    if not repo or len(parts) > 2 or not all(_HF_NAME.match(p) for p in parts):
        raise StorageUriError(
            f"{uri!r}: {repo!r} is not a hub repository id (expected org/name, letters, digits, '-', '_' and '.')"
        )
    if at and not _REVISION.match(revision):
        raise StorageUriError(f"{uri!r}: {revision!r} is not a valid revision (branch, tag or commit)")
    return HfUri(repo_id=repo, revision=revision or None)


def _parse_local(uri: str, rest: str) -> LocalUri:
    if not rest.startswith("/"):
        raise StorageUriError(f"{uri!r}: a local path must be absolute: local:///absolute/path")
    return LocalUri(path=_clean_path(uri, rest, absolute=True))


def _parse_pvc(uri: str, rest: str) -> PvcUri:
    head, _, sub = rest.partition("/")
    namespace, colon, claim = head.rpartition(":")
    if not colon:
        namespace, claim = "", head
    if namespace and not _DNS_LABEL.match(namespace):
        raise StorageUriError(f"{uri!r}: {namespace!r} is not a valid namespace name")
    if not _DNS_SUBDOMAIN.match(claim):
        raise StorageUriError(
            f"{uri!r}: {claim!r} is not a valid PersistentVolumeClaim name; expected pvc://[namespace:]claim/sub/path"
        )
    sub_path = _clean_path(uri, sub, absolute=False) if sub.strip("/") else PurePosixPath(".")
    return PvcUri(namespace=namespace or None, claim=claim, sub_path=sub_path)


def _parse_bucket(uri: str, scheme: str, rest: str) -> ObjectStoreUri:
    head, _, prefix = rest.partition("/")
    bucket, at, region = head.partition("@") if scheme == "s3" else (head, "", "")
    pattern = _S3_BUCKET if scheme == "s3" else _GCS_BUCKET
    if not pattern.match(bucket):
        raise StorageUriError(f"{uri!r}: {bucket!r} is not a valid bucket name; expected {scheme}://bucket/prefix")
    if at and not _REGION.match(region):
        raise StorageUriError(f"{uri!r}: {region!r} is not a valid region; expected s3://bucket@region/prefix")
    return ObjectStoreUri(scheme, bucket, _clean_prefix(uri, prefix), region=region or None)


def _parse_oci(uri: str, rest: str) -> ObjectStoreUri:
    parts = rest.split("/", 5)
    if len(parts) < 5 or parts[0] != "n" or parts[2] != "b" or parts[4] != "o":
        raise StorageUriError(f"{uri!r}: expected oci://n/<namespace>/b/<bucket>/o/<prefix>")
    namespace, bucket = parts[1], parts[3]
    if not _OCI_NAMESPACE.match(namespace):
        raise StorageUriError(f"{uri!r}: {namespace!r} is not a valid Object Storage namespace")
    if not _S3_BUCKET.match(bucket):
        raise StorageUriError(f"{uri!r}: {bucket!r} is not a valid bucket name")
    prefix = parts[5] if len(parts) > 5 else ""
    return ObjectStoreUri("oci", bucket, _clean_prefix(uri, prefix), account=namespace)


def _parse_az(uri: str, rest: str) -> ObjectStoreUri:
    account, _, tail = rest.partition("/")
    if account.endswith(_AZ_HOST_SUFFIX):
        account = account[: -len(_AZ_HOST_SUFFIX)]
    container, _, prefix = tail.partition("/")
    if not _AZ_ACCOUNT.match(account):
        raise StorageUriError(
            f"{uri!r}: {account!r} is not a storage account name (3-24 lower-case letters and digits); "
            "expected az://account/container/prefix"
        )
    if not _AZ_CONTAINER.match(container):
        raise StorageUriError(
            f"{uri!r}: {container!r} is not a valid container name; expected az://account/container/prefix"
        )
    return ObjectStoreUri("az", container, _clean_prefix(uri, prefix), account=account)


def _clean_prefix(uri: str, raw: str) -> str:
    if "\x00" in raw or "\\" in raw:
        raise StorageUriError(f"{uri!r}: the prefix contains a NUL byte or a backslash")
    parts = [p for p in raw.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise StorageUriError(f"{uri!r}: '.' and '..' are not allowed in the prefix")
    return "/".join(parts)


def _clean_path(uri: str, raw: str, *, absolute: bool) -> PurePosixPath:
    path = PurePosixPath(raw if absolute else raw.lstrip("/"))
    if ".." in path.parts:
        raise StorageUriError(f"{uri!r}: '..' is not allowed in the path")
    if "\x00" in raw:
        raise StorageUriError(f"{uri!r}: the path contains a NUL byte")
    return path


def is_object_store(uri: StorageUri) -> bool:
    return isinstance(uri, ObjectStoreUri)


def is_in_place(uri: StorageUri) -> bool:
    """local:// and pvc:// weights are served where they are: mounted read-only, never downloaded."""
    return isinstance(uri, LocalUri | PvcUri)


def effective_revision(uri: HfUri, flag: str | None) -> str:
    """The revision to resolve: the URI's `@rev` and `--revision` must agree when both are given."""
    if uri.revision and flag and uri.revision != flag:
        raise StorageUriError(
            f"{uri}: the URI pins revision {uri.revision!r} but --revision is {flag!r}; give one of them"
        )
    revision = uri.revision or flag or "main"
    if not _REVISION.match(revision):
        raise StorageUriError(f"{revision!r} is not a valid revision (branch, tag or commit)")
    return revision
