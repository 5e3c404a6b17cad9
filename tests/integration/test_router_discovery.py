"""The real SGLang router, with only its own ServiceAccount's token, discovers exactly the prefill and
decode leader pods of the Kimi K2 InferenceService, and nothing else.

The operator (started here) turns OME's three Kimi K2 files, unchanged, into pods on the local control
plane. The router (PyPI `sglang-router`) then runs as a local process with the command line the
operator rendered into the router pod (`$(NAMESPACE)` and `$(INFERENCESERVICE_NAME)` expanded from
that pod, as the kubelet would) and a kubeconfig holding nothing but a TokenRequest token of the
router's ServiceAccount plus the cluster CA (see devtools.router for why that is its in-pod identity).

Decoys are the pods a too-broad selector or too-broad credentials would pick up: Ready pods with the
leaders' component/worker-index labels but another `ome.io/inferenceservice`, in the same namespace
and in another one, and pods in another namespace with exactly the leaders' labels. The engine/decoder
worker pods (same component and InferenceService, no worker-index 0) must not be picked either.

Pod IPs on the local cluster are loopback addresses; the cluster's runner serves stand-in engines on
the engine pods' IPs, so this router may register the leaders (/workers lists at most those two).
Discovery is proven from its own log lines ("Adding pod: NAME | type | url") and
its own Prometheus gauge of discovered workers; a second router pointed at the decoy namespace proves
the token is what it authenticates with (the API server names the ServiceAccount in its 403).
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.cluster import kubectl_path
from devtools.cluster_testing import ClusterHandle, wait_for
from devtools.operator import OperatorProcess, reference_files
from devtools.router import (
    DiscoveredPod,
    RouterProcess,
    address_is_loopback,
    pod_command,
    request_token,
    set_flag,
    write_token_kubeconfig,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NS = "kimi-k2-instruct"
ISVC = "kimi-k2-instruct"
ROUTER_SA = f"{ISVC}-router"
ROUTER_USER = f"system:serviceaccount:{NS}:{ROUTER_SA}"
WORKER_INDEX = "leaderworkerset.sigs.k8s.io/worker-index"
ISVC_LABEL = "ome.io/inferenceservice"
# The StatefulSets the operator renders for group 0; ordinal 0 is each group's leader.
PREFILL_LEADER = f"{ISVC}-engine-0-0"
DECODE_LEADER = f"{ISVC}-decoder-0-0"


def kjson(cluster: ClusterHandle, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def get_or_none(cluster: ClusterHandle, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
    ns = ["-n", namespace] if namespace else []
    proc = cluster.kubectl("get", kind, name, *ns, "-o", "json", "--ignore-not-found", check=False)
    if proc.returncode != 0:
        raise AssertionError(f"kubectl get {kind} {name} failed: {proc.stderr}")
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def _terminating(cluster: ClusterHandle, kind: str, name: str, namespace: str | None) -> bool:
    obj = get_or_none(cluster, kind, name, namespace)
    return bool(obj and obj["metadata"].get("deletionTimestamp"))


def is_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
    return status.get("phase") == "Running" and conditions.get("Ready") == "True" and bool(status.get("podIP"))


@dataclass(frozen=True)
class Deployed:
    prefill_leader: dict[str, Any]
    decode_leader: dict[str, Any]
    router_pod: dict[str, Any]
    other_pods: list[dict[str, Any]]  # every other pod of the namespace: group workers, the router


@dataclass(frozen=True)
class Decoys:
    namespace: str
    pods: list[dict[str, Any]]  # Ready, with a pod IP: the router would take any that matched


@pytest.fixture(scope="module")
def deployed(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for crd in ("inferenceservices", "clusterbasemodels", "clusterservingruntimes"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}.ome.io", "--timeout=60s")
    objects = [
        (doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])
        for path in reference_files()
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    log = tmp_path_factory.mktemp("router-operator") / "operator.log"
    # Download Jobs of cluster models go to the operator namespace; a fresh one keeps them apart from
    # whatever else shares the cluster.
    with cluster.temp_namespace("router-op") as op_ns:
        op = OperatorProcess(cluster.kubeconfig, log, "--operator-namespace", op_ns).start()
        created: list[tuple[str, str | None, str]] = []
        try:
            op.wait_ready()
            # An earlier test may have deleted these while no operator ran; this one finalizes them,
            # and applying over an object being deleted would be lost with it.
            wait_for(
                lambda: not any(_terminating(cluster, kind, name, ns) for kind, ns, name in objects),
                timeout=90,
                what="objects left over from an earlier test to finish deleting",
            )
            created = [(kind, ns, name) for kind, ns, name in objects if not get_or_none(cluster, kind, name, ns)]
            for path in reference_files():
                cluster.kubectl("apply", "-f", str(path))

            def ready() -> bool:
                isvc = get_or_none(cluster, "inferenceservice", ISVC, NS)
                if isvc is None:
                    return False
                status = isvc.get("status") or {}
                conds = {c["type"]: c["status"] for c in status.get("conditions") or []}
                return (
                    conds.get("Ready") == "True" and status.get("observedGeneration") == isvc["metadata"]["generation"]
                )

            wait_for(ready, timeout=240, interval=1, what=f"InferenceService {ISVC} Ready; operator log: {log}")
            pods = kjson(cluster, "get", "pods", "-n", NS)["items"]
            by_name = {p["metadata"]["name"]: p for p in pods}
            routers = [p for p in pods if (p["metadata"].get("labels") or {}).get("component") == "router"]
            assert len(routers) == 1 and is_ready(routers[0]), [p["metadata"]["name"] for p in routers]
            for leader in (PREFILL_LEADER, DECODE_LEADER):
                assert leader in by_name and is_ready(by_name[leader]), f"{leader} missing or not Ready"
            yield Deployed(
                prefill_leader=by_name[PREFILL_LEADER],
                decode_leader=by_name[DECODE_LEADER],
                router_pod=routers[0],
                other_pods=[p for n, p in by_name.items() if n not in (PREFILL_LEADER, DECODE_LEADER)],
            )
        finally:
            _delete_while_operator_runs(cluster, created, op)


def _delete_while_operator_runs(
    cluster: ClusterHandle, created: list[tuple[str, str | None, str]], op: OperatorProcess
) -> None:
    """Delete what this module created, the InferenceService first, while the operator still runs:
    its finalizers (and the node labels it set for the model) are only removed by a running operator."""
    order = {"InferenceService": 0, "ClusterServingRuntime": 1, "ClusterBaseModel": 1, "Namespace": 2}
    failures = []
    try:
        for kind, ns, name in sorted(created, key=lambda o: order.get(o[0], 1)):
            scope = ["-n", ns] if ns else []
            proc = cluster.kubectl(
                "delete", kind, name, *scope, "--ignore-not-found", "--wait=true", "--timeout=90s", check=False
            )
            if proc.returncode != 0:
                failures.append(f"{kind} {name}: {proc.stderr.strip()}")
    finally:
        op.stop()
    assert not failures, f"cleanup left objects behind: {failures}; operator log: {op.log_path}"


def _decoy_pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            # kwok never pulls or runs the image.
            "containers": [
                {
                    "name": "main",
                    "image": "registry.invalid/router-decoy:1",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def decoys(cluster: ClusterHandle, deployed: Deployed) -> Iterator[Decoys]:
    prefill_labels = dict(deployed.prefill_leader["metadata"]["labels"])
    decode_labels = dict(deployed.decode_leader["metadata"]["labels"])
    other_isvc = {ISVC_LABEL: "other-isvc", WORKER_INDEX: "0"}
    here = [
        _decoy_pod("decoy-other-isvc-engine", {"component": "engine", **other_isvc}),
        _decoy_pod("decoy-other-isvc-decoder", {"component": "decoder", **other_isvc}),
    ]
    elsewhere = [
        *here,
        # Exactly the leaders' labels: only the namespace tells them apart.
        _decoy_pod("decoy-same-labels-engine", prefill_labels),
        _decoy_pod("decoy-same-labels-decoder", decode_labels),
    ]
    with cluster.temp_namespace("router-decoy") as decoy_ns:
        try:
            cluster.kubectl("apply", "-n", NS, "-f", "-", stdin=yaml.safe_dump_all(here))
            cluster.kubectl("apply", "-n", decoy_ns, "-f", "-", stdin=yaml.safe_dump_all(elsewhere))
            names = {(NS, p["metadata"]["name"]) for p in here} | {(decoy_ns, p["metadata"]["name"]) for p in elsewhere}

            # Ready with an IP, or the router would skip them for that reason and prove nothing.
            def all_ready() -> list[dict[str, Any]] | None:
                pods = [
                    p
                    for ns in (NS, decoy_ns)
                    for p in kjson(cluster, "get", "pods", "-n", ns)["items"]
                    if (ns, p["metadata"]["name"]) in names
                ]
                return pods if len(pods) == len(names) and all(is_ready(p) for p in pods) else None

            yield Decoys(decoy_ns, wait_for(all_ready, timeout=60, what="decoy pods Ready"))
        finally:
            for pod in here:
                cluster.kubectl("delete", "pod", pod["metadata"]["name"], "-n", NS, "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def router_kubeconfig(cluster: ClusterHandle, deployed: Deployed, tmp_path_factory: pytest.TempPathFactory) -> Path:
    with cluster.api_client() as api:
        token = request_token(api, NS, ROUTER_SA, deployed.router_pod)
    server, ca = cluster.server()
    return write_token_kubeconfig(tmp_path_factory.mktemp("router-token") / "kubeconfig", server, ca, token, NS)


def _wait_alive(router: RouterProcess, probe: Any, what: str, timeout: float = 30) -> Any:
    def check() -> Any:
        if not router.running():
            raise AssertionError(f"router exited early; log {router.log_path}:\n{router.log()[-3000:]}")
        return probe()

    return wait_for(check, timeout=timeout, what=what)


def test_router_discovers_exactly_the_leader_pods(
    cluster: ClusterHandle, deployed: Deployed, decoys: Decoys, router_kubeconfig: Path, tmp_path: Path
) -> None:
    rendered = pod_command(deployed.router_pod)
    deployment = kjson(cluster, "get", "deployment", f"{ISVC}-router", "-n", NS)
    template = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    running = {c["name"]: c for c in deployed.router_pod["spec"]["containers"]}
    assert running["router"]["command"] == template["router"]["command"], "the router pod is not the rendered one"
    assert not [a for a in rendered if "$(" in a], f"unexpanded references in {rendered}"
    assert rendered[rendered.index("--service-discovery-namespace") + 1] == NS
    port = rendered[rendered.index("--service-discovery-port") + 1]
    assert port == "30000"
    leaders = {
        DiscoveredPod(PREFILL_LEADER, "prefill", f"http://{deployed.prefill_leader['status']['podIP']}:{port}"),
        DiscoveredPod(DECODE_LEADER, "decode", f"http://{deployed.decode_leader['status']['podIP']}:{port}"),
    }

    router = RouterProcess(rendered, router_kubeconfig, tmp_path / "router")
    # Same token and selectors, aimed at the namespace holding exact copies of the leaders' labels.
    control = RouterProcess(
        set_flag(rendered, "--service-discovery-namespace", decoys.namespace), router_kubeconfig, tmp_path / "control"
    )
    try:
        router.start()
        control.start()
        _wait_alive(router, lambda: leaders <= set(router.discovered()), "the router to discover both leaders")
        # Each discovered pod gets an AddWorker job; once both jobs are over (registered or failed),
        # the initial list, which already held every decoy, has been fully processed.
        _wait_alive(router, lambda: all(router.registration_done(p.url) for p in leaders), "both registrations to end")
        discovered = router.discovered()
        counts = Counter(discovered)
        assert set(discovered) == leaders and all(n == 1 for n in counts.values()), (
            f"discovered {discovered}, expected exactly {sorted(leaders, key=str)}"
        )
        assert router.metric("smg_discovery_workers_discovered", source="kubernetes") == 2
        status, body = router.get("/workers")
        assert status == 200
        listed = {w["url"] for w in json.loads(body)["workers"]}
        assert listed <= {p.url for p in leaders}, f"/workers lists {listed}"
        assert router.get("/health")[0] == 200, "failed worker health checks must not take the router down"

        log = router.log()
        assert "falling back to local in-cluster config" not in log, "the router ignored KUBECONFIG"
        strangers = [*decoys.pods, *deployed.other_pods]
        for pod in strangers:
            name, ip = pod["metadata"]["name"], pod["status"].get("podIP")
            assert name not in log, f"the router saw {pod['metadata']['namespace']}/{name}"
            # Group workers share no IP with the leaders (one GPU pod per node, host network).
            assert not ip or f"//{ip}:" not in log, f"the router dialled {ip} ({name})"
        assert router.non_loopback_mentions() == [], "the router mentions addresses outside 127.0.0.0/8"
        sockets = router.sockets()
        listening = {local for local, _, state in sockets if state == "LISTEN"}
        assert listening == {f"127.0.0.1:{router.port}", f"127.0.0.1:{router.metrics_port}"}, sockets
        peers = [remote for _, remote, state in sockets if state != "LISTEN"]
        assert all(address_is_loopback(p) for p in peers), peers

        # The control router holds the same token: the API server refuses it by name outside NS.
        forbidden = (
            f'User "{ROUTER_USER}" cannot list resource "pods" in API group "" in the namespace "{decoys.namespace}"'
        )

        def refused() -> bool:
            # With any broader credential it would list the decoys that carry the leaders' labels.
            assert control.discovered() == [], f"a router holding the router token discovered {control.discovered()}"
            return forbidden in control.log()

        _wait_alive(control, refused, "the control router's 403")
        assert control.discovered() == []
        assert not control.metric("smg_discovery_workers_discovered", source="kubernetes")
        assert control.non_loopback_mentions() == []
    finally:
        router.stop()
        control.stop()


def test_router_token_reads_only_pods_of_its_namespace(
    cluster: ClusterHandle, deployed: Deployed, decoys: Decoys, router_kubeconfig: Path
) -> None:
    def as_router(*args: str) -> subprocess.CompletedProcess[str]:
        # The kubeconfig holds only the token, so nothing else can authenticate these requests.
        return subprocess.run(
            [str(kubectl_path()), f"--kubeconfig={router_kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    whoami = as_router("auth", "whoami", "-o", "json")
    assert whoami.returncode == 0, whoami.stderr
    assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == ROUTER_USER

    other = decoys.namespace
    expectations = [
        ("list pods", ["-n", NS], True),
        ("watch pods", ["-n", NS], True),
        ("get pods", ["-n", NS], True),
        ("get secrets", ["-n", NS], False),
        ("list secrets", ["-n", NS], False),
        ("create pods", ["-n", NS], False),
        ("delete pods", ["-n", NS], False),
        ("list pods", ["-n", other], False),
        ("get pods", ["-n", other], False),
        ("watch pods", ["-n", other], False),
        ("list pods", ["--all-namespaces"], False),
        ("get secrets", ["-n", other], False),
    ]
    wrong = []
    for verb_resource, scope, allowed in expectations:
        proc = as_router("auth", "can-i", *verb_resource.split(), *scope)
        answer = proc.stdout.strip()
        if answer != ("yes" if allowed else "no") or proc.returncode != (0 if allowed else 1):
            wrong.append(f"can-i {verb_resource} {' '.join(scope)}: {answer!r} {proc.stderr.strip()}")
    assert not wrong, wrong

    # And the API server enforces it on real requests, not just in its review answers.
    pods = as_router("get", "pods", "-n", NS, "-o", "name")
    assert pods.returncode == 0 and f"pod/{PREFILL_LEADER}" in pods.stdout.split(), pods.stderr
    for args in (["get", "secrets", "-n", NS], ["get", "pods", "-n", other], ["get", "pods", "--all-namespaces"]):
        proc = as_router(*args)
        assert proc.returncode != 0 and "Forbidden" in proc.stderr, f"{args}: {proc.stdout} {proc.stderr}"
