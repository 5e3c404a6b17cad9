"""Baselines and faulted runs of a flow, and the row results the table prints.

A baseline is the flow without faults: the operator's write count N (through the front, from the
user's action until the goal holds and the operator is quiet), the snapshot it converges to, and
its seconds. A faulted run arms one fault, runs the flow, recovers the way the row says (restart a
killed operator), waits for the goal and compares the snapshot with the baseline's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from devtools.cluster_testing import WaitTimeout

from .env import ChaosEnv
from .flows import Delete, Flow, all_gone, delete_reference
from .state import Snapshot, compare, find_leaks, take_snapshot

log = logging.getLogger("chaos")


@dataclass
class Baseline:
    flow: str
    writes: int
    seconds: float
    snapshot: Snapshot
    leaks: list[str]


@dataclass
class RunOutcome:
    converged: bool
    seconds: float
    duplicates: int = 0
    leaks: list[str] = field(default_factory=list)
    diffs: list[str] = field(default_factory=list)
    fault_reached: bool = True
    note: str = ""


@dataclass
class Row:
    """One table row: the dict shape shared with peers' C7 (`{"row", "runs", "failures", "figures"}`)."""

    row: str
    runs: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)

    def fail(self, what: str, detail: str) -> None:
        self.failures[what] = self.failures.get(what, 0) + 1
        self.details.append(detail)
        log.warning("%s: %s: %s", self.row, what, detail)

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "runs": self.runs, "failures": dict(self.failures), "figures": dict(self.figures)}


def converge_timeout(baseline: Baseline) -> float:
    # Generous: a restart plus a resync period on top of what the uninterrupted run needed.
    return max(120.0, 3 * baseline.seconds + 60)


def record_baseline(env: ChaosEnv, flow: Flow) -> Baseline:
    env.ensure_operator()
    flow.prepare(env)
    w0 = env.front.writes
    flow.act(env)
    seconds = env.wait_quiet(lambda: flow.goal(env), timeout=300, what=f"{flow.name} baseline")
    writes = env.front.writes - w0
    snapshot = take_snapshot(env)
    leaks = find_leaks(env) if isinstance(flow, Delete) else []
    flow.undo(env)
    log.info("baseline %s: %d writes, %.1f s", flow.name, writes, seconds)
    return Baseline(flow.name, writes, seconds, snapshot, leaks)


def reset(env: ChaosEnv) -> None:
    """After a failed run: delete everything with a healthy operator, so the next run starts clean."""
    env.ensure_operator()
    delete_reference(env)
    try:
        env.wait_quiet(lambda: all_gone(env), timeout=180, what="reset after a failed run")
    except WaitTimeout as exc:
        log.error("reset incomplete: %s", exc)


def judge(env: ChaosEnv, flow: Flow, baseline: Baseline, outcome: RunOutcome) -> RunOutcome:
    if isinstance(flow, Delete):
        outcome.leaks = find_leaks(env)
        outcome.converged = outcome.converged and not outcome.leaks
        return outcome
    outcome.diffs, outcome.duplicates = compare(baseline.snapshot, take_snapshot(env))
    outcome.converged = outcome.converged and not outcome.diffs
    return outcome


def run_faulted(
    env: ChaosEnv,
    flow: Flow,
    baseline: Baseline,
    arm: Callable[[], None],
    *,
    expect_death: bool,
    during: Callable[[], None] | None = None,
) -> RunOutcome:
    """One run: prepare, arm, act, (restart once the fault killed the operator), wait, compare."""
    env.ensure_operator()
    flow.prepare(env)
    arm()
    t0 = time.monotonic()
    flow.act(env)
    if during is not None:
        during()
    reached = True
    if expect_death:
        deadline = time.monotonic() + converge_timeout(baseline)
        while env.alive() and time.monotonic() < deadline:
            if time.monotonic() - t0 > baseline.seconds + 5 and flow.goal(env) and env.front.rate(3) == 0:
                break  # fewer writes than k this time: the kill point was never reached
            time.sleep(0.1)
        reached = not env.alive()
        env.front.clear()
        if reached:
            env.start_operator()
    try:
        env.wait_quiet(lambda: flow.goal(env), timeout=converge_timeout(baseline), what=f"{flow.name} to converge")
        converged = True
    except WaitTimeout as exc:
        converged = False
        log.warning("%s: %s", flow.name, exc)
    seconds = time.monotonic() - t0
    died = not expect_death and not env.alive()
    outcome = judge(env, flow, baseline, RunOutcome(converged, seconds, fault_reached=reached))
    if died:
        outcome.note = "the operator exited"
    if outcome.converged:
        flow.undo(env)
    else:
        reset(env)
    return outcome


def tally(row: Row, flow: str, k: int, outcome: RunOutcome, worst: dict[str, float]) -> None:
    row.runs += 1
    label = f"{flow} k={k}"
    if not outcome.converged:
        detail = "; ".join([*outcome.diffs[:4], *outcome.leaks[:4]]) or "goal not reached in time"
        row.fail("not converged", f"{label}: {detail}")
    if outcome.duplicates:
        row.fail("duplicates", f"{label}: {outcome.duplicates} extra objects")
    if outcome.leaks:
        row.fail("leaked", f"{label}: {len(outcome.leaks)} left: {outcome.leaks[:4]}")
    if outcome.note:
        row.fail("operator died", f"{label}: {outcome.note}")
    if not outcome.fault_reached:
        worst["unreached"] = worst.get("unreached", 0) + 1
    worst[flow] = max(worst.get(flow, 0.0), outcome.seconds)
