"""The five user flows of the campaign on OME's Kimi K2 files (1 prefill + 1 decode group, all 128 GPUs).

Each flow has a precondition it brings the cluster to (`prepare`, with a healthy operator, not
counted), the user's action (`act`, made directly against the API server, not through the front),
and a goal that says the operator has done its part. `undo` returns the cluster to the state the
next run's `prepare` expects, cheaply where it can.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .env import ISVC, MODEL, NS, RUNTIME, ChaosEnv, condition, isvc_ready, isvc_settled
from .state import find_leaks

ENGINE_TWO = '{"spec":{"engine":{"minReplicas":2,"maxReplicas":2}}}'
ENGINE_ONE = '{"spec":{"engine":{"minReplicas":1,"maxReplicas":1}}}'
MARK = "OME_CHAOS_MARK"
ROLL_PATCH = json.dumps(
    [
        {"op": "add", "path": f"/spec/{group}/{role}/runner/env/-", "value": {"name": MARK, "value": "1"}}
        for group in ("engineConfig", "decoderConfig")
        for role in ("leader", "worker")
    ]
)
VICTIM = f"{ISVC}-engine-0-worker-2"


def model_ready(env: ChaosEnv) -> bool:
    found = env.items("clusterbasemodels", name=MODEL)
    return bool(found) and (found[0].get("status") or {}).get("state") == "Ready"


def created(env: ChaosEnv) -> bool:
    return isvc_ready(env.isvc()) and model_ready(env)


def apply_reference(env: ChaosEnv) -> None:
    for path in (env.files.model, env.files.runtime, env.files.isvc):
        env.kubectl("apply", "-f", str(path))


def delete_reference(env: ChaosEnv) -> None:
    # By name, keeping the namespace: deleting it would garbage-collect whatever the operator
    # leaked there and hide it.
    env.kubectl("delete", "inferenceservice.ome.io", ISVC, "-n", NS, "--ignore-not-found", "--wait=false")
    env.kubectl("delete", "clusterservingruntime.ome.io", RUNTIME, "--ignore-not-found", "--wait=false")
    env.kubectl("delete", "clusterbasemodel.ome.io", MODEL, "--ignore-not-found", "--wait=false")


def all_gone(env: ChaosEnv) -> bool:
    return not find_leaks(env)


def engine_pods(env: ChaosEnv) -> dict[str, str]:
    pods = env.items("pods", NS, f"ome.io/inferenceservice={ISVC},component=engine")
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods if not p["metadata"].get("deletionTimestamp")}


def sts_env(env: ChaosEnv, name: str) -> list[str]:
    found = env.items("statefulsets", NS, name=name)
    if not found:
        return []
    containers = found[0]["spec"]["template"]["spec"]["containers"]
    return [e["name"] for e in containers[0].get("env") or []]


ROLLED = (f"{ISVC}-engine-0", f"{ISVC}-engine-0-worker", f"{ISVC}-decoder-0", f"{ISVC}-decoder-0-worker")


@dataclass
class Flow:
    name: str
    timeout: float = 180.0

    def prepare(self, env: ChaosEnv) -> None:
        """Bring the cluster to the flow's precondition (the Kimi K2 service Ready)."""
        if not created(env):
            apply_reference(env)
            env.wait_quiet(lambda: created(env), timeout=240, what="Kimi K2 Ready (precondition)")

    def act(self, env: ChaosEnv) -> None:
        raise NotImplementedError

    def goal(self, env: ChaosEnv) -> bool:
        raise NotImplementedError

    def undo(self, env: ChaosEnv) -> None:
        pass


class Create(Flow):
    def prepare(self, env: ChaosEnv) -> None:
        if not all_gone(env):
            delete_reference(env)
            env.wait_quiet(lambda: all_gone(env), timeout=180, what="everything deleted (precondition)")

    def act(self, env: ChaosEnv) -> None:
        apply_reference(env)

    def goal(self, env: ChaosEnv) -> bool:
        return created(env)


class Scale(Flow):
    def act(self, env: ChaosEnv) -> None:
        env.kubectl("patch", "isvc", ISVC, "-n", NS, "--type=merge", "-p", ENGINE_TWO)

    def goal(self, env: ChaosEnv) -> bool:
        obj = env.isvc()
        # 128 GPUs are taken: the second group cannot be scheduled, and the service says so.
        if not isvc_settled(obj) or condition(obj, "EngineReady").get("reason") != "Unschedulable":
            return False
        return sum(1 for name in engine_pods(env) if "engine-1" in name) == 4

    def undo(self, env: ChaosEnv) -> None:
        env.kubectl("patch", "isvc", ISVC, "-n", NS, "--type=merge", "-p", ENGINE_ONE)
        env.wait_quiet(lambda: created(env) and not any("engine-1" in n for n in engine_pods(env)), 120, "scaled back")


class RuntimeEdit(Flow):
    def act(self, env: ChaosEnv) -> None:
        env.kubectl("patch", "clusterservingruntime", RUNTIME, "--type=json", "-p", ROLL_PATCH)

    def goal(self, env: ChaosEnv) -> bool:
        return all(MARK in sts_env(env, name) for name in ROLLED) and created(env)

    def undo(self, env: ChaosEnv) -> None:
        env.kubectl("apply", "-f", str(env.files.runtime))
        env.wait_quiet(lambda: created(env) and not any(MARK in sts_env(env, n) for n in ROLLED), 120, "rolled back")


class GroupRestart(Flow):
    before: dict[str, str]

    def act(self, env: ChaosEnv) -> None:
        self.before = engine_pods(env)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status: dict[str, Any] = {
            "status": {
                "containerStatuses": [
                    {
                        "name": "ome-container",
                        "image": "docker.io/lmsysorg/sglang:dev",
                        "imageID": "",
                        "ready": True,
                        "started": True,
                        "restartCount": 1,
                        "state": {"running": {"startedAt": now}},
                        "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
                    }
                ]
            }
        }
        env.kubectl("patch", "pod", VICTIM, "-n", NS, "--subresource=status", "--type=merge", "-p", json.dumps(status))

    def goal(self, env: ChaosEnv) -> bool:
        pods = engine_pods(env)
        recreated = set(pods) == set(self.before) and all(pods[n] != uid for n, uid in self.before.items())
        return recreated and created(env)


class Delete(Flow):
    def act(self, env: ChaosEnv) -> None:
        delete_reference(env)

    def goal(self, env: ChaosEnv) -> bool:
        return all_gone(env)


FLOWS: dict[str, Flow] = {
    "create": Create("create"),
    "scale": Scale("scale"),
    "runtime-edit": RuntimeEdit("runtime-edit"),
    "group-restart": GroupRestart("group-restart"),
    "delete": Delete("delete"),
}
