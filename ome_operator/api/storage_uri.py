"""Storage URIs a model may name, parsed into typed references.

Accepted (as in OME's `storage.storageUri`):
- `hf://org/repo` or `hf://org/repo@revision` (a branch, tag or 40-hex commit; default `main`);
  a bare `hf://repo` is a legacy single-segment model id and is accepted too;
- `local:///absolute/path`: a directory already on the node; validated, never copied;
- `pvc://name/sub/path` or `pvc://namespace:name/sub/path`: a PersistentVolumeClaim the Job mounts;
  the sub path is relative to the claim's root.
OME also names `oci://`, `s3://`, `gs://` and `az://`; the downloader does not serve them yet, so
they are refused (at admission by the CRD's CEL rule built from SERVED_SCHEMES, offline by the same
parser) with a message that names the accepted forms, instead of failing later inside a Job.

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

SUPPORTED = "hf://org/repo[@revision], local:///absolute/path, pvc://[namespace:]claim/sub/path"
# Schemes the downloader serves, in the order the CRD rule and messages list them.
SERVED_SCHEMES = ("hf", "local", "pvc")
# Schemes OME's API names that we recognise but cannot download yet.
UNSERVED_SCHEMES = ("oci", "s3", "gs", "az")


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


StorageUri = HfUri | LocalUri | PvcUri


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
    if scheme in UNSERVED_SCHEMES:
        raise StorageUriError(
            f"unsupported storage URI scheme {scheme!r} in {uri!r} (OME's {scheme}:// is not served yet); "
            f"use one of {SUPPORTED}"
        )
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


def _clean_path(uri: str, raw: str, *, absolute: bool) -> PurePosixPath:
    path = PurePosixPath(raw if absolute else raw.lstrip("/"))
    if ".." in path.parts:
        raise StorageUriError(f"{uri!r}: '..' is not allowed in the path")
    if "\x00" in raw:
        raise StorageUriError(f"{uri!r}: the path contains a NUL byte")
    return path


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
