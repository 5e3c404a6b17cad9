"""`ome-operator explain`: the pure formatting, table-driven, plus the reads against a fake API and the CLI's
exit codes (a kubeconfig pointing at a closed port stands for an unreachable cluster)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from ome_operator.cli import main
from ome_operator.explain.advice import ADVICE, compute_advice
from ome_operator.explain.command import parse_target
from ome_operator.explain.compute import Evidence, compute_exit_code, compute_explanation, compute_failing
from ome_operator.explain.observe import observe_isvc, observe_model
from ome_operator.explain.pods import LogTail
from ome_operator.kube.client import ApiException

Obj = dict[str, Any]
NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
TOKEN = "hf_abcdefghijklmnopqrstuvwxyz012345"


def cond(type_: str, status: str, reason: str, message: str = "") -> Obj:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def isvc(*conditions: Obj, **status: Any) -> Obj:
    return {
        "apiVersion": "ome.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "kimi", "namespace": "team-a", "uid": "isvc-uid", "generation": 1},
        "spec": {"model": {"name": "kimi-k2-instrukt"}},
        "status": {"observedGeneration": 1, "conditions": list(conditions), **status},
    }


def pod(name: str, phase: str, **status: Any) -> Obj:
    return {
        "metadata": {"name": name, "namespace": "team-a", "uid": f"{name}-uid", "labels": {"component": "engine"}},
        "spec": {"nodeName": status.pop("node", None)},
        "status": {"phase": phase, **status},
    }


def event(kind: str, name: str, reason: str, message: str, ago: int, uid: str = "", **extra: Any) -> Obj:
    stamp = datetime.fromtimestamp(NOW.timestamp() - ago, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "involvedObject": {"kind": kind, "name": name, "uid": uid or f"{name}-uid"},
        "type": "Warning",
        "reason": reason,
        "message": message,
        "lastTimestamp": stamp,
        **extra,
    }


def job(node: str, condition: str | None = None, active: int = 0, message: str = "") -> Obj:
    conditions = [{"type": condition, "status": "True", "reason": "BackoffLimitExceeded", "message": message}]
    return {
        "metadata": {
            "name": f"kimi-k2-instruct-dl-{node}",
            "namespace": "ome",
            "uid": f"job-{node}",
            "annotations": {"ome.io/node": node},
        },
        "status": {"conditions": conditions if condition else [], "active": active},
    }


READY = isvc(
    cond("Ready", "True", "Ready", "serving at http://kimi.team-a.svc.cluster.local"),
    cond("ModelReady", "True", "ModelReady", "ClusterBaseModel kimi-k2-instruct ready on 16/16 nodes"),
    cond("RuntimeResolved", "True", "ProvisionallyAccepted", "runtime srt-kimi-k2-pd named"),
    cond("EngineReady", "True", "Ready", "1/1 groups ready (4 pods)"),
    cond("DecoderReady", "True", "Ready", "1/1 groups ready (12 pods)"),
    cond("RouterReady", "True", "Ready", "1/1 pods ready"),
    cond("EngineArgsValid", "False", "EngineArgsRefused", "--enable-dp-attention: deprecated in sglang 0.5.23"),
    url="http://kimi.team-a.svc.cluster.local",
    runtime="srt-kimi-k2-pd",
    gpus=128,
    components={
        "engine": {"groups": 1, "groupsReady": 1, "pods": 4, "podsReady": 4, "gpus": 32},
        "decoder": {"groups": 1, "groupsReady": 1, "pods": 12, "podsReady": 12, "gpus": 96},
        "router": {"groups": 1, "groupsReady": 1, "pods": 1, "podsReady": 1, "gpus": 0},
    },
)
MODEL_NOT_FOUND_MESSAGE = (
    "spec.model.name: no BaseModel kimi-k2-instrukt in namespace team-a and no ClusterBaseModel kimi-k2-instrukt"
)
MODEL_NOT_FOUND = isvc(
    cond("Ready", "False", "ModelNotFound", f"ModelReady: {MODEL_NOT_FOUND_MESSAGE}"),
    cond("ModelReady", "False", "ModelNotFound", MODEL_NOT_FOUND_MESSAGE),
    cond("RuntimeResolved", "Unknown", "WaitingForModel", "the model must exist before a runtime is chosen"),
    cond("EngineReady", "False", "NotCreated", "the engine has not been created yet"),
)
SCHEDULER = "0/16 nodes are available: 14 Insufficient nvidia.com/gpu. preemption: 0/16 nodes are available"
UNSCHEDULABLE = isvc(
    cond(
        "Ready", "False", "Unschedulable", f"EngineReady: 4/8 pods ready; pending pods cannot be scheduled: {SCHEDULER}"
    ),
    cond("ModelReady", "True", "ModelReady", "ready"),
    cond("RuntimeResolved", "True", "RuntimeNamed", "named"),
    cond("EngineReady", "False", "Unschedulable", f"4/8 pods ready; pending pods cannot be scheduled: {SCHEDULER}"),
)
PENDING = pod(
    "kimi-engine-1-0",
    "Pending",
    conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": SCHEDULER}],
)
# The same story with other node counts, in the scheduler's other order: shown once.
PENDING_TOO = pod(
    "kimi-engine-1-worker-1",
    "Pending",
    conditions=[
        {
            "type": "PodScheduled",
            "status": "False",
            "message": "0/16 nodes are available: 2 Insufficient nvidia.com/gpu. preemption: 0/16 nodes are available",
        }
    ],
)
RUNNING = pod("kimi-engine-0-0", "Running", node="h200-001", conditions=[{"type": "Ready", "status": "True"}])
GROUP_RESTARTING = isvc(
    cond("Ready", "False", "GroupRestarting", "EngineReady: pod kimi-engine-0-worker-2 failed"),
    cond("ModelReady", "True", "ModelReady", "ready"),
    cond("EngineReady", "False", "GroupRestarting", "pod kimi-engine-0-worker-2 failed (OOMKilled, exit code 137)"),
)
CRASHED = pod(
    "kimi-engine-0-worker-2",
    "Running",
    node="h200-003",
    conditions=[{"type": "Ready", "status": "False"}],
    containerStatuses=[
        {
            "name": "ome-container",
            "ready": False,
            "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
        }
    ],
)
MODEL_FAILED = {
    "kind": "ClusterBaseModel",
    "metadata": {"name": "kimi-k2-instruct", "uid": "model-uid", "generation": 1},
    "status": {
        "state": "Ready",
        "nodesSummary": "2/4",
        "progressSummary": "60%",
        "nodesReady": ["h200-000", "h200-001"],
        "nodesFailed": ["h200-002"],
        "progress": {"h200-003": {"phase": "Downloading", "totalBytes": 4 * 1024**3, "completedBytes": 1024**3}},
        "observedGeneration": 1,
        "conditions": [
            cond("Ready", "False", "DownloadFailed", "1/4 nodes failed: h200-002: BackoffLimitExceeded"),
            cond("Downloaded", "False", "DownloadFailed", "1/4 nodes failed: h200-002: BackoffLimitExceeded"),
            cond("InUse", "True", "ReferencedByInferenceService", "used by team-a/kimi"),
        ],
    },
}
DL_POD = {
    "metadata": {
        "name": "kimi-k2-instruct-dl-h200-002-abcde",
        "namespace": "ome",
        "uid": "dl-pod-uid",
        "labels": {"job-name": "kimi-k2-instruct-dl-h200-002"},
        "creationTimestamp": "2026-12-01T11:50:00Z",
    },
    "spec": {"nodeName": "h200-002"},
    "status": {
        "phase": "Failed",
        "containerStatuses": [
            {
                "name": "download",
                "restartCount": 0,
                "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": "401 from the hub"}},
            }
        ],
    },
}
MODEL_JOBS = [
    job("h200-000", "Complete"),
    job("h200-001", "Complete"),
    job("h200-002", "Failed", message="Job has reached the specified backoff limit"),
    job("h200-003", active=1),
]


@dataclass(frozen=True)
class Case:
    id: str
    evidence: Evidence
    exit_code: int
    expected: tuple[str, ...]
    absent: tuple[str, ...] = ()
    failing: str | None = field(default=None)


CASES = [
    Case(
        "ready",
        Evidence(READY, now=NOW),
        0,
        (
            "InferenceService team-a/kimi: Ready",
            "Ready              True     Ready",
            "  ModelReady",
            "ready: engine 4/4 pods in 1/1 groups, decoder 12/12 pods in 1/1 groups, router 1/1 pods; 128 GPUs",
            "url: http://kimi.team-a.svc.cluster.local",
            "!    EngineArgsValid  False    EngineArgsRefused",
        ),
        ("->", "Next:"),
    ),
    Case(
        "model-not-found",
        Evidence(MODEL_NOT_FOUND, names=["ClusterBaseModel kimi-k2-instruct", "ClusterBaseModel qwen3-0-6b"], now=NOW),
        1,
        (
            "InferenceService team-a/kimi: not Ready: ModelReady=False (ModelNotFound)",
            "->   ModelReady       False    ModelNotFound",
            "Next: create the model, or fix spec.model.name",
            "kubectl get basemodels -n team-a",
            "did you mean ClusterBaseModel kimi-k2-instruct?",
        ),
        ("qwen3",),
        failing="ModelReady",
    ),
    Case(
        "unschedulable-with-events",
        Evidence(
            UNSCHEDULABLE,
            pods=[RUNNING, PENDING_TOO, PENDING],
            events=[
                event("Pod", "kimi-engine-1-0", "FailedScheduling", SCHEDULER, 90, series={"count": 4}),
                event("Pod", "kimi-engine-1-0", "FailedScheduling", "from a predecessor", 900, uid="old"),
                event(
                    "InferenceService", "kimi", "InferenceServiceNotReady", "Ready=False: Unschedulable", 30, "isvc-uid"
                ),
            ],
            now=NOW,
        ),
        1,
        (
            "engine: 1/3 pods ready",
            "    (1 more pod in the same state)",
            "pod kimi-engine-1-0 (no node): Pending",
            f"not scheduled: {SCHEDULER}",
            f"1m  Warning  FailedScheduling (x4): {SCHEDULER}",
            "log: none, no container has started",
            "events of the InferenceService:",
            "30s  Warning  InferenceServiceNotReady: Ready=False: Unschedulable",
            "Next: the pods wait for capacity",
        ),
        ("pod kimi-engine-0-0", "from a predecessor", "pod kimi-engine-1-worker-1"),
        failing="EngineReady",
    ),
    Case(
        "failed-pod-restarts-exit-code",
        Evidence(
            GROUP_RESTARTING,
            pods=[CRASHED],
            events=[event("Pod", "kimi-engine-0-worker-2", "BackOff", "Back-off restarting failed container", 5)],
            logs={"kimi-engine-0-worker-2": LogTail("ome-container", True, ("loading weights", f"token={TOKEN}"))},
            now=NOW,
        ),
        1,
        (
            "pod kimi-engine-0-worker-2 (h200-003): Running, not ready",
            "container ome-container: waiting, CrashLoopBackOff (back-off 40s restarting failed container); "
            "restarts 3; last terminated with exit code 137 (OOMKilled)",
            "5s  Warning  BackOff: Back-off restarting failed container",
            "log of previous instance of ome-container (last 2 lines):",
            "| loading weights",
            "Next: a pod of a group failed and the whole group is being recreated",
        ),
        (TOKEN,),
        failing="EngineReady",
    ),
    Case(
        "model-failed-node-download",
        Evidence(
            MODEL_FAILED,
            pods=[DL_POD],
            jobs=MODEL_JOBS,
            events=[
                event(
                    "Job", "kimi-k2-instruct-dl-h200-002", "BackoffLimitExceeded", "backoff limit", 60, "job-h200-002"
                )
            ],
            logs={"kimi-k2-instruct-dl-h200-002-abcde": LogTail("download", False, unavailable="500: no kubelet")},
            now=NOW,
        ),
        1,
        (
            "ClusterBaseModel kimi-k2-instruct: not Ready: Downloaded=False (DownloadFailed)",
            "  state Ready, 2/4 nodes ready, progress 60%",
            "->   Downloaded",
            "download Jobs in namespace ome: 1 Failed, 1 Running, 2 Succeeded",
            "Failed   h200-002  job kimi-k2-instruct-dl-h200-002: BackoffLimitExceeded: Job has reached",
            "pod kimi-k2-instruct-dl-h200-002-abcde (h200-002): Failed",
            "container download: terminated with exit code 1 (Error): 401 from the hub; restarts 0",
            "1m  Warning  BackoffLimitExceeded: backoff limit",
            "log of download: unavailable: 500: no kubelet",
            "Running  h200-003  job kimi-k2-instruct-dl-h200-003: Downloading, 25% of 4.0 GiB",
            "Next: a download Job failed after its retries",
            "kubectl delete job -n ome JOB",
        ),
        failing="Downloaded",
    ),
    Case(
        "unknown-reason",
        Evidence(
            isvc(
                cond("Ready", "False", "BrandNewReason", "SomethingReady: turn the knob to 11"),
                cond("SomethingReady", "False", "BrandNewReason", "turn the knob to 11"),
            ),
            now=NOW,
        ),
        1,
        ("->   SomethingReady", "Next: no advice for reason BrandNewReason; the condition says: turn the knob to 11"),
        failing="SomethingReady",
    ),
    Case(
        "no-status-yet",
        Evidence({**isvc(), "status": {}}, now=NOW),
        1,
        ("InferenceService team-a/kimi: not Ready", "Next: the operator has not written a status yet"),
        ("CONDITION",),
    ),
    Case(
        "stale-generation",
        Evidence({**MODEL_NOT_FOUND, "metadata": {**MODEL_NOT_FOUND["metadata"], "generation": 2}}, now=NOW),
        1,
        ("the status is from generation 1, the spec is at generation 2",),
        failing="ModelReady",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_compute_explanation(case: Case) -> None:
    text = "\n".join(compute_explanation(case.evidence))
    for wanted in case.expected:
        assert wanted in text, f"{wanted!r} not in:\n{text}"
    for unwanted in case.absent:
        assert unwanted not in text, f"{unwanted!r} in:\n{text}"
    assert compute_exit_code(case.evidence.obj) == case.exit_code
    failing = compute_failing(case.evidence.obj["status"].get("conditions") or [])
    assert (failing or {}).get("type") == case.failing or (case.failing is None and case.exit_code == 1)
    assert sum(line.lstrip().startswith("->") for line in text.splitlines()) == (1 if case.failing else 0)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["kimi"], ("InferenceService", "kimi")),
        (["isvc", "kimi"], ("InferenceService", "kimi")),
        (["isvc/kimi"], ("InferenceService", "kimi")),
        (["cbm", "kimi-k2"], ("ClusterBaseModel", "kimi-k2")),
        (["ClusterBaseModels.ome.io/kimi-k2"], ("ClusterBaseModel", "kimi-k2")),
        (["basemodel", "m"], ("BaseModel", "m")),
    ],
)
def test_parse_target(argv: list[str], expected: tuple[str, str]) -> None:
    assert parse_target(argv) == expected


@pytest.mark.parametrize("argv", [["pods", "x"], ["a", "b", "c"], ["isvc/"]])
def test_parse_target_refuses(argv: list[str]) -> None:
    with pytest.raises(ValueError):
        parse_target(argv)


def test_every_advice_template_formats() -> None:
    fields = {"namespace": "ns", "name": "n", "model_explain": "ome-operator explain cbm m", "jobs_namespace": "ome"}
    for reason in ADVICE:
        advice = compute_advice({"reason": reason}, fields)
        assert "{" not in advice, (reason, advice)


class FakeReader:
    """The reads `explain` makes, answered from a dict; records which logs were asked for."""

    def __init__(self, objects: dict[tuple[str, str | None, str], Obj], lists: dict[str, list[Obj]]) -> None:
        self.objects, self.lists = objects, lists
        self.logs_read: list[tuple[str, str | None, bool]] = []

    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        return self.objects.get((kind, namespace, name))

    def read_pod_log(
        self, name: str, namespace: str, container: str | None = None, tail_lines: int = 20, previous: bool = False
    ) -> str:
        self.logs_read.append((name, container, previous))
        raise ApiException(status=400, reason="Bad Request")

    def list(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> list[Obj]:
        return self.lists.get(kind, [])


def test_observe_isvc_reads_only_the_failing_component() -> None:
    reader = FakeReader(
        {("InferenceService", "team-a", "kimi"): GROUP_RESTARTING}, {"Pod": [CRASHED, RUNNING], "Event": []}
    )
    evidence = observe_isvc(reader, "team-a", "kimi", NOW)
    assert evidence is not None
    assert reader.logs_read == [("kimi-engine-0-worker-2", "ome-container", True)]
    assert "unavailable: 400 Bad Request" in "\n".join(compute_explanation(evidence))
    assert observe_isvc(reader, "team-a", "missing", NOW) is None


def test_observe_model_finds_jobs_and_the_failed_pod() -> None:
    reader = FakeReader(
        {("ClusterBaseModel", None, "kimi-k2-instruct"): MODEL_FAILED}, {"Job": MODEL_JOBS, "Pod": [DL_POD]}
    )
    evidence = observe_model(reader, "ClusterBaseModel", None, "kimi-k2-instruct", "ome", NOW)
    assert evidence is not None and len(evidence.jobs) == 4
    assert reader.logs_read == [("kimi-k2-instruct-dl-h200-002-abcde", "download", False)]


def test_unreachable_cluster_and_missing_kubeconfig_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "team-a"}}],
        "current-context": "x",
    }
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    assert main(["explain", "--kubeconfig", str(kubeconfig), "kimi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach the cluster:") and err.count("\n") == 1, err
    assert "Traceback" not in err

    assert main(["explain", "--kubeconfig", str(tmp_path / "nope"), "cbm", "kimi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err

    assert main(["explain", "pods", "x"]) == 2
    assert "unknown kind 'pods'" in capsys.readouterr().err
