"""The watch cache's bookkeeping without a server: selectors, write folding, echoes, 410 and relist diffs.

The streams themselves run against the real control plane in tests/integration/test_cache.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from ome_operator.kube.cache import Cache
from ome_operator.kube.informer import Gone, Informer, Scope, slim
from ome_operator.kube.selectors import parse_selector, selector_matches


def obj(name: str, rv: int, namespace: str | None = "ns", labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "resourceVersion": str(rv), "labels": labels or {}}
    if namespace is not None:
        meta["namespace"] = namespace
    return {"kind": "Service", "apiVersion": "v1", "metadata": meta}


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def __call__(self, kind: str, o: dict[str, Any]) -> None:
        self.events.append((kind, o["metadata"]["name"]))


def informer(scope: Scope | None = None) -> tuple[Informer, Recorder]:
    rec = Recorder()
    return Informer(None, scope or Scope("Service"), rec), rec  # type: ignore[arg-type]  # no requests here


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("a=b", {"a": "b"}, True),
        ("a==b", {"a": "c"}, False),
        ("a!=b", {}, True),
        ("a", {"a": ""}, True),
        ("!a", {"a": "x"}, False),
        ("a=b,c", {"a": "b", "c": "1"}, True),
        ("a=b,c", {"a": "b"}, False),
        (
            "models.ome.io/clusterbasemodel.kimi-k2-instruct",
            {"models.ome.io/clusterbasemodel.kimi-k2-instruct": "Ready"},
            True,
        ),
    ],
)
def test_selectors_match_like_the_api_server(selector: str, labels: dict[str, str], matches: bool) -> None:
    terms = parse_selector(selector)
    assert terms is not None
    assert selector_matches(terms, labels) is matches


def test_set_based_selectors_are_left_to_the_api_server() -> None:
    assert parse_selector("env in (a,b)") is None
    assert parse_selector("env notin (a)") is None


def test_watch_events_update_the_store_and_a_write_echo_is_not_reported_twice() -> None:
    inf, rec = informer()
    inf._apply({"type": "ADDED", "object": obj("a", 1)})
    inf.put(obj("a", 2))  # the response of our own write
    inf._apply({"type": "MODIFIED", "object": obj("a", 2)})  # the watch's echo of that write
    inf._apply({"type": "MODIFIED", "object": obj("a", 3)})
    inf._apply({"type": "DELETED", "object": obj("a", 4)})
    assert rec.events == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    assert inf.get("ns", "a") is None
    assert inf.resource_version == "4"


def test_an_older_copy_never_replaces_a_newer_one() -> None:
    inf, _ = informer()
    assert inf.put(obj("a", 5))
    assert not inf.put(obj("a", 4))
    assert inf.get("ns", "a") == obj("a", 5)


def test_a_bookmark_moves_the_resume_point_and_410_asks_for_a_relist() -> None:
    inf, rec = informer()
    inf._apply({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "42"}}})
    assert inf.resource_version == "42" and rec.events == []
    with pytest.raises(Gone):
        inf._apply({"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}})


class Page:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    def read(self) -> bytes:
        return json.dumps(self.body).encode()


def test_a_relist_reports_what_vanished_while_the_watch_was_down() -> None:
    inf, rec = informer()
    inf._apply({"type": "ADDED", "object": obj("kept", 1)})
    inf._apply({"type": "ADDED", "object": obj("gone", 2)})
    inf._apply({"type": "ADDED", "object": obj("changed", 3)})
    page = {"metadata": {"resourceVersion": "9"}, "items": [obj("kept", 1), obj("changed", 8), obj("new", 9)]}
    inf._get = lambda query, timeout: Page(page)  # type: ignore[method-assign]
    rec.events.clear()
    inf.relist()
    assert sorted(rec.events) == [("ADDED", "new"), ("DELETED", "gone"), ("MODIFIED", "changed")]
    assert inf.resource_version == "9"
    assert {o["metadata"]["name"] for o in inf.snapshot()} == {"kept", "changed", "new"}


def test_a_selected_store_takes_only_objects_its_selector_streams() -> None:
    cache = Cache(None, [Scope("Service", None, "managed=yes")])  # type: ignore[arg-type]
    cache.observe(obj("ours", 1, labels={"managed": "yes"}))
    cache.observe(obj("theirs", 1))
    store = cache.informer("Service", "ns")
    assert store is not None
    assert [o["metadata"]["name"] for o in store.snapshot()] == ["ours"]
    assert cache.list(store, "ns", "managed=yes,x") == []
    cache.forget("Service", "ours", "ns")
    assert store.snapshot() == []


def test_managed_fields_are_not_kept() -> None:
    o = obj("a", 1)
    o["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    assert "managedFields" not in slim(o)["metadata"]
    assert "managedFields" in o["metadata"]  # the caller's object is untouched
