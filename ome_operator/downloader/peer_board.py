"""The model's progress ConfigMap as the board its download Jobs share: each node's record
under `_peer.<node>`, one claim key per file under `_claim.<hash of the path>`, and the operator's
list of expected nodes under `_expected` (the protocol is described in peer.py).

Node names cannot contain `_`, so no key collides with a node's progress key.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from ome_operator.api.model import PROGRESS_EXPECTED_KEY
from ome_operator.downloader.kubeapi import KubeTarget

KEY_PREFIX = "_peer."
CLAIM_PREFIX = "_claim."


def claim_key(path: str) -> str:
    return CLAIM_PREFIX + hashlib.sha256(path.encode()).hexdigest()[:24]


def claim_value(path: str, node: str) -> str:
    return json.dumps({"node": node, "path": path}, separators=(",", ":"), sort_keys=True)


@dataclass
class PeerRecord:
    url: str
    token: str
    commit: str
    have: list[str] = field(default_factory=list)
    beat: int = 0
    done: bool = False
    failed: bool = False

    def to_json(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"), sort_keys=True)

    @classmethod
    def parse(cls, text: str) -> PeerRecord | None:
        try:
            raw = json.loads(text)
            return cls(
                url=str(raw["url"]), token=str(raw["token"]), commit=str(raw["commit"]),
                have=[str(p) for p in raw.get("have", [])], beat=int(raw.get("beat", 0)),
                done=bool(raw.get("done")), failed=bool(raw.get("failed")),
            )  # fmt: skip
        except (ValueError, KeyError, TypeError):
            return None


@dataclass
class BoardView:
    resource_version: str
    records: dict[str, PeerRecord]
    claims: dict[str, str]  # claim key -> its exact current value
    expected: frozenset[str] = frozenset()  # the nodes the operator created Jobs for


def parse_expected(data: dict[str, str]) -> frozenset[str]:
    """The operator's list of nodes with a Job; empty when absent or unreadable (then nobody waits)."""
    try:
        names = json.loads(data.get(PROGRESS_EXPECTED_KEY) or "[]")
    except ValueError:
        return frozenset()
    return frozenset(str(n) for n in names) if isinstance(names, list) else frozenset()


class Board:
    """The progress ConfigMap as a shared board."""

    def __init__(self, target: KubeTarget, namespace: str, name: str) -> None:
        self._target = target
        self._url = (
            f"{target.server}/api/v1/namespaces/{urllib.parse.quote(namespace)}/configmaps/{urllib.parse.quote(name)}"
        )
        self._client = httpx.Client(verify=target.verify, timeout=10.0)

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"accept": "application/json"}
        if content_type:
            headers["content-type"] = content_type
        bearer = self._target.bearer()
        if bearer:
            headers["authorization"] = f"Bearer {bearer}"
        return headers

    def read(self, fresh: bool = False) -> BoardView | None:
        """The board; unless `fresh`, from the API server's watch cache rather than a quorum read
        of etcd: 16 nodes poll it, and a read a moment old only delays a decision (claims are
        settled by test-and-swap). Setting up the claim keys needs the current resourceVersion."""
        params = {} if fresh else {"resourceVersion": "0"}
        try:
            response = self._client.get(self._url, headers=self._headers(), params=params)
            if response.status_code != 200:
                return None
            obj = response.json()
            data = obj.get("data") or {}
            records = {}
            for key, value in data.items():
                if key.startswith(KEY_PREFIX) and (record := PeerRecord.parse(value)) is not None:
                    records[key[len(KEY_PREFIX) :]] = record
            claims = {k: v for k, v in data.items() if k.startswith(CLAIM_PREFIX)}
            return BoardView(str(obj["metadata"]["resourceVersion"]), records, claims, parse_expected(data))
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None

    def _patch(self, body: Any, content_type: str) -> int | None:
        try:
            response = self._client.patch(
                self._url, content=json.dumps(body).encode(), headers=self._headers(content_type)
            )
        except httpx.HTTPError:
            return None
        return response.status_code

    def write(self, node: str, record: PeerRecord) -> bool:
        return self._patch({"data": {KEY_PREFIX + node: record.to_json()}}, "application/merge-patch+json") == 200

    def create_claims(self, paths: Iterable[str], resource_version: str) -> bool:
        """Add a free claim key per path, only if nobody wrote the ConfigMap since `resource_version`."""
        body = {"metadata": {"resourceVersion": resource_version},
                "data": {claim_key(p): claim_value(p, "") for p in paths}}  # fmt: skip
        return self._patch(body, "application/merge-patch+json") == 200

    def swap_claim(self, path: str, expected: str, new: str) -> bool | None:
        """Replace the claim's value if it is still `expected`: True done, False lost, None unknown."""
        key = claim_key(path)
        ops = [{"op": "test", "path": f"/data/{key}", "value": expected},
               {"op": "replace", "path": f"/data/{key}", "value": new}]  # fmt: skip
        status = self._patch(ops, "application/json-patch+json")
        if status == 200:
            return True
        if status == 422:
            return False
        return None

    def close(self) -> None:
        self._client.close()
