"""The chaos campaign's comparison (devtools.chaos.state) is not blind: extra objects count as
duplicates, missing ones and changed content as differences; UIDs of recreated parents do not."""

from __future__ import annotations

from devtools.chaos.crashes import sample
from devtools.chaos.state import compare, content_digest

BASE = {
    "services/ns/a": {"owners": ["InferenceService/x*"], "hash": True, "content": "c1"},
    "pods/ns/ReplicaSet/x-router-1*:count": 1,
    "inferenceservice/ns/x": {"conditions": ["Ready=True/Ready"]},
}


def test_equal_snapshots_have_no_difference() -> None:
    assert compare(BASE, dict(BASE)) == ([], 0)


def test_extra_object_and_extra_pod_are_duplicates() -> None:
    got = {**BASE, "services/ns/b": {"owners": [], "hash": True, "content": "c2"}}
    got["pods/ns/ReplicaSet/x-router-1*:count"] = 2
    diffs, duplicates = compare(BASE, got)
    assert duplicates == 2
    assert any("extra services/ns/b" in d for d in diffs)


def test_missing_object_and_changed_condition_are_differences() -> None:
    got = {k: v for k, v in BASE.items() if k != "services/ns/a"}
    got["inferenceservice/ns/x"] = {"conditions": ["Ready=False/ComponentsNotReady"]}
    diffs, duplicates = compare(BASE, got)
    assert duplicates == 0
    assert len(diffs) == 2


def test_content_digest_ignores_parent_uids_and_server_fields() -> None:
    def svc(uid: str, ip: str, port: int = 80) -> dict[str, object]:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "a", "annotations": {"ome.io/rendered-hash": uid[:4]}, "labels": {"l": uid}},
            "spec": {"clusterIP": ip, "ports": [{"port": port}]},
        }

    assert content_digest("services", svc("uid-1", "10.0.0.1"), {"uid-1"}) == content_digest(
        "services", svc("uid-2", "10.0.0.2"), {"uid-2"}
    )
    assert content_digest("services", svc("uid-1", "10.0.0.1"), {"uid-1"}) != content_digest(
        "services", svc("uid-1", "10.0.0.1", 81), {"uid-1"}
    )


def test_sample_spreads_and_keeps_both_ends() -> None:
    assert sample(5, 10) == [1, 2, 3, 4, 5]
    ks = sample(83, 6)
    assert ks[0] == 1 and ks[-1] == 83 and len(ks) == 6
    assert sample(36, 1) == [18]  # regression: one sample divided by zero and lost the C1 row


def test_content_digest_leaves_out_the_data_the_download_jobs_write() -> None:
    # As a list answer gives it: no kind on the item.
    def progress(data: dict[str, str], name: str = "m-cluster-download") -> dict[str, object]:
        return {"metadata": {"name": name, "labels": {"ome.io/model": "cluster.m"}}, "data": data}

    expected = {"_expected": '["h200-001","h200-003"]'}
    assert content_digest("configmaps", progress(expected), set()) == content_digest(
        "configmaps", progress({**expected, "h200-001": "{}", "_claim.f1": "h200-003"}), set()
    )
    # The list of expected nodes is the operator's: a different one is a different rendering.
    assert content_digest("configmaps", progress(expected), set()) != content_digest(
        "configmaps", progress({"_expected": '["h200-001"]'}), set()
    )
    # Any other ConfigMap's data is rendered content.
    assert content_digest("configmaps", progress({}, "m-parameters"), set()) != content_digest(
        "configmaps", progress({"a": "b"}, "m-parameters"), set()
    )
