"""The fast subset of the chaos campaign (issue 11) in `make test`: C1 on OME's Kimi K2 create for
a spread sample of k (SIGKILL right after the operator's k-th write, restart, wait) and C2 for a
sample of k (the k-th write applied, its response lost). Every k of the create (127 runs of 26-73 s
here since downloads run for real) does not fit `make test`'s budget; `make chaos` runs them all. Each run must end in the same objects and status as the
uninterrupted create: names, owner references, rendered content, conditions; nothing duplicated.

The operator reaches the API server only through devtools.apifront (the fault injector); the
harness is devtools/chaos (also `make chaos`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.chaos.crashes import run_c1, run_c2
from devtools.chaos.env import ChaosEnv
from devtools.chaos.flows import FLOWS, all_gone, delete_reference
from devtools.chaos.runs import Baseline, Row, record_baseline
from devtools.cluster_testing import ClusterHandle

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosEnv]:
    chaos = ChaosEnv(cluster, tmp_path_factory.mktemp("chaos"))
    try:
        yield chaos
    finally:
        # With a running operator: it removes what it put on nodes.
        chaos.ensure_operator()
        delete_reference(chaos)
        chaos.wait_quiet(lambda: all_gone(chaos), timeout=180, what="the chaos flows cleaned up")
        chaos.close()


@pytest.fixture(scope="module")
def create_baseline(env: ChaosEnv) -> Baseline:
    base = record_baseline(env, FLOWS["create"])
    assert base.writes > 0
    again = record_baseline(env, FLOWS["create"])
    # The comparison itself is sound: two uninterrupted creates give the same snapshot.
    assert again.snapshot == base.snapshot
    return base


def explain(row: Row) -> str:
    return f"{row.as_dict()}\n" + "\n".join(row.details)


def test_c1_sigkill_after_sampled_writes_of_the_create(env: ChaosEnv, create_baseline: Baseline) -> None:
    row = run_c1(env, {"create": 6}, {"create": create_baseline})
    assert row.runs == min(6, create_baseline.writes)
    assert not row.failures, explain(row)


def test_c2_lost_response_of_sampled_writes_of_the_create(env: ChaosEnv, create_baseline: Baseline) -> None:
    row = run_c2(env, {"create": 4}, {"create": create_baseline})
    assert row.runs == 4
    assert not row.failures, explain(row)
