"""The operator against a misbehaving API server, through devtools.apifront (issue 14 item 2, issue 11 C3-C5).

Each test runs its own operator(s) with a kubeconfig pointing at a fault-injecting front, on the
Qwen3-0.6B catalog entry (one engine, one router, a model on 16 nodes). A "change" is an edit of the
InferenceService's spec; it is acted on when the operator records that generation in
`status.observedGeneration`. Timings are printed (the chaos table carries the figures); the
assertions are on behaviour, with generous deadlines.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from bench.apiserver import restart_apiserver
from devtools.apifront import ApiFront
from devtools.cluster_testing import ClusterHandle, WaitTimeout, wait_for
from devtools.operator import OperatorProcess, apply_crds, write_operator_kubeconfig

from .operator_env import REPO, kjson

pytestmark = pytest.mark.integration
MODEL = REPO / "config/models/Qwen/Qwen3-0.6B.yaml"
RUNTIME = REPO / "config/runtimes/srt/Qwen/qwen3-0-6b-rt.yaml"
SAMPLE = REPO / "config/samples/isvc/Qwen/qwen3-0-6b.yaml"
NS = NAME = "qwen3-0-6b"
PEERING = "ome-liveness-test"
# Requests only the operator's own client and cache send (kopf watches ome.io parents, CRDs and
# peering objects, and posts events): their spacing shows the gate's pacing.
KOPF_PATHS = re.compile(r"^/apis/(ome\.io|kopf\.dev|apiextensions\.k8s\.io)/|/events")


@pytest.fixture(scope="module")
def setup(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    apply_crds(cluster)
    work = tmp_path_factory.mktemp("liveness")
    token = yaml.safe_load(write_operator_kubeconfig(cluster, work / "direct.kubeconfig").read_text())["users"][0][
        "user"
    ]["token"]
    for path in (MODEL, RUNTIME, SAMPLE):
        cluster.kubectl("apply", "-f", str(path))
    try:
        yield {"work": work, "token": token}
    finally:
        # No finalizer holds any of them: the deletions complete without an operator.
        for path in (SAMPLE, RUNTIME, MODEL):
            cluster.kubectl("delete", "-f", str(path), "--ignore-not-found", "--timeout=60s")


@contextlib.contextmanager
def fronted_operator(
    cluster: ClusterHandle, setup: dict[str, Any], name: str, *args: str
) -> Iterator[tuple[ApiFront, OperatorProcess]]:
    with ApiFront(cluster.kubeconfig) as front:
        kubeconfig = front.write_kubeconfig(setup["work"] / f"{name}.kubeconfig", token=setup["token"])
        op = OperatorProcess(kubeconfig, setup["work"] / f"{name}.log", "--resync-seconds", "20", *args).start()
        try:
            yield front, op
        finally:
            op.stop()


def generation_acted_on(cluster: ClusterHandle) -> tuple[int, int]:
    obj = kjson(cluster, "get", "isvc", NAME, "-n", NS)
    return obj["metadata"]["generation"], (obj.get("status") or {}).get("observedGeneration") or 0


def change_spec(cluster: ClusterHandle) -> int:
    """Flip the router's replica bounds between 1 and 2; returns the new generation."""
    current = kjson(cluster, "get", "isvc", NAME, "-n", NS)["spec"]["router"]["maxReplicas"]
    n = 1 if current == 2 else 2
    patch = f'{{"spec":{{"router":{{"minReplicas":{n},"maxReplicas":{n}}}}}}}'
    cluster.kubectl("patch", "isvc", NAME, "-n", NS, "--type=merge", "-p", patch)
    return generation_acted_on(cluster)[0]


def wait_acted_on(cluster: ClusterHandle, generation: int, timeout: float, op: OperatorProcess | None = None) -> float:
    """Seconds until `generation` is acted on; a timeout carries the end of `op`'s log."""
    start = time.monotonic()
    try:
        wait_for(
            lambda: generation_acted_on(cluster)[1] >= generation,
            timeout=timeout,
            interval=0.25,
            what=f"generation {generation} acted on",
        )
    except WaitTimeout as exc:
        if op is None:
            raise
        tail = "\n".join(log_since(op, 0)[-40:])
        raise WaitTimeout(f"{exc}\nthe operator's last log lines ({op.log_path}):\n{tail}") from None
    return time.monotonic() - start


def wait_converged(cluster: ClusterHandle, timeout: float = 120) -> None:
    wait_for(
        lambda: (lambda g: g[1] >= g[0])(generation_acted_on(cluster)),
        timeout=timeout,
        what="the InferenceService's current generation acted on",
    )


def healthz(op: OperatorProcess) -> tuple[int, str]:
    """/healthz's status and body; 0 when nothing answers (OperatorProcess.get folds a 503 into that)."""
    try:
        with urllib.request.urlopen(op.health_url + "/healthz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def log_since(op: OperatorProcess, offset: int) -> list[str]:
    with op.log_path.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace").splitlines()


def alive(op: OperatorProcess) -> bool:
    return op.proc is not None and op.proc.poll() is None


def test_blackholed_operator_reports_unhealthy_and_restarted_converges(
    cluster: ClusterHandle, setup: dict[str, Any]
) -> None:
    deadline = 30
    with fronted_operator(cluster, setup, "blackhole", "--watch-deadline", str(deadline)) as (front, op):
        op.wait_ready()
        wait_converged(cluster)
        assert healthz(op)[0] == 200
        front.blackhole(None)  # connections accepted and held, nothing answered, nothing reset
        start = time.monotonic()
        generation = change_spec(cluster)  # made while the operator cannot see it
        _status, body = wait_for(
            lambda: (lambda r: r if r[0] == 503 else None)(healthz(op)),
            timeout=deadline + 30,
            interval=0.5,
            what="/healthz failing",
        )
        unhealthy_after = time.monotonic() - start
        print(f"\nblack-holed: /healthz failed after {unhealthy_after:.1f} s (deadline {deadline} s): {body!r}")
        assert "made no progress" in body
        assert unhealthy_after <= deadline + 20  # the deadline, plus probe and scheduling slack
        # As kubelet would: the front is cleared (the network is back), the wedged process is killed
        # and a new one started; it acts on the change made meanwhile.
        front.clear()
        op.kill()
        op.start()
        op.wait_ready(timeout=90)
        took = wait_acted_on(cluster, generation, timeout=60, op=op)
        print(f"restarted operator acted on the change in {took:.1f} s after ready")


def test_two_minutes_of_refused_connections(cluster: ClusterHandle, setup: dict[str, Any]) -> None:
    outage = 120
    with fronted_operator(cluster, setup, "refuse") as (front, op):
        op.wait_ready()
        wait_converged(cluster)
        offset = op.log_path.stat().st_size
        front.clear_counters()
        front.refuse(outage)
        start = time.monotonic()
        generation = change_spec(cluster)
        health: list[int] = []
        while time.monotonic() - start < outage:
            assert alive(op), f"the operator exited during the outage; log: {op.log_path}"
            health.append(healthz(op)[0])
            time.sleep(2)
        front.clear()
        took = wait_acted_on(cluster, generation, timeout=30, op=op)
        assert alive(op)
        lines = log_since(op, offset)
        tracebacks = sum(1 for line in lines if line.startswith("Traceback"))
        print(
            f"\n{outage} s refused: {len(lines)} log lines, {tracebacks} tracebacks; peak {front.peak_rate():.0f} req/s (the recovery)"
        )
        print(f"change made during the outage acted on {took:.1f} s after the API came back")
        print("\n".join(lines))
        assert set(health) == {200}, (
            f"/healthz answered {sorted(set(health))} during an outage shorter than its deadline"
        )
        assert tracebacks == 0
        assert len(lines) <= 10, lines


def test_429_with_retry_after_is_obeyed(cluster: ClusterHandle, setup: dict[str, Any]) -> None:
    retry_after, seconds = 3.0, 30.0
    with fronted_operator(cluster, setup, "throttle") as (front, op):
        op.wait_ready()
        wait_converged(cluster)
        front.clear_counters()
        front.errors(429, retry_after=retry_after, seconds=seconds)
        start = time.time()
        generation = change_spec(cluster)
        time.sleep(seconds)
        took = wait_acted_on(cluster, generation, timeout=30, op=op)
        end = start + seconds
        entries = [
            e for e in front.log() if start + 1 <= e["t"] <= end and not KOPF_PATHS.search(e["path"].split("?")[0])
        ]
        ours = [e["t"] for e in entries]
        for e in entries:
            print(f"{e['t'] - start:7.2f} {e.get('status')} {e['method']} {e['path'][:110]}")
        gaps = [b - a for a, b in itertools.pairwise(ours)]
        print(
            f"\n429 Retry-After {retry_after:.0f} s for {seconds:.0f} s: {len(ours)} requests of the operator's "
            f"client and cache, smallest gap {min(gaps, default=0):.2f} s, peak {front.peak_rate():.0f} req/s; "
            f"acted on the change {took:.1f} s after"
        )
        assert ours, "the operator kept trying"
        # kopf's streams obey Retry-After each on its own; with ours, a handful of requests a second
        # (after the first seconds, when the requests in flight at the start get their 429).
        per_second = collections.Counter(int(e["t"] - start) for e in front.log() if start + 2 <= e["t"] <= end)
        print(f"busiest second of the brown-out (after its first 2 s): {max(per_second.values(), default=0)} requests")
        assert max(per_second.values(), default=0) <= 10
        # One probe per Retry-After: no two requests of ours closer than the server asked.
        assert min(gaps, default=retry_after) >= retry_after * 0.95, gaps
        assert alive(op)


def test_watches_cut_every_two_seconds_lose_no_change(cluster: ClusterHandle, setup: dict[str, Any]) -> None:
    with fronted_operator(cluster, setup, "cuts") as (front, op):
        op.wait_ready()
        wait_converged(cluster)
        generation = 0
        for i in range(10):
            front.cut_watches()
            if i % 3 == 0:
                generation = change_spec(cluster)
            time.sleep(2)
        took = wait_acted_on(cluster, generation, timeout=30, op=op)
        print(f"\nwatches cut 10 times in 20 s: the last change acted on {took:.1f} s after the cuts")
        assert healthz(op)[0] == 200


def test_silent_watches_lose_no_change(cluster: ClusterHandle, setup: dict[str, Any]) -> None:
    """Watches that stay open but deliver nothing, and new ones never answered, while every other
    request is served: the change is still acted on within the resync period (20 s here), from
    the cache's lists, and the operator stays healthy."""
    with fronted_operator(cluster, setup, "silent") as (front, op):
        op.wait_ready()
        wait_converged(cluster)
        front.stall_watches(None)
        try:
            generation = change_spec(cluster)
            # The period, plus slack for a loaded machine: without the relists it never comes.
            took = wait_acted_on(cluster, generation, timeout=20 + 15, op=op)
            print(f"\nwatches silent: the change acted on after {took:.1f} s")
            assert healthz(op)[0] == 200
            relisted = [line for line in log_since(op, 0) if "watches silent for over" in line]
            assert relisted, "acted on, but not through the silence relists"
        finally:
            front.clear()
        # The watches work again and carry the next change.
        wait_acted_on(cluster, change_spec(cluster), timeout=30, op=op)
        assert alive(op)


def writes(front: ApiFront) -> list[float]:
    return [
        e["t"]
        for e in front.log()
        if e.get("write") and not e["path"].startswith("/apis/kopf.dev/") and "/events" not in e["path"]
    ]


def test_sigkill_of_the_active_peer_hands_over(cluster: ClusterHandle, setup: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", str(REPO / "charts/ome-resources/crds/kopf-peering.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev", "--timeout=60s")
    cluster.kubectl(
        "apply", "-f", "-", stdin=f"apiVersion: kopf.dev/v1\nkind: ClusterKopfPeering\nmetadata: {{name: {PEERING}}}\n"
    )
    peer_args = ("--peering", PEERING, "--peering-lifetime", "10")
    high = ("--peering-priority", "200")
    low = ("--peering-priority", "100")
    try:
        # The higher priority first: two replicas started at the same instant may both act until
        # each has seen the other's record (kopf's peering); the takeover is what is measured here.
        with fronted_operator(cluster, setup, "peer-high", *peer_args, *high) as (front_a, a):
            a.wait_ready()
            wait_converged(cluster)
            with fronted_operator(cluster, setup, "peer-low", *peer_args, *low) as (front_b, b):
                b.wait_ready()
                generation = change_spec(cluster)
                wait_acted_on(cluster, generation, timeout=60, op=a)
                assert writes(front_a), "the higher priority acts"
                assert not writes(front_b), "the standby writes nothing"
                killed_at = time.time()
                a.kill()  # SIGKILL: no goodbye in the peering object, its record has to expire
                generation = change_spec(cluster)
                took = wait_acted_on(cluster, generation, timeout=60, op=b)
                print(f"\nSIGKILL of the active peer: the standby acted on a change {took:.1f} s after the kill")
                assert writes(front_b), "the standby took over"
                assert max(writes(front_a)) < killed_at < min(writes(front_b)), "no interval where both wrote"
    finally:
        cluster.kubectl("delete", "clusterkopfpeering", PEERING, "--ignore-not-found")


def test_apiserver_restart_loses_no_change(cluster: ClusterHandle, setup: dict[str, Any]) -> None:
    """Every stream (the cache's and kopf's) drops; a spec change and a new InferenceService made
    before they are back are both acted on within the resync period (20 s here)."""
    second = yaml.safe_load_all(SAMPLE.read_text())
    isvc = next(doc for doc in second if doc["kind"] == "InferenceService")
    isvc["metadata"]["name"] = f"{NAME}-second"
    with fronted_operator(cluster, setup, "restart") as (_, op):
        op.wait_ready()
        wait_converged(cluster)
        restart_apiserver(cluster)
        start = time.monotonic()
        generation = change_spec(cluster)
        cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(isvc))
        try:
            took = wait_acted_on(cluster, generation, timeout=20, op=op)
            wait_for(
                lambda: (kjson(cluster, "get", "isvc", isvc["metadata"]["name"], "-n", NS).get("status") or {}).get(
                    "observedGeneration"
                ),
                timeout=max(1.0, 20 - (time.monotonic() - start)),
                what="the InferenceService created after the restart reconciled",
            )
            print(
                f"\nAPI server restarted: change acted on in {took:.1f} s, new object in {time.monotonic() - start:.1f} s"
            )
            assert healthz(op)[0] == 200
        finally:
            cluster.kubectl("delete", "isvc", isvc["metadata"]["name"], "-n", NS, "--ignore-not-found")
