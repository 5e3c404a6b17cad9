"""Recreating download Jobs that used up their retries, and the per-node priority rule (pure parts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ome_operator.reconcile.download_policy import (
    MAX_DELAY_SECONDS,
    NodeQueue,
    compute_demanded_labels,
    compute_node_queues,
    compute_retry_delay,
    compute_retry_message,
    may_start,
    resolve_retry_plan,
)

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def failed_job(reason: str = "BackoffLimitExceeded", at: datetime = T0) -> dict[str, Any]:
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "status": {"conditions": [{"type": "Failed", "status": "True", "reason": reason, "lastTransitionTime": stamp}]}
    }


def test_the_delay_doubles_per_attempt_up_to_a_cap() -> None:
    assert [compute_retry_delay(a, 30) for a in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert compute_retry_delay(30, 30) == MAX_DELAY_SECONDS


def test_a_failed_attempt_is_recreated_once_its_delay_has_passed() -> None:
    jobs = {1: failed_job()}
    waiting = resolve_retry_plan(jobs, permanent=False, now=T0 + timedelta(seconds=10), base_seconds=30)
    assert waiting.attempt == 1 and waiting.due_at == T0 + timedelta(seconds=30)
    assert "recreated in 20 s as attempt 2" in compute_retry_message(waiting, T0 + timedelta(seconds=10))
    due = resolve_retry_plan(jobs, permanent=False, now=T0 + timedelta(seconds=30), base_seconds=30)
    assert due.attempt == 2 and due.due_at is None
    # Attempt 2 failing waits twice as long.
    second = resolve_retry_plan({1: failed_job(), 2: failed_job(at=T0)}, False, T0 + timedelta(seconds=59), 30)
    assert second.attempt == 2 and second.due_at == T0 + timedelta(seconds=60)


def test_permanent_failures_and_running_jobs_are_left_alone() -> None:
    late = T0 + timedelta(hours=1)
    assert resolve_retry_plan({1: failed_job()}, permanent=True, now=late, base_seconds=1).attempt == 1
    assert resolve_retry_plan({1: failed_job("PodFailurePolicy")}, False, late, 1).due_at is None
    assert resolve_retry_plan({3: {"status": {"active": 1}}}, False, late, 1).attempt == 3
    assert resolve_retry_plan({}, False, late, 1).attempt == 1


def test_serving_demand_goes_first_and_keeps_a_slot() -> None:
    idle = NodeQueue()
    assert may_start(idle, demanded=False, slots=2) and may_start(idle, demanded=True, slots=2)
    one = NodeQueue(active_other=1)
    assert not may_start(one, demanded=False, slots=2)  # the second slot is kept for demand
    assert may_start(one, demanded=True, slots=2)
    assert not may_start(NodeQueue(active_other=1, active_demanded=1), demanded=True, slots=2)
    assert not may_start(NodeQueue(demanded_waiting=True), demanded=False, slots=2)
    assert may_start(NodeQueue(demanded_waiting=True), demanded=True, slots=2)


def job(label: str, node: str, active: bool = True) -> dict[str, Any]:
    status = {"active": 1} if active else {"conditions": [{"type": "Complete", "status": "True"}]}
    return {"metadata": {"labels": {"ome.io/model": label}, "annotations": {"ome.io/node": node}}, "status": status}


def test_node_queues_count_other_models_active_jobs() -> None:
    isvcs = [{"metadata": {"namespace": "ns"}, "spec": {"model": {"name": "served"}}}]
    demanded = compute_demanded_labels(isvcs)
    assert demanded == {"ns.served", "cluster.served"}
    jobs = [job("cluster.served", "n1"), job("cluster.other", "n1"), job("cluster.other", "n2", active=False)]
    jobs.append(job("cluster.me", "n1"))
    queues = compute_node_queues(jobs, demanded, {"n2": {"cluster.served"}, "n3": {"cluster.me"}}, "cluster.me")
    assert queues["n1"] == NodeQueue(active_demanded=1, active_other=1, demanded_waiting=False)
    assert queues["n2"] == NodeQueue(demanded_waiting=True)
    assert queues["n3"] == NodeQueue()  # only this model waits there


def test_a_recreated_or_reusing_job_is_a_job_of_its_own() -> None:
    from ome_operator.api import ClusterBaseModel
    from ome_operator.render.context import Settings
    from ome_operator.render.download import reuse_source_of

    model = ClusterBaseModel.model_validate(
        {
            "apiVersion": "ome.io/v1beta1",
            "kind": "ClusterBaseModel",
            "metadata": {"name": "m", "uid": "u"},
            "spec": {
                "storage": {"storageUri": "hf://org/repo", "path": "/raid/models/m", "downloadPolicy": "ReuseIfExists"}
            },
        }
    )
    from ome_operator.render.download import render_model

    def job(**kw: Any) -> dict[str, Any]:
        return next(o for o in render_model(model, ["n"], Settings(), **kw) if o["kind"] == "Job")

    first, second = job(), job(attempts={"n": 2})
    reusing = job(reuse={"n": "/raid/models/other"})
    assert len({first["metadata"]["name"], second["metadata"]["name"], reusing["metadata"]["name"]}) == 3
    assert "ome.io/download-attempt" not in first["metadata"]["annotations"]
    assert second["metadata"]["annotations"]["ome.io/download-attempt"] == "2"
    pod = reusing["spec"]["template"]["spec"]
    assert {"name": "reuse", "hostPath": {"path": "/raid/models/other", "type": "Directory"}} in pod["volumes"]
    assert {"name": "reuse", "mountPath": "/mnt/reuse", "readOnly": True} in pod["containers"][0]["volumeMounts"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--reuse-from") + 1] == "/mnt/reuse"
    assert reuse_source_of(reusing) == "/raid/models/other" and reuse_source_of(first) is None
