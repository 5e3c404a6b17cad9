"""C1 (SIGKILL right after write k) and C2 (write k applied, its response lost) over the flows."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable, Mapping

from .env import ChaosEnv
from .flows import FLOWS
from .runs import Baseline, Row, record_baseline, run_faulted, tally


def sample(n: int, count: int) -> list[int]:
    """`count` write numbers spread over 1..n, with the first and the last when count >= 2."""
    if n <= count:
        return list(range(1, n + 1))
    if count <= 1:
        return [(n + 1) // 2]  # one point: the middle of the flow
    step = (n - 1) / (count - 1)
    return sorted({1 + round(i * step) for i in range(count)})


def baseline_of(env: ChaosEnv, name: str, baselines: dict[str, Baseline]) -> Baseline:
    if name not in baselines:
        baselines[name] = record_baseline(env, FLOWS[name])
    return baselines[name]


def choose(ks: int | Iterable[int] | None, n: int) -> list[int]:
    """None: every k of 1..n; an int: that many spread over 1..n; else the given k."""
    if ks is None:
        return list(range(1, n + 1))
    if isinstance(ks, int):
        return sample(n, ks)
    return list(ks)


def killer(env: ChaosEnv, k: int) -> Callable[[], None]:
    return lambda: env.front.kill_after_write(k, env.pid, signal.SIGKILL)


def dropper(env: ChaosEnv, k: int) -> Callable[[], None]:
    return lambda: env.front.drop_response_of_write(k)


def run_c1(env: ChaosEnv, plan: Mapping[str, int | Iterable[int] | None], baselines: dict[str, Baseline]) -> Row:
    """`plan`: flow -> the k to try (None: every k from 1 to the baseline's N)."""
    row = Row("C1 crash after write k")
    worst: dict[str, float] = {}
    for name, ks in plan.items():
        flow = FLOWS[name]
        base = baseline_of(env, name, baselines)
        chosen = choose(ks, base.writes)
        for k in chosen:
            outcome = run_faulted(env, flow, base, killer(env, k), expect_death=True)
            tally(row, name, k, outcome, worst)
        row.figures[f"{name} k"] = f"{len(chosen)}/{base.writes}"
    figures(row, worst, baselines, plan)
    return row


def run_c2(env: ChaosEnv, plan: Mapping[str, int | Iterable[int] | None], baselines: dict[str, Baseline]) -> Row:
    row = Row("C2 lost response of write k")
    worst: dict[str, float] = {}
    for name, ks in plan.items():
        flow = FLOWS[name]
        base = baseline_of(env, name, baselines)
        chosen = choose(ks, base.writes)
        for k in chosen:
            outcome = run_faulted(env, flow, base, dropper(env, k), expect_death=False)
            tally(row, name, k, outcome, worst)
        row.figures[f"{name} k"] = f"{len(chosen)}/{base.writes}"
    figures(row, worst, baselines, plan)
    return row


def figures(row: Row, worst: dict[str, float], baselines: dict[str, Baseline], plan: Mapping[str, object]) -> None:
    converge = [worst[n] for n in plan if n in worst]
    row.figures["max s to converge"] = f"{max(converge, default=0):.1f}"
    row.figures["baseline N"] = ",".join(f"{n}={baselines[n].writes}" for n in plan if n in baselines)
    if worst.get("unreached"):
        row.figures["k beyond the run's writes"] = str(int(worst["unreached"]))
