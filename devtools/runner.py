"""The node side of the local cluster: runs the processes that router, SGLang engine and model-download pods describe.

    python -m devtools.runner --cluster-dir ~/.cache/ome-operator/clusters/<name>

devtools.cluster starts one per cluster, after the nodes are Ready (so `make cluster-up`, `make demo`
and the test fixture all have it). kwok still plays the kubelets' API side; this process adds what
kwok leaves out, for the pods whose command it knows (devtools.components.RUNNER_COMMANDS):

- a process per container, bound to the pod's IP (a loopback address): the real router with the pod's
  command line and a kubeconfig holding only a TokenRequest token of the pod's ServiceAccount, the
  stand-in SGLang server (devtools.standin_engine) for engine pods, or the real `ome-operator
  download` for download Job pods, with its hostPath volumes in a per-node directory of the cluster's
  state dir and the cluster's own hub (devtools.runner_download explains the mapping);
- the cluster's hub: olah (devtools.hub) over the repositories of devtools.hub.build_cluster_repos,
  its address in `runner/hub.json`;
- probes, Ready, restarts and exit codes (devtools.runner_pod), written to the pod's status;
- the cluster DNS the stand-ins resolve (`<hostname>.<subdomain>.<namespace>.svc.cluster.local` for
  pods a headless Service of that name selects), as `runner/dns.json`;
- `kubectl logs` and `kubectl port-forward`: a relay from every node's address and kubelet port to
  kwok's server, and kwok `Logs`/`PortForward` objects pointing at each pod's log files and address.

It never binds 0.0.0.0, and only ever dials loopback addresses. When the API server goes away (a
restart), it keeps the processes running, says so once, and carries on when the server is back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from devtools.hub import Hub, build_cluster_repos
from devtools.router import (
    OFFLINE_HUB,
    pod_command,
    request_token,
    write_token_kubeconfig,
)
from devtools.runner_download import MountError, download_launch, is_download_container, termination_path
from devtools.runner_net import compute_dns_records, engine_launch, relay, router_argv
from devtools.runner_pod import ContainerRun, Obj, pod_status

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
TICK = 0.5
_ROUTERS = re.compile(r"sglang_router[.]launch_router|(^|[ /])smg launch( |$)")  # within RUNNER_COMMANDS
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def say(text: str) -> None:
    print(f"[runner {time.strftime('%H:%M:%S')}] {text}", flush=True)


def command_line(container: Obj) -> str:
    return " ".join(str(a) for a in [*(container.get("command") or []), *(container.get("args") or [])])


def kind_of(container: Obj) -> str | None:
    if is_download_container(container):
        return "download"
    line = command_line(container)
    if "sglang.launch_server" in line:
        return "engine"
    if _ROUTERS.search(line):
        return "router"
    return None


class Runner:
    def __init__(self, cluster_dir: Path) -> None:
        self.dir = cluster_dir
        self.work = cluster_dir / "runner"
        self.work.mkdir(parents=True, exist_ok=True)
        self.state = json.loads((cluster_dir / "state.json").read_text())
        admin = yaml.safe_load((cluster_dir / "kubeconfig").read_text())
        self.server = admin["clusters"][0]["cluster"]["server"]
        self.ca = Path(admin["clusters"][0]["cluster"]["certificate-authority"])
        self.dns_file = self.work / "dns.json"
        self.pods: dict[str, dict[str, ContainerRun]] = {}  # pod uid -> container name -> run
        self.sent: dict[str, Obj] = {}  # pod uid -> last status written
        self.relays: dict[str, asyncio.Server] = {}
        self.api: Any = None
        self.hub: Hub | None = None
        self.waiting: dict[str, str] = {}  # pod uid -> why it cannot start yet (said once)

    # -- Kubernetes ------------------------------------------------------------------------------
    def _client(self) -> Any:
        from kubernetes import config

        new_client: Any = config.new_client_from_config
        return new_client(config_file=str(self.dir / "kubeconfig"))

    def _list(self, what: str) -> list[Obj]:
        from kubernetes import client

        core: Any = client.CoreV1Api(self.api)
        call: Any = {
            "pods": core.list_pod_for_all_namespaces,
            "services": core.list_service_for_all_namespaces,
            "nodes": core.list_node,
        }[what]
        items: list[Obj] = json.loads(call(_preload_content=False).data)["items"]
        return items

    def _patch_status(self, pod: Obj, status: Obj) -> None:
        from kubernetes import client

        meta = pod["metadata"]
        # The UID makes it a precondition: a status meant for a deleted pod must never land on the
        # pod of the same name that replaced it (a StatefulSet's), or one crash would look like two.
        body = {"metadata": {"uid": meta["uid"]}, "status": status}
        try:
            client.CoreV1Api(self.api).patch_namespaced_pod_status(meta["name"], meta["namespace"], body)
        except client.ApiException:
            pass  # the pod went away meanwhile
        except Exception:
            self.sent.pop(meta["uid"], None)  # not written (API server away): write it again next tick
            raise

    def _read_secret(self, namespace: str, name: str) -> Obj | None:
        from kubernetes import client

        try:
            found: Obj = client.CoreV1Api(self.api).read_namespaced_secret(name, namespace).to_dict()
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def _put_kwok(self, plural: str, pod: Obj, spec: Obj) -> None:
        from kubernetes import client

        meta = pod["metadata"]
        custom = client.CustomObjectsApi(self.api)
        body = {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": {"portforwards": "PortForward", "logs": "Logs"}[plural],
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "spec": spec,
        }
        try:
            custom.create_namespaced_custom_object("kwok.x-k8s.io", "v1alpha1", meta["namespace"], plural, body)
        except client.ApiException as exc:
            if exc.status != 409:
                raise
            custom.patch_namespaced_custom_object(
                "kwok.x-k8s.io", "v1alpha1", meta["namespace"], plural, meta["name"], {"spec": spec}
            )

    # -- processes -------------------------------------------------------------------------------
    def _launch(self, pod: Obj, container: Obj, kind: str, workdir: Path) -> tuple[list[str], dict[str, str]]:
        pod_ip = str(pod["status"]["podIP"])
        argv = pod_command(pod, container["name"])
        if kind == "engine":
            return engine_launch(pod, container, argv, self.dns_file)
        if kind == "download":
            namespace = pod["metadata"]["namespace"]
            return download_launch(
                pod,
                container,
                cluster_dir=self.dir,
                workdir=workdir,
                kubeconfig=self._token_kubeconfig(pod, workdir),
                cluster_hub=self.hub.endpoint if self.hub is not None else None,
                read_secret=lambda name: self._read_secret(namespace, name),
            )
        return router_argv(argv, pod_ip), self._router_env(pod, workdir)

    def _token_kubeconfig(self, pod: Obj, workdir: Path) -> Path:
        """A kubeconfig with only a TokenRequest token of the pod's ServiceAccount, bound to the pod."""
        workdir.mkdir(parents=True, exist_ok=True)
        meta = pod["metadata"]
        token = request_token(
            self.api, meta["namespace"], pod["spec"].get("serviceAccountName") or "default", pod, seconds=7200
        )
        return write_token_kubeconfig(workdir / "kubeconfig", self.server, self.ca, token, meta["namespace"])

    def _router_env(self, pod: Obj, workdir: Path) -> dict[str, str]:
        kubeconfig = self._token_kubeconfig(pod, workdir)
        # Nothing else: no admin kubeconfig through HOME, no in-cluster variables, no proxies.
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(workdir),
            "KUBECONFIG": str(kubeconfig),
            **OFFLINE_HUB,  # its tokenizer fetch stays on loopback (see devtools.router)
        }

    def _start_pod(self, pod: Obj) -> None:
        meta = pod["metadata"]
        workdir = self.work / "pods" / f"{meta['namespace']}.{meta['name']}.{meta['uid'][:8]}"
        runs: dict[str, ContainerRun] = {}
        for container in pod["spec"]["containers"]:
            kind = kind_of(container)
            if kind is None:
                continue

            def launch(p: Obj, c: Obj = container, k: str = kind) -> tuple[list[str], dict[str, str]]:
                return self._launch(p, c, k, workdir)

            message_file = termination_path(workdir, container["name"]) if kind == "download" else None
            run = ContainerRun(spec=container, workdir=workdir, launch=launch, termination_file=message_file)
            try:
                run.start(pod)
            except Exception as exc:  # e.g. the TokenRequest failed, a Secret is missing: retry next tick
                why = f"cannot start {container['name']} yet: {exc}"
                if self.waiting.get(meta["uid"]) != why or not isinstance(exc, MountError):
                    say(f"{meta['namespace']}/{meta['name']}: {why}")
                self.waiting[meta["uid"]] = why
                for started in runs.values():
                    started.stop()
                return
            runs[container["name"]] = run
            say(
                f"{meta['namespace']}/{meta['name']} ({pod['status']['podIP']}): started {kind} {container['name']} "
                f"(pid {run.proc.pid if run.proc else '?'})"
            )
        self.waiting.pop(meta["uid"], None)
        self.pods[meta["uid"]] = runs
        ports = sorted({int(p["containerPort"]) for c in pod["spec"]["containers"] for p in c.get("ports") or []})
        forwards = [{"ports": [p], "target": {"port": p, "address": pod["status"]["podIP"]}} for p in ports]
        logs = [
            {
                "containers": [r.name],
                "logsFile": str(r.log_path),
                "previousLogsFile": str(r.previous_log_path),
                "follow": True,
            }
            for r in runs.values()
        ]
        try:
            self._put_kwok("portforwards", pod, {"forwards": forwards})
            self._put_kwok("logs", pod, {"logs": logs})
        except Exception as exc:
            say(f"{meta['namespace']}/{meta['name']}: kwok port-forward/logs config not written: {exc}")

    def _stop_pod(self, uid: str, why: str) -> None:
        runs = self.pods.pop(uid, {})
        self.sent.pop(uid, None)
        for run in runs.values():
            run.stop()
        if runs:
            say(f"pod {uid[:8]}: stopped {', '.join(runs)} ({why})")

    # -- one pass --------------------------------------------------------------------------------
    def tick(self, pods: list[Obj], services: list[Obj]) -> list[tuple[Obj, Obj]]:
        """Start and stop processes, advance them; returns the status patches to write."""
        live = {}
        for pod in pods:
            meta, status = pod["metadata"], pod.get("status") or {}
            if not any(kind_of(c) for c in pod["spec"].get("containers") or []):
                continue
            if meta.get("deletionTimestamp") or not status.get("podIP") or not pod["spec"].get("nodeName"):
                continue
            if status.get("phase") != "Running" and meta["uid"] not in self.pods:
                continue
            live[meta["uid"]] = pod
        for uid in list(self.pods):
            if uid not in live:
                self._stop_pod(uid, "pod deleted or no longer running")
        self._write_dns(pods, services)
        patches = []
        for uid, pod in live.items():
            if uid not in self.pods:
                self._start_pod(pod)
            runs = self.pods.get(uid)
            if runs is None:
                continue
            name = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"

            def tell(text: str, pod_name: str = name) -> None:
                say(f"{pod_name}: {text}")

            for run in runs.values():
                run.step(pod, pod["spec"].get("restartPolicy") or "Always", tell)
            status = pod_status(pod, runs)
            comparable = {
                **status,
                "containerStatuses": [
                    {k: v for k, v in s.items() if k != "state"} | {"state": next(iter(s["state"]))}
                    for s in status["containerStatuses"]
                ],
            }
            if self.sent.get(uid) != comparable:
                self.sent[uid] = comparable
                patches.append((pod, status))
        return patches

    def _write_dns(self, pods: list[Obj], services: list[Obj]) -> None:
        text = json.dumps({"records": compute_dns_records(pods, services)}, indent=1)
        if not self.dns_file.exists() or self.dns_file.read_text() != text:
            tmp = self.dns_file.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(self.dns_file)

    # -- kubelet port relay ----------------------------------------------------------------------
    async def _relays(self, nodes: list[Obj]) -> None:
        port = int(self.state["ports"]["kubelet"])
        kwok = int(self.state["ports"]["kwok"])
        for node in nodes:
            for addr in (node.get("status") or {}).get("addresses") or []:
                ip = addr.get("address", "")
                if addr.get("type") != "InternalIP" or ip in self.relays:
                    continue
                with contextlib.suppress(ValueError):
                    if ipaddress.ip_address(ip) not in LOOPBACK:
                        continue
                    self.relays[ip] = await asyncio.start_server(lambda r, w: relay(r, w, kwok), ip, port)

    def _start_hub(self) -> None:
        """The cluster's hub; without it download pods fail (retryably) instead of leaving the machine."""
        try:
            hub = Hub(self.dir / "hub")
            commits = build_cluster_repos(hub.mirrors)
            hub.start(die_with_parent=True)
        except Exception as exc:
            say(f"hub not started, download pods will fail: {exc}")
            return
        self.hub = hub
        info = {"endpoint": hub.endpoint, "pid": hub.proc.pid if hub.proc else None, "repos": commits}
        (self.work / "hub.json").write_text(json.dumps(info, indent=1))
        say(f"hub {hub.endpoint} serving {', '.join(sorted(commits))}")

    async def _pass(self, last_nodes: float) -> float:
        if time.monotonic() - last_nodes > 5:
            await self._relays(await asyncio.to_thread(self._list, "nodes"))
            last_nodes = time.monotonic()
        pods, services = await asyncio.gather(
            asyncio.to_thread(self._list, "pods"), asyncio.to_thread(self._list, "services")
        )
        patches = self.tick(pods, services)  # here, in the main thread: it forks the processes
        await asyncio.gather(*(asyncio.to_thread(self._patch_status, p, s) for p, s in patches))
        return last_nodes

    async def run(self) -> None:
        self.api = self._client()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self._start_hub()
        say(f"watching pods of {self.dir.name}; kubelet port {self.state['ports']['kubelet']} relayed to kwok")
        ready_file = self.work / "ready"
        last_nodes = 0.0
        outage: str | None = None
        try:
            while not stop.is_set():
                try:
                    last_nodes = await self._pass(last_nodes)
                except Exception as exc:
                    # The API server restarting (or a request failing) is not the node's end: its
                    # processes keep running, and the next pass picks up where this one stopped.
                    why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                    if outage is None:
                        say(f"API server unreachable or refusing ({why}); pods keep running, retrying")
                    outage = why
                else:
                    if outage is not None:
                        say("API server reachable again; resuming")
                        outage = None
                    ready_file.touch()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), TICK if outage is None else 1.0)
        finally:
            for uid in list(self.pods):
                self._stop_pod(uid, "runner stopping")
            for server in self.relays.values():
                server.close()
            if self.hub is not None:
                self.hub.stop()
            say("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.runner", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cluster-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    asyncio.run(Runner(args.cluster_dir).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
