"""C3 (cut and silent watches, an apiserver restart) and C4 (brown-out and outage) rows."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from devtools.cluster_testing import WaitTimeout

from .apiserver import respawn_runner, restart_apiserver, runner_alive
from .crashes import baseline_of
from .env import RESYNC_SECONDS, ChaosEnv
from .flows import FLOWS
from .runs import Baseline, Row, run_faulted, tally

CUT_EVERY = 3.0
# A client that honours Retry-After: 2 with a handful of workers and watches stays far below this.
RATE_BOUND = 20.0
RECOVER_WITHIN = 30.0


def run_c3(env: ChaosEnv, baselines: dict[str, Baseline], flows: list[str], restart: bool = True) -> Row:
    row = Row("C3 cut watches, apiserver restart")
    worst: dict[str, float] = {}
    for name in flows:
        stop = threading.Event()

        def cutter(stop: threading.Event = stop) -> None:
            while not stop.wait(CUT_EVERY):
                env.front.cut_watches()

        thread = threading.Thread(target=cutter, daemon=True)
        base = baseline_of(env, name, baselines)
        try:
            outcome = run_faulted(env, FLOWS[name], base, thread.start, expect_death=False)
        finally:
            stop.set()
        tally(row, f"{name}+cuts", 0, outcome, worst)
    runner_restarts: list[int] = []
    if restart:
        cluster_dir = env.cluster.kubeconfig.parent

        def bounce() -> None:
            time.sleep(2)  # mid-flow: the operator is writing the model's Jobs and node labels
            worst["apiserver down s"] = restart_apiserver(cluster_dir, lambda: bool(env.items("namespaces")))
            time.sleep(3)  # the runner's next tick is when it notices
            if not runner_alive(cluster_dir):
                runner_restarts.append(1)
                respawn_runner(cluster_dir)

        base = baseline_of(env, "create", baselines)
        outcome = run_faulted(env, FLOWS["create"], base, lambda: None, expect_death=False, during=bounce)
        tally(row, "create+apiserver-restart", 0, outcome, worst)
    acted = measure_silent_watch_change(env, baselines)
    row.runs += 1
    row.figures["act on change, watches silent (s)"] = f"{acted:.1f}" if acted is not None else "never"
    if acted is None or acted > RESYNC_SECONDS + 5:
        row.fail("change not acted on within resync", f"scale while watches silent: {acted}")
    row.figures["max s to converge"] = f"{max((v for k, v in worst.items() if '+' in k), default=0):.1f}"
    if "apiserver down s" in worst:
        row.figures["apiserver restart s"] = f"{worst['apiserver down s']:.1f}"
    if runner_restarts:
        row.figures["stand-in kubelets restarted"] = "yes (devtools.runner exits on API errors)"
    return row


def measure_silent_watch_change(env: ChaosEnv, baselines: dict[str, Baseline]) -> float | None:
    """Watches silent (open but delivering nothing), the user scales: seconds until the operator
    writes the new group, which only a resync pass can notice."""
    flow = FLOWS["scale"]
    base = baseline_of(env, "scale", baselines)
    env.ensure_operator()
    flow.prepare(env)
    env.front.stall_watches(None)
    n0 = len(env.front.log())
    t0 = time.time()
    flow.act(env)
    acted: float | None = None
    deadline = time.monotonic() + RESYNC_SECONDS * 3
    while acted is None and time.monotonic() < deadline:
        for entry in env.front.log()[n0:]:
            if entry.get("write") and "engine-1" in entry["path"]:
                acted = entry["t"] - t0
                break
        time.sleep(0.2)
    env.front.clear()
    try:
        env.wait_quiet(lambda: flow.goal(env), timeout=120, what="scale after silent watches")
        flow.undo(env)
    except WaitTimeout:
        from .runs import reset

        reset(env)
    del base
    return acted


class Monitor:
    """Polls the operator's /healthz once a second while a fault is on."""

    def __init__(self, env: ChaosEnv) -> None:
        self.env = env
        self.probes = 0
        self.failed = 0
        self.died = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            if not self.env.alive():
                self.died = True
                return
            assert self.env.op is not None
            self.probes += 1
            if self.env.op.get("/healthz")[0] != 200:
                self.failed += 1

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _phase(
    env: ChaosEnv,
    row: Row,
    label: str,
    flow_name: str,
    baselines: dict[str, Baseline],
    faults: list[tuple[Callable[[], None], float]],
) -> None:
    flow = FLOWS[flow_name]
    baseline_of(env, flow_name, baselines)
    env.ensure_operator()
    flow.prepare(env)
    log0 = len(env.log_text().splitlines())
    env.front.clear_counters()
    with Monitor(env) as mon:
        first = True
        for arm, seconds in faults:
            arm()
            if first:
                flow.act(env)
                first = False
            time.sleep(seconds)
        peak = env.front.peak_rate()
        env.front.clear()
        try:
            recovered: float | None = env.wait_quiet(
                lambda: flow.goal(env), timeout=RECOVER_WITHIN + 60, what=f"{label}: recovery"
            )
        except WaitTimeout:
            recovered = None
    lines = env.log_text().splitlines()[log0:]
    row.runs += 1
    row.figures[f"{label} peak req/s"] = f"{peak:.0f}"
    row.figures[f"{label} recover s"] = f"{recovered:.1f}" if recovered is not None else "never"
    row.figures[f"{label} log lines/tracebacks"] = f"{len(lines)}/{sum('Traceback' in x for x in lines)}"
    row.figures[f"{label} healthz fails"] = f"{mon.failed}/{mon.probes}"
    if mon.died or not env.alive():
        row.fail("operator died", label)
    if mon.failed:
        row.fail("liveness not answering", f"{label}: {mon.failed} of {mon.probes} /healthz probes failed")
    if peak > RATE_BOUND:
        row.fail("request rate unbounded", f"{label}: peak {peak:.0f}/s > {RATE_BOUND:.0f}/s")
    if recovered is None or recovered > RECOVER_WITHIN:
        row.fail("not converged within 30 s", f"{label}: {recovered}")
    if recovered is not None:
        flow.undo(env)
    else:
        from .runs import reset

        reset(env)


def run_c4(env: ChaosEnv, baselines: dict[str, Baseline], short: bool = False) -> Row:
    """Both phases on the scale flow: its goal (a second group, Unschedulable) needs no pod to
    become Ready, so "converged within 30 s" measures the operator, not the stand-in engines."""
    row = Row("C4 brown-out and outage")
    half = 10.0 if short else 30.0
    front = env.front
    _phase(
        env,
        row,
        "429/503",
        "scale",
        baselines,
        [
            (lambda: front.errors(429, retry_after=2, seconds=half), half),
            (lambda: front.errors(503, retry_after=2, seconds=half), half),
        ],
    )
    outage = 20.0 if short else 60.0
    _phase(
        env,
        row,
        "refused+blackholed",
        "scale",
        baselines,
        [(lambda: front.refuse(outage), outage), (lambda: front.blackhole(outage), outage)],
    )
    row.figures["window"] = f"{2 * half:.0f} s errors, {2 * outage:.0f} s outage"
    return row
