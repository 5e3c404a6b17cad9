"""Restarting a local cluster's processes in place: the API server (optionally auditing the
operator's reads), and kwok without the runner for scale runs.

Two uses: the test that a dropped watch is resumed (the restart drops every stream), and the
idle-traffic measurements, which need the audit log to record the operator's reads as well as its
writes (devtools.components.AUDIT_POLICY records only writes). The restarted process gets the
same flags, files and ports, so everything else in the cluster reconnects to it unchanged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.procs import pdeathsig_preexec, start_ticks

POLICY_FLAG = "--audit-policy-file="
RUNNER = "runner"
REPO = Path(__file__).resolve().parents[1]


def _state(cluster_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((cluster_dir / "state.json").read_text())
    return data


def _alive(pid: int) -> bool:
    # A child of this process (a cluster it started) lingers as a zombie until reaped.
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _pid_of(cluster_dir: Path, component: str) -> int:
    return next(int(p["pid"]) for p in _state(cluster_dir)["procs"] if p["name"] == component)


def _stop(pid: int) -> None:
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)


def restart_component(cluster: ClusterHandle, component: str, edit: Callable[[str], str] | None = None) -> None:
    """Stop one control-plane process (SIGTERM) and start it again with the same flags, or with
    each flag passed through `edit`; state.json then names the new process, so the cluster's
    stop() still stops it."""
    cluster_dir = cluster.kubeconfig.parent
    pid = _pid_of(cluster_dir, component)
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
    if edit is not None:
        argv = [edit(a) for a in argv]
    _stop(pid)
    _spawn(cluster_dir, component, argv)


def _spawn(cluster_dir: Path, component: str, argv: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    if component == RUNNER:
        env["PYTHONPATH"] = str(REPO)  # as devtools.cluster starts it: `python -m devtools.runner`
    state = _state(cluster_dir)
    with open(cluster_dir / "logs" / f"{component}.log", "ab") as out:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cluster_dir,
            env=env,
            start_new_session=True,
            # A test session's cluster dies with the session, the restarted process included.
            preexec_fn=pdeathsig_preexec() if state.get("die_with_parent") else None,
        )
    for entry in state["procs"]:
        if entry["name"] == component:
            entry["pid"], entry["start_ticks"] = popen.pid, start_ticks(popen.pid) or -1
    tmp = cluster_dir / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(cluster_dir / "state.json")


def restart_apiserver(cluster: ClusterHandle, audit_user: str | None = None) -> None:
    """Restart the kube-apiserver (every watch drops, as in an upgrade) and wait until it is ready.

    With `audit_user`, the new process records every request of that user (reads too) in the
    same audit log; the policy of the old process is kept otherwise.
    """
    cluster_dir = cluster.kubeconfig.parent
    runner_pid = _pid_of(cluster_dir, RUNNER)
    runner_argv = Path(f"/proc/{runner_pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
    edit = (lambda a: _with_policy(a, cluster_dir, audit_user)) if audit_user is not None else None
    restart_component(cluster, "kube-apiserver", edit)
    wait_for(
        lambda: cluster.kubectl("get", "--raw", "/readyz", check=False, timeout=10).stdout.strip() == "ok",
        timeout=90,
        interval=0.2,
        what="kube-apiserver ready again",
    )
    # devtools.runner exits when the API server refuses it for a moment; the pods it runs need it.
    time.sleep(1)
    if not _alive(runner_pid):
        _spawn(cluster_dir, RUNNER, runner_argv)


def make_every_pod_ready(cluster: ClusterHandle) -> None:
    """For scale runs: kwok makes every pod Ready at once, and no router or engine process starts.

    The cluster's runner starts a real process per router and engine pod; a thousand of them do
    not fit on a small machine, and the scale benchmark measures the operator, not them.
    """
    cluster_dir = cluster.kubeconfig.parent
    _stop(_pid_of(cluster_dir, "runner"))
    docs = [d for d in yaml.safe_load_all((cluster_dir / "kwok.yaml").read_text()) if d]
    stages = []
    for doc in docs:
        if doc.get("metadata", {}).get("name") == "pod-started-for-runner":
            continue
        selector = (doc.get("spec") or {}).get("selector") or {}
        if "matchExpressions" in selector:
            selector["matchExpressions"] = [
                e for e in selector["matchExpressions"] if "RUNNER" not in str(e) and "join" not in str(e["key"])
            ]
        stages.append(doc)
    path = cluster_dir / "kwok-every-pod-ready.yaml"
    path.write_text(yaml.safe_dump_all(stages, sort_keys=False))
    restart_component(cluster, "kwok", lambda a: f"--config={path}" if a.startswith("--config=") else a)


def _with_policy(arg: str, cluster_dir: Path, user: str) -> str:
    if not arg.startswith(POLICY_FLAG):
        return arg
    policy = yaml.safe_load(Path(arg[len(POLICY_FLAG) :]).read_text())
    rule = {"level": "Metadata", "users": [user]}
    if rule not in policy["rules"]:
        policy["rules"].insert(0, rule)
    path = cluster_dir / "audit-policy-operator-reads.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return POLICY_FLAG + str(path)


def audits_reads_of(cluster: ClusterHandle, user: str) -> bool:
    """Whether the running apiserver's policy records this user's reads."""
    state = _state(cluster.kubeconfig.parent)
    pid = next(int(p["pid"]) for p in state["procs"] if p["name"] == "kube-apiserver")
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    policy_file = next((a[len(POLICY_FLAG) :] for a in argv if a.startswith(POLICY_FLAG)), None)
    if policy_file is None:
        return False
    rules = yaml.safe_load(Path(policy_file).read_text())["rules"]
    for rule in rules:
        if rule.get("level") == "None" and not rule.get("users") and not rule.get("resources"):
            return False
        if rule.get("level") != "None" and user in (rule.get("users") or []) and not rule.get("verbs"):
            return True
    return False


def requests_by(cluster: ClusterHandle, user: str, since: str, until: str | None = None) -> list[dict[str, Any]]:
    """The audit events (one per request, at ResponseComplete or, for watches, ResponseStarted)."""
    found = []
    for event in cluster.audit_events():
        if event.get("user", {}).get("username") != user:
            continue
        received = event.get("requestReceivedTimestamp", "")
        if received < since or (until is not None and received >= until):
            continue
        # A watch is logged when it starts and again when it ends: count it once, when it started.
        wanted_stage = "ResponseStarted" if event.get("verb") == "watch" else "ResponseComplete"
        if event.get("stage") == wanted_stage:
            found.append(event)
    return found


def describe(event: dict[str, Any]) -> str:
    ref = event.get("objectRef") or {}
    resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    code = response_code(event)
    text = f"{event.get('verb')} {resource} {ref.get('namespace') or ''}/{ref.get('name') or ''}".replace(" /", " ")
    return f"{text} -> {code}" if code is not None else text


def response_code(event: dict[str, Any]) -> int | None:
    """The HTTP status the API server answered with (absent at a watch's ResponseStarted)."""
    code = (event.get("responseStatus") or {}).get("code")
    return int(code) if code is not None else None
