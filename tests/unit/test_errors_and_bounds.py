"""Error classification, field-ownership drift, group revisions, the refusal book and the write budget."""

from __future__ import annotations

import json
from typing import Any

from kubernetes.client.exceptions import ApiException

from ome_operator.api.reasons import Cond
from ome_operator.kube.errors import classify, field_of, is_transient
from ome_operator.reconcile.budget import CHUNK
from ome_operator.reconcile.children import apply_children, is_subset, needs_apply, with_group_revisions, with_hash
from ome_operator.reconcile.refusals import FIRST_RETRY, MAX_RETRY, RefusalBook
from ome_operator.render.checks import check_container_size, check_label_map, check_resources

Obj = dict[str, Any]


def api_error(status: int, message: str) -> ApiException:
    exc = ApiException(status=status, reason="x")
    exc.body = json.dumps({"kind": "Status", "message": message})
    return exc


SSA_500 = (
    "failed to create typed patch object (ns/x-engine-0; apps/v1, Kind=StatefulSet): "
    '.spec.template.spec.containers[name="c"].env: duplicate entries for key [name="A"]'
)


def test_refusals_are_permanent_and_timing_answers_are_not() -> None:
    assert classify(api_error(422, 'StatefulSet.apps "x" is invalid: spec.template.spec.x: Invalid')).permanent
    assert classify(api_error(400, "bad label")).permanent
    refusal = classify(api_error(500, SSA_500))
    assert refusal.permanent and refusal.field.startswith("spec.template.spec.containers")
    assert classify(api_error(500, "field not declared in schema")).permanent
    for status in (409, 429, 500, 503, 504):
        assert not classify(api_error(status, "etcdserver: request timed out")).permanent
        assert is_transient(api_error(status, "etcdserver: request timed out"))
    assert is_transient(ConnectionResetError())
    assert not is_transient(AttributeError("'str' object has no attribute 'get'"))
    assert field_of("spec.containers[0].image: Required value") == "spec.containers[0].image"


def test_foreign_items_in_keyed_lists_are_not_drift() -> None:
    want = {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}], "args": ["--x"]}
    foreign = {"env": [{"name": "A", "value": "1"}, {"name": "FOREIGN", "value": "y"}, {"name": "B", "value": "2"}]}
    assert is_subset(want, {**foreign, "args": ["--x"]})
    assert not is_subset(
        want, {"env": [{"name": "A", "value": "changed"}, {"name": "B", "value": "2"}], "args": ["--x"]}
    )
    assert not is_subset(want, {"env": [{"name": "A", "value": "1"}], "args": ["--x"]})  # ours removed
    assert not is_subset(want, {"env": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}], "args": ["--x"]})
    assert not is_subset(want, {**foreign, "args": ["--x", "--y"]})  # scalar lists are atomic


def sts(group: str, role: str, env: str) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": f"x-{group}-{role}",
            "namespace": "ns",
            "labels": {"component": "engine", "ome.io/group": group},
        },
        "spec": {
            "template": {"metadata": {}, "spec": {"containers": [{"name": "c", "env": [{"name": "E", "value": env}]}]}}
        },
    }


def test_a_leader_only_change_changes_both_templates_of_its_group() -> None:
    before, _ = with_group_revisions([sts("0", "leader", "a"), sts("0", "worker", "a"), sts("1", "leader", "a")])
    after, _ = with_group_revisions([sts("0", "leader", "b"), sts("0", "worker", "a"), sts("1", "leader", "a")])
    assert needs_apply(with_hash(after[1]), with_hash(before[1]))  # the worker rolls with its leader
    assert not needs_apply(with_hash(after[2]), with_hash(before[2]))  # another group is untouched


def test_the_book_backs_off_and_a_new_input_is_tried_at_once() -> None:
    clock = [0.0]
    book = RefusalBook(clock=lambda: clock[0])
    cond = Cond("ChildrenApplied", False, "ApplyFailed", "refused")
    assert book.record("k", "p1", cond)
    assert book.blocked("k", "p1") is cond
    assert book.blocked("k", "p2") is None  # the spec changed
    clock[0] = FIRST_RETRY
    assert book.blocked("k", "p1") is None
    assert not book.record("k", "p1", cond)  # same input refused again: no new Event
    clock[0] += FIRST_RETRY * 2 - 1
    assert book.blocked("k", "p1") is cond
    for _ in range(20):
        book.record("k", "p1", cond)
    clock[0] += MAX_RETRY
    assert book.blocked("k", "p1") is None


class CountingKube:
    """Records applies and deletes; stands in for the API server in this pure slicing test only."""

    def __init__(self) -> None:
        self.applied: list[str] = []
        self.deleted: list[str] = []

    def apply_many(self, objs: list[Obj]) -> list[Obj]:
        self.applied += [o["metadata"]["name"] for o in objs]
        return objs

    def delete(self, kind: str, name: str, namespace: str | None = None) -> bool:
        self.deleted.append(name)
        return True


def cm(i: int) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}", "namespace": "ns"}, "data": {}}


def test_a_pass_stops_at_its_budget_and_when_the_owner_goes() -> None:
    kube = CountingKube()
    desired = [cm(i) for i in range(500)]
    result = apply_children(kube, desired, [], "uid", budget=100)  # type: ignore[arg-type]
    assert len(kube.applied) == 100 and result.remaining == 400 and not result.complete and not result.stopped
    live = [with_hash(o) for o in desired[:100]]
    result = apply_children(kube, desired, live, "uid", budget=100)  # type: ignore[arg-type]
    assert kube.applied[100:] == [f"c{i}" for i in range(100, 200)]  # the next slice, nothing twice
    checks = iter([True, False])
    kube2 = CountingKube()
    result = apply_children(kube2, desired, [], "uid", lambda: next(checks, False), budget=1000)  # type: ignore[arg-type]
    assert result.stopped and len(kube2.applied) == CHUNK


def test_checks_name_the_field() -> None:
    bad = check_resources("spec.engine.runner", {"resources": {"limits": {"memory": "20GiB", "cpu": "8x"}}})
    assert {c.path for c in bad} == {
        "spec.engine.runner.resources.limits.memory",
        "spec.engine.runner.resources.limits.cpu",
    }
    assert not check_resources("p", {"resources": {"limits": {"memory": "20Gi", "cpu": "500m"}}})
    dup = check_container_size("p", {"env": [{"name": "A"}, {"name": "A"}]})
    assert dup[0].path == "p.env[1].name"
    assert check_container_size("p", {"env": [{"name": f"E{i}"} for i in range(10_000)]})[0].path == "p.env"
    assert check_container_size("p", {"args": ["x" * (1 << 20)]})[0].path == "p.args"
    long = check_label_map("spec.engine.labels", {"team": "x" * 64}, label=True)
    assert long and long[0].path == "spec.engine.labels.team"


class DeletingKube:
    """Records deletes and Events; stands in for the API server in this pure decision test only."""

    def __init__(self) -> None:
        self.deleted: list[tuple[str, str | None, int | None]] = []
        self.events: list[Obj] = []

    def delete(self, kind: str, name: str, namespace: str | None = None, **opts: Any) -> bool:
        self.deleted.append((name, opts.get("uid"), opts.get("grace_seconds")))
        return True

    def create(self, obj: Obj) -> Obj:
        self.events.append(obj)
        return obj

    def pod_log_tail(self, name: str, namespace: str) -> str:
        return ""


def pod(name: str, node: str, revision: str = "r1", role: str = "worker") -> Obj:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "labels": {"component": "engine", "ome.io/group": "0", "ome.io/role": role},
            "annotations": {"ome.io/group-revision": revision},
        },
        "spec": {"nodeName": node},
        "status": {"phase": "Running"},
    }


def node(name: str, ready: str = "True", since: str = "2026-01-01T00:00:00Z") -> Obj:
    return {
        "metadata": {"name": name},
        "status": {"conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": since}]},
    }


ISVC: Obj = {"apiVersion": "ome.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "x", "namespace": "ns"}}


def test_group_restarts_name_the_uid_and_follow_lost_nodes_and_revisions() -> None:
    from datetime import UTC, datetime

    from ome_operator.reconcile.groups import GroupState, restart_failed_groups

    now = datetime(2026, 1, 1, 0, 1, 0, tzinfo=UTC).timestamp()
    pods = [pod("x-engine-0-0", "a", role="leader"), pod("x-engine-0-worker-1", "b")]
    steady = GroupState({"a": node("a"), "b": node("b")}, {("engine", "0"): "r1"}, now)
    kube = DeletingKube()
    assert restart_failed_groups(kube, ISVC, pods, steady) == {}  # type: ignore[arg-type]
    assert kube.deleted == []
    # Node b deleted: both pods go, by uid, at once (nobody is left on b to end them gracefully).
    gone = GroupState({"a": node("a")}, {("engine", "0"): "r1"}, now)
    assert "engine" in restart_failed_groups(kube, ISVC, pods, gone)  # type: ignore[arg-type]
    assert ("x-engine-0-0", "uid-x-engine-0-0", 0) in kube.deleted and len(kube.deleted) == 2
    assert kube.events[-1]["reason"] == "GroupNodeLost"
    # NotReady for 10 s is not lost yet; for 60 s it is.
    kube = DeletingKube()
    brief = GroupState({"a": node("a"), "b": node("b", "False", "2026-01-01T00:00:50Z")}, {("engine", "0"): "r1"}, now)
    assert restart_failed_groups(kube, ISVC, pods, brief) == {}  # type: ignore[arg-type]
    long = GroupState({"a": node("a"), "b": node("b", "False", "2026-01-01T00:00:00Z")}, {("engine", "0"): "r1"}, now)
    assert "NotReady" in restart_failed_groups(kube, ISVC, pods, long)["engine"]  # type: ignore[arg-type]
    # A new revision on both StatefulSets: the whole group is recreated, not only the changed role.
    kube = DeletingKube()
    rolled = GroupState({"a": node("a"), "b": node("b")}, {("engine", "0"): "r2"}, now)
    assert "engine" in restart_failed_groups(kube, ISVC, pods, rolled)  # type: ignore[arg-type]
    assert {d[0] for d in kube.deleted} == {"x-engine-0-0", "x-engine-0-worker-1"}
    assert all(d[2] is None for d in kube.deleted)  # a graceful delete


def test_duplicate_env_names_the_isvc_declares_are_refused_before_the_merge_hides_them() -> None:
    from ome_operator.render.checks import check_declared_env

    spec = {"engine": {"leader": {"runner": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}}}}
    assert [c.path for c in check_declared_env(spec)] == ["spec.engine.leader.runner.env[1].name"]
    assert check_declared_env({"engine": {"runner": {"env": [{"name": "A"}, {"name": "B"}]}}}) == []


def test_a_pass_looks_again_when_a_notready_node_reaches_its_grace() -> None:
    from datetime import UTC, datetime

    from ome_operator.reconcile.groups import NODE_LOST_AFTER, GroupState, compute_recheck

    now = datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC).timestamp()
    pods = [pod("x-engine-0-0", "a", role="leader")]
    down = GroupState({"a": node("a", "False", "2026-01-01T00:00:00Z")}, {}, now)
    assert compute_recheck(pods, down) == NODE_LOST_AFTER - 10 + 1
    assert compute_recheck(pods, GroupState({"a": node("a")}, {}, now)) is None
    late = GroupState({"a": node("a", "False", "2025-12-31T00:00:00Z")}, {}, now)
    assert compute_recheck(pods, late) is None


def test_a_malformed_node_affinity_names_its_field() -> None:
    import pytest

    from ome_operator.reconcile.nodes import check_node_affinity
    from ome_operator.reconcile.status import FieldError, describe_exception

    with pytest.raises(FieldError) as caught:
        check_node_affinity({"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": ["h200-014"]}})
    path, _ = describe_exception(caught.value)
    assert path == "spec.storage.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
    check_node_affinity(
        {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": []}]}}
    )
    assert describe_exception(AttributeError("x")) == ("", "AttributeError: x")
