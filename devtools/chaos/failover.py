"""C5 (two replicas with peering, the active one SIGKILLed mid-flow) and C9 (uninstall, then delete)."""

from __future__ import annotations

import contextlib
import signal
import time

from devtools.apifront import ApiFront
from devtools.cluster_testing import WaitTimeout, wait_for
from devtools.helm import CHART, run_helm
from devtools.operator import REPO, OperatorProcess

from .crashes import baseline_of
from .env import RESYNC_SECONDS, ChaosEnv
from .flows import FLOWS, apply_reference, created, delete_reference
from .runs import Baseline, Row, RunOutcome, judge, reset
from .state import find_leaks

PEERING = "chaos-ha"
TAKEOVER_TARGET = 15.0
PEERING_CRD = REPO / "charts" / "ome-resources" / "crds" / "kopf-peering.yaml"
RELEASE, CHART_NAMESPACE = "ome-chaos", "ome"


def _acting(entry: dict[str, object]) -> bool:
    path = str(entry["path"])
    # Peering keep-alives are every replica's; everything else is acting.
    return bool(entry.get("write")) and not path.startswith("/apis/kopf.dev/")


def run_c5(env: ChaosEnv, baselines: dict[str, Baseline], runs: int = 2) -> Row:
    row = Row("C5 HA failover (SIGKILL active)")
    env.kubectl("apply", "--server-side", "-f", str(PEERING_CRD))
    env.kubectl("wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev", "--timeout=60s")
    # kopf does not create the peering object: without it, both replicas would run unpeered.
    env.kubectl(
        "apply", "-f", "-", stdin=f"apiVersion: kopf.dev/v1\nkind: ClusterKopfPeering\nmetadata: {{name: {PEERING}}}\n"
    )
    env.stop_operator()
    standby_front = ApiFront(env.cluster.kubeconfig).start()
    env.other_fronts.append(standby_front)
    takeovers: list[float] = []
    try:
        for i in range(runs):
            takeovers.append(_failover(env, row, ("scale", "runtime-edit")[i % 2], i, standby_front, baselines))
    finally:
        env.other_fronts.remove(standby_front)
        standby_front.stop()
        env.op = None
        env.kubectl("delete", "clusterkopfpeering", PEERING, "--ignore-not-found")
        env.start_operator()
    finite = [t for t in takeovers if t != float("inf")]
    row.figures["takeover s (max)"] = f"{max(finite):.1f}" if finite else "never"
    row.figures["target"] = f"<= {TAKEOVER_TARGET:.0f} s"
    return row


def _failover(
    env: ChaosEnv, row: Row, name: str, i: int, standby_front: ApiFront, baselines: dict[str, Baseline]
) -> float:
    flow = FLOWS[name]
    base = baseline_of(env, name, baselines)
    env.stop_operator()
    peering = ("--peering", PEERING)
    active = env.start_operator(*peering, "--peering-priority", "100")
    kubeconfig = standby_front.write_kubeconfig(env.workdir / "standby.kubeconfig", token=env.token)
    log = env.workdir / "logs" / f"standby-{i}.log"
    standby = OperatorProcess(
        kubeconfig, log, "--resync-seconds", str(RESYNC_SECONDS), *peering, "--peering-priority", "50"
    ).start()
    seconds = float("inf")
    try:
        standby.wait_ready(timeout=90)
        flow.prepare(env)
        time.sleep(3)  # let peering settle: the standby has seen the active one's record
        n0 = len(standby_front.log())
        env.front.kill_after_write(1, lambda: active.proc.pid if active.proc else 0, signal.SIGKILL)
        flow.act(env)
        wait_for(lambda: active.proc is not None and active.proc.poll() is not None, timeout=60, what="the kill")
        killed_at = time.time()
        early = [e for e in standby_front.log()[n0:] if _acting(e) and e["t"] < killed_at]
        if early:
            row.fail("double writer", f"{name}: standby wrote before the kill: {early[0]['path'][:80]}")

        def took_over() -> float | None:
            for e in standby_front.log()[n0:]:
                if _acting(e) and e["t"] >= killed_at:
                    return float(e["t"]) - killed_at
            return None

        with contextlib.suppress(WaitTimeout):  # never: counted as an infinite takeover
            seconds = wait_for(took_over, timeout=120, interval=0.2, what="the standby to act")
        if seconds > TAKEOVER_TARGET:
            row.fail("takeover > 15 s", f"{name}: {seconds:.1f} s")
        try:
            env.wait_quiet(lambda: flow.goal(env), timeout=180, what=f"{name} after failover")
            outcome = judge(env, flow, base, RunOutcome(True, 0.0))
            if not outcome.converged:
                row.fail("not converged", f"{name}: {outcome.diffs[:3]}")
            if outcome.duplicates:
                row.fail("duplicates", f"{name}: {outcome.duplicates}")
        except WaitTimeout as exc:
            row.fail("not converged", f"{name}: {exc}")
        row.runs += 1
        env.op = standby
        flow.undo(env)
    finally:
        standby.stop()
        active.kill()
    return seconds


def run_c9(env: ChaosEnv) -> Row:
    """`helm uninstall` of the operator chart, then the user deletes everything: nothing may hang on
    a finalizer. The chart is installed with `replicas: 0` (no image runs here) and the operator
    runs as a local process, which is SIGKILLed before the uninstall, as its removed pod would be."""
    row = Row("C9 uninstall, then delete")
    _helm(env, "install", RELEASE, str(CHART), f"--namespace={CHART_NAMESPACE}", "--set=replicas=0", "--wait")
    env.ensure_operator()
    if not created(env):
        apply_reference(env)
        env.wait_quiet(lambda: created(env), timeout=240, what="Kimi K2 Ready (C9)")
    foreign = [
        f"{kind}/{o['metadata']['name']}: {f}"
        for kind in ("inferenceservices", "clusterbasemodels", "clusterservingruntimes")
        for o in env.items(kind)
        for f in o["metadata"].get("finalizers") or []
        if not f.startswith("ome.io/")
    ]
    for entry in foreign:
        row.fail("finalizer not ome.io/", entry)
    env.kill_operator()
    _helm(env, "uninstall", RELEASE, f"--namespace={CHART_NAMESPACE}", "--wait")
    t0 = time.monotonic()
    delete_reference(env)
    try:
        wait_for(
            lambda: not any(env.items(k) for k in ("inferenceservices", "clusterbasemodels", "clusterservingruntimes")),
            timeout=60,
            what="deletions to complete without the operator",
        )
        row.figures["deleted in s"] = f"{time.monotonic() - t0:.1f}"
    except WaitTimeout as exc:
        row.fail("deletion hangs", str(exc)[:200])
    row.runs += 1
    left = [x for x in find_leaks(env) if "node-label" in x]
    row.figures["node labels left while uninstalled"] = str(len(left))
    env.start_operator()  # reinstall: what it left must be swept
    try:
        wait_for(lambda: not find_leaks(env), timeout=90, what="leftovers swept after reinstall")
    except WaitTimeout:
        leaks = find_leaks(env)
        row.fail("leaked after reinstall", f"{len(leaks)}: {leaks[:4]}")
        reset(env)
    return row


def _helm(env: ChaosEnv, *args: str) -> None:
    run_helm(*args, f"--kubeconfig={env.cluster.kubeconfig}", timeout=180)
