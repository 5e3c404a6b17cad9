"""The gate's pacing, kopf's log filter and retry budget, /healthz's rules, the label sweep's scope."""

from __future__ import annotations

import inspect
import logging
import threading
from pathlib import Path

import pytest
from kubernetes import client

from ome_operator.handlers.health import Backoffs, Health, KopfLogFilter, stream_seconds_for
from ome_operator.kube.cache import Cache
from ome_operator.kube.informer import READ_SLACK, Scope
from ome_operator.kube.reach import MAX_BACKOFF, ApiUnavailable, Gate
from ome_operator.reconcile.sweep import judged


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_gate_lets_one_probe_through_and_obeys_retry_after(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    gate = Gate(clock)
    assert gate.enter(max_wait=0)
    with caplog.at_level(logging.WARNING, "ome_operator.kube.reach"):
        delay = gate.failed("429 Too Many Requests", retry_after=7)
        assert delay == pytest.approx(7)
        # Before Retry-After has passed nobody may send; a caller that cannot wait is told when.
        with pytest.raises(ApiUnavailable) as raised:
            gate.enter(max_wait=1)
        assert raised.value.status == 503 and raised.value.retry_in == pytest.approx(7)
        clock.now += 7
        assert gate.enter(max_wait=0)  # the probe
        with pytest.raises(ApiUnavailable):
            gate.enter(max_wait=0)  # everyone else waits for the probe's answer
        gate.failed("429 Too Many Requests", retry_after=7)
        clock.now += 7
        assert gate.enter(max_wait=0)
        gate.answered()
        assert gate.enter(max_wait=0) and gate.enter(max_wait=0)  # open again for all
    # One line for the outage, one for the recovery, however many requests failed in between.
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("API server unavailable (429") and lines[1].startswith("API server answers again")


def test_the_gate_backoff_is_jittered_and_capped() -> None:
    clock = Clock()
    gate = Gate(clock)
    delays = []
    for _ in range(20):
        assert gate.enter(max_wait=0)
        delays.append(gate.failed("ConnectionRefusedError"))
        clock.now += delays[-1]
    assert max(delays) <= MAX_BACKOFF
    assert min(delays[10:]) >= MAX_BACKOFF / 2  # grows to the cap, jitter within its upper half
    assert delays[0] < 1.0


def test_waiters_are_released_when_the_probe_succeeds() -> None:
    gate = Gate()
    gate.failed("refused", retry_after=0.05)
    assert gate.enter(max_wait=5)  # the probe, after Retry-After
    entered = []
    waiters = [threading.Thread(target=lambda: entered.append(gate.enter(max_wait=5))) for _ in range(3)]
    for thread in waiters:
        thread.start()
    gate.answered()
    for thread in waiters:
        thread.join(5)
    assert entered == [True, True, True]


def test_stop_ends_a_wait_at_the_gate() -> None:
    gate = Gate()
    gate.failed("refused", retry_after=60)
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    assert gate.enter(stop=stop) is False


def test_kopf_retry_lines_are_counted_not_logged_and_peering_is_followed() -> None:
    events: list[str] = []
    kopf_filter = KopfLogFilter(on_pause=lambda: events.append("pause"), on_resume=lambda: events.append("resume"))

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("kopf._cogs.clients.api", logging.ERROR, __file__, 1, message, None, None)

    assert not kopf_filter.filter(
        record("Request attempt #3/61 failed; will retry: GET /api -> ClientConnectorError()")
    )
    assert kopf_filter.filter(record("Request attempt #61/61 failed; escalating: GET /api -> ClientConnectorError()"))
    assert kopf_filter.follow_peering(record("Pausing operations in favour of [<Peer a: priority=9>]."))
    assert kopf_filter.follow_peering(record("Resuming operations after the pause. Conflicting operators are gone."))
    assert kopf_filter.follow_peering(record("Keep-alive touched.")) and events == ["pause", "resume"]
    assert events == ["pause", "resume"]


def test_the_kopf_messages_followed_are_kopfs_own() -> None:
    """A kopf upgrade that rewords them must fail here, not silently in production."""
    from kopf._cogs.clients import api
    from kopf._core.engines import peering

    api_source, peering_source = inspect.getsource(api), inspect.getsource(peering)
    assert 'f"Request attempt {idx} failed; will retry' in api_source
    for message in (*KopfLogFilter.PAUSE, KopfLogFilter.RESUME):
        assert message in peering_source, message


def test_kopf_retries_ride_out_minutes_with_capped_jittered_delays() -> None:
    backoffs = Backoffs()
    first, second = list(backoffs), list(backoffs)
    assert len(first) == len(backoffs) and first != second  # fresh jitter per request
    assert max(first) <= backoffs.cap and sum(first) > 300  # a 2-minute outage never escalates


def test_a_healthy_idle_stream_shows_progress_well_within_the_deadline() -> None:
    for deadline in (30.0, 120.0, 300.0, 900.0):
        seconds = stream_seconds_for(deadline)
        assert seconds * 1.2 + READ_SLACK < deadline, deadline
    # The default deadline leaves more than two minutes of outage before /healthz fails.
    assert 300 - (stream_seconds_for(300) * 1.2 + READ_SLACK) > 120


def test_healthz_names_stalled_watches_and_long_passes(tmp_path: Path) -> None:
    clock = Clock()
    cache = Cache(client.ApiClient(client.Configuration()), [Scope("Node"), Scope("Pod", "a")])
    for informer in cache.informers:
        informer.clock = clock
        informer.progress_at = clock.now
    passes: list[tuple[object, float]] = []
    health = Health(cache, lambda: passes, watch_deadline=30, reconcile_deadline=60, clock=clock)
    assert health.problems() == []
    clock.now += 31
    cache.informers[0].progress_at = clock.now  # the Node stream delivered something
    assert health.problems() == ["watch of Pod in a made no progress for 31 s (deadline 30 s)"]
    cache.informers[1].progress_at = clock.now
    passes.append((("InferenceService", "a", "b"), clock.now - 61))
    assert health.problems() == ["reconcile of ('InferenceService', 'a', 'b') running for 61 s (deadline 60 s)"]
    passes.clear()
    health.kopf_down_since = clock.now - 31
    assert health.problems() == ["kopf down for 31 s"]


@pytest.mark.parametrize(
    ("label", "namespaces", "ours"),
    [
        ("models.ome.io/clusterbasemodel.qwen", [], True),
        ("models.ome.io/team-a.basemodel.qwen", [], True),
        ("models.ome.io/team-a.basemodel.qwen", ["team-a"], True),
        ("models.ome.io/team-b.basemodel.qwen", ["team-a"], False),
        ("models.ome.io/clusterbasemodel.qwen", ["team-a"], True),
        ("models.ome.io/something-else", [], False),
        ("kubernetes.io/hostname", [], False),
    ],
)
def test_the_sweep_judges_only_model_labels_of_its_scope(label: str, namespaces: list[str], ours: bool) -> None:
    assert judged(label, namespaces) is ours


def test_a_request_in_flight_when_the_gate_closed_does_not_free_a_second_probe() -> None:
    clock = Clock()
    gate = Gate(clock)
    in_flight: list[bool] = []
    # Another thread entered while the gate was open; its 429 comes back after the probe left.
    other = threading.Thread(target=lambda: in_flight.append(gate.enter(max_wait=0)))
    other.start()
    other.join()
    gate.failed("429 Too Many Requests", retry_after=3)  # this thread's own request
    clock.now += 3
    assert gate.enter(max_wait=0)  # this thread is the probe now
    late = threading.Thread(target=lambda: gate.failed("429 Too Many Requests", retry_after=3))
    late.start()
    late.join()
    clock.now += 3
    with pytest.raises(ApiUnavailable):
        gate.enter(max_wait=0)  # still one probe out: the late answer did not end it
    assert in_flight == [True]
