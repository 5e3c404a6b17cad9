"""One pod's containers as the node-side runner (devtools.runner) runs them, kubelet-style.

Each container's process is started from the pod's command line ($(VAR) expanded against the pod as
the kubelet does), its startup, readiness and liveness probes run against it (httpGet, tcpSocket),
and when it exits the pod's restartPolicy decides: Always (and OnFailure after a failure) restarts
it after a CrashLoopBackOff-style delay with restartCount, lastState.terminated and the previous
log kept; otherwise the pod ends Succeeded or Failed. `status()` is the pod status this implies.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from devtools.router import process_tcp_sockets

TERMINATION_MESSAGE_LIMIT = 4096  # the kubelet's cap on a termination message
FIRST_RESTART_DELAY = 1.0  # the kubelet restarts a container that died for the first time at once
BACKOFF_START, BACKOFF_MAX, BACKOFF_RESET = 10.0, 300.0, 600.0
STOP_GRACE = 5.0

Obj = dict[str, Any]
Launch = Callable[[Obj], tuple[list[str], dict[str, str]]]


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Probe:
    """One probe of a container, with the kubelet's defaults and counters."""

    spec: Obj
    next_at: float = 0.0
    successes: int = 0
    failures: int = 0

    def period(self) -> float:
        return float(self.spec.get("periodSeconds") or 10)

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def record(self, ok: bool, now: float) -> None:
        self.next_at = now + self.period()
        self.successes, self.failures = (self.successes + 1, 0) if ok else (0, self.failures + 1)

    def passed(self) -> bool:
        return self.successes >= int(self.spec.get("successThreshold") or 1)

    def failed(self) -> bool:
        return self.failures >= int(self.spec.get("failureThreshold") or 3)


def _port(container: Obj, port: Any) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"no container port named {port!r}")


def run_probe(spec: Obj, container: Obj, pod_ip: str) -> bool:
    timeout = float(spec.get("timeoutSeconds") or 1)
    try:
        if "httpGet" in spec:
            get = spec["httpGet"]
            host = get.get("host") or pod_ip
            conn = http.client.HTTPConnection(host, _port(container, get["port"]), timeout=timeout)
            try:
                conn.request("GET", get.get("path") or "/", headers={"User-Agent": "kube-probe/1.37"})
                return 200 <= conn.getresponse().status < 400
            finally:
                conn.close()
        if "tcpSocket" in spec:
            tcp = spec["tcpSocket"]
            with socket.create_connection((tcp.get("host") or pod_ip, _port(container, tcp["port"])), timeout=timeout):
                return True
    except (OSError, http.client.HTTPException, ValueError):
        return False
    return True  # exec and grpc probes are not run here: they count as passing


@dataclass
class ContainerRun:
    """A container of a running pod: its process, probes and restart history."""

    spec: Obj
    workdir: Path
    launch: Launch  # pod -> (argv, env) for a fresh process
    proc: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    started_mono: float = 0.0
    restarts: int = 0
    backoff: float = 0.0
    restart_at: float | None = None
    last_terminated: Obj | None = None
    terminated: Obj | None = None  # final state under restartPolicy Never/OnFailure
    started: bool = False
    ready: bool = False
    probes: dict[str, Probe] = field(default_factory=dict)
    # Where the process leaves its termination message (the container's terminationMessagePath,
    # mapped); None when the runner does not map one for this kind of container.
    termination_file: Path | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def previous_log_path(self) -> Path:
        return self.workdir / f"{self.name}.previous.log"

    def start(self, pod: Obj) -> None:
        argv, env = self.launch(pod)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.termination_file is not None:
            self.termination_file.unlink(missing_ok=True)  # a restart's message is its own
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.workdir,
            start_new_session=True,  # its own group: stop() signals whatever it forked
            preexec_fn=_die_with_runner,
        )
        assert self.proc.stdout is not None
        threading.Thread(target=_write_cri_log, args=(self.proc.stdout, self.log_path), daemon=True).start()
        self.started_at, self.started_mono = now_rfc3339(), time.monotonic()
        self.started = self.ready = False
        self.restart_at = None
        self.probes = {
            k: Probe(dict(self.spec[k])) for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in self.spec
        }
        for probe in self.probes.values():
            probe.next_at = time.monotonic() + float(probe.spec.get("initialDelaySeconds") or 0)

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def listening(self) -> bool:
        if self.proc is None:
            return False
        try:
            return any(state == "LISTEN" for _, _, state in process_tcp_sockets(self.proc.pid))
        except OSError:
            return False

    def step(self, pod: Obj, restart_policy: str, say: Callable[[str], None]) -> None:
        """Advance by one tick: reap, restart when due, run the probes that are due."""
        now = time.monotonic()
        if self.proc is not None and self.proc.poll() is not None:
            self._exited(self.proc.returncode, restart_policy, now, say)
        if self.proc is None:
            if self.restart_at is not None and now >= self.restart_at:
                self._rotate_log()
                self.start(pod)
                say(f"container {self.name} restarted (restart {self.restarts})")
            return
        pod_ip = str(pod["status"]["podIP"])
        startup = self.probes.get("startupProbe")
        if not self.started:
            if startup is None:
                self.started = True
            elif startup.due(now):
                startup.record(run_probe(startup.spec, self.spec, pod_ip), now)
                self.started = startup.passed()
                if startup.failed():
                    say(f"container {self.name}: startup probe failed {startup.failures} times; killing it")
                    self._kill()
                    return
            if not self.started:
                return
        liveness = self.probes.get("livenessProbe")
        if liveness is not None and liveness.due(now):
            liveness.record(run_probe(liveness.spec, self.spec, pod_ip), now)
            if liveness.failed():
                say(f"container {self.name}: liveness probe failed {liveness.failures} times; killing it")
                self._kill()
                return
        readiness = self.probes.get("readinessProbe")
        if readiness is None:
            self.ready = self.listening()
        elif readiness.due(now):
            readiness.record(run_probe(readiness.spec, self.spec, pod_ip), now)
            if readiness.passed():
                self.ready = True
            elif readiness.failed():
                self.ready = False

    def _kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def _exited(self, returncode: int, restart_policy: str, now: float, say: Callable[[str], None]) -> None:
        code = 128 - returncode if returncode < 0 else returncode
        state = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": self.started_at,
            "finishedAt": now_rfc3339(),
            "containerID": f"standin://{self.proc.pid if self.proc else 0}",
        }
        message = self._termination_message(code)
        if message:
            state["message"] = message
        say(f"container {self.name} exited with code {code}")
        self.proc = None
        self.started = self.ready = False
        if restart_policy == "Never" or (restart_policy == "OnFailure" and code == 0):
            self.terminated = state
            return
        if now - self.started_mono > BACKOFF_RESET:
            self.backoff = 0.0
        delay = FIRST_RESTART_DELAY if self.backoff == 0 else self.backoff
        self.backoff = BACKOFF_START if self.backoff == 0 else min(self.backoff * 2, BACKOFF_MAX)
        self.restarts += 1
        self.last_terminated = state
        self.restart_at = now + delay

    def _termination_message(self, code: int) -> str:
        """The file's text, as the kubelet reads terminationMessagePath; with policy
        FallbackToLogsOnError and no message, the log's tail after a failure."""
        text = ""
        if self.termination_file is not None:
            with contextlib.suppress(OSError):
                text = self.termination_file.read_bytes()[:TERMINATION_MESSAGE_LIMIT].decode(errors="replace")
        if not text and code != 0 and self.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            with contextlib.suppress(OSError):
                lines = self.log_path.read_text(errors="replace").splitlines()[-80:]
                text = "\n".join(line.split(" ", 3)[-1] for line in lines)[-2048:]
        return text

    def _rotate_log(self) -> None:
        if self.log_path.exists():
            self.log_path.replace(self.previous_log_path)

    def status(self, image: str) -> Obj:
        out: Obj = {"name": self.name, "image": image, "imageID": "", "ready": self.ready, "started": self.started}
        out["restartCount"] = self.restarts
        if self.proc is not None:
            out["state"] = {"running": {"startedAt": self.started_at}}
            out["containerID"] = f"standin://{self.proc.pid}"
        elif self.terminated is not None:
            out["state"] = {"terminated": self.terminated}
        else:
            delay = max(0.0, (self.restart_at or 0) - time.monotonic())
            message = f"back-off {delay:.0f}s restarting failed container={self.name}"
            out["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
        if self.last_terminated is not None:
            out["lastState"] = {"terminated": self.last_terminated}
        return out


def _write_cri_log(stream: IO[bytes], path: Path) -> None:
    """Copy a process's output into `path` in the CRI log format (`<RFC 3339 time> stdout F <line>`),
    the kubelet's, which is what kwok's log endpoint parses for `kubectl logs`."""
    with stream, path.open("ab") as log:
        for line in iter(stream.readline, b""):
            now = datetime.now(UTC)
            stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond * 1000:09d}Z"
            log.write(stamp.encode() + b" stdout F " + line.rstrip(b"\n") + b"\n")
            log.flush()


def _die_with_runner() -> None:
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def pod_status(pod: Obj, runs: Mapping[str, ContainerRun]) -> Obj:
    """The status fields the runner owns: phase, Ready/ContainersReady, containerStatuses."""
    containers = pod["spec"]["containers"]
    since = (pod.get("status") or {}).get("startTime") or now_rfc3339()
    statuses = []
    for c in containers:
        run = runs.get(c["name"])
        if run is None:  # nothing to run for it (a sidecar the runner does not know): ready at once
            statuses.append(
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": since}},
                }
            )
        else:
            statuses.append(run.status(str(c.get("image", ""))))
    ready = all(s["ready"] for s in statuses)
    finals = [r.terminated for r in runs.values()]
    phase = "Running"
    if runs and all(t is not None for t in finals):
        phase = "Succeeded" if all(t and t["exitCode"] == 0 for t in finals) else "Failed"
    conditions = []
    seen = set()
    for cond in (pod.get("status") or {}).get("conditions") or []:
        kind = cond["type"]
        seen.add(kind)
        if kind in ("Ready", "ContainersReady"):
            value = "True" if ready and phase == "Running" else "False"
            if cond.get("status") != value:
                cond = {"type": kind, "status": value, "lastTransitionTime": now_rfc3339()}
                if value == "False":
                    cond["reason"] = "ContainersNotReady"
        conditions.append(cond)
    for kind in ("Ready", "ContainersReady"):
        if kind not in seen:
            conditions.append(
                {"type": kind, "status": "True" if ready else "False", "lastTransitionTime": now_rfc3339()}
            )
    return {"phase": phase, "conditions": conditions, "containerStatuses": statuses}
