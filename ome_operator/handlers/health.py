"""What `/healthz` means, and how kopf is kept from wedging, flooding or dying when the API server misbehaves.

`/healthz` fails (503, with the reasons) when a watch of the cache made no progress (no event, no
bookmark, no re-established stream) for longer than the watch deadline, when a reconcile pass has
run longer than the reconcile deadline, or when kopf has been down longer than the watch deadline.
The watch deadline is longer than an API outage the operator rides out by itself (the default,
300 s, covers a 2-minute outage with room to spare): restarting the process would not bring the API
server back, and a restart loop during an outage only adds load when it returns. What the probe
catches is a process that cannot recover: a stream wedged on a connection nothing answers, a pass
stuck in a call that never returns.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import Counter

from ome_operator.kube.cache import Cache
from ome_operator.kube.informer import READ_SLACK

log = logging.getLogger(__name__)

WATCH_DEADLINE = 300.0
RECONCILE_DEADLINE = 300.0
# kopf's own requests: connect and total time of one short request.
KOPF_CONNECT_TIMEOUT = 5.0
KOPF_REQUEST_TIMEOUT = 30.0
PEERING_LOGGER = "kopf._core.engines.peering"
KOPF_RETRIES = Counter("ome_kopf_request_retries_total", "kopf's API requests that failed and were retried.")


def stream_seconds_for(watch_deadline: float) -> float:
    """A stream's server-side timeout such that a healthy idle stream shows progress well within
    the deadline (it is renewed every stream_seconds * 1.2 at most, and given READ_SLACK more)."""
    return max(5.0, min(300.0, (watch_deadline - READ_SLACK) / 5))


class Backoffs:
    """kopf's retry delays for its own requests: jittered, capped at `cap`, `count` of them (about
    ten minutes in all by default, so an outage of minutes is retried through instead of escalating
    to an error that ends kopf). A fresh jittered sequence for every request."""

    def __init__(self, count: int = 60, cap: float = 10.0) -> None:
        self.count = count
        self.cap = cap

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[float]:
        delay = 0.5
        for _ in range(self.count):
            yield delay * random.uniform(0.5, 1.0)
            delay = min(self.cap, delay * 2)


def configure_kopf(settings: Any, stream_seconds: float, peering_lifetime: int) -> None:
    """Timeouts on every kopf request and stream; streams renewed like the cache's."""
    settings.networking.connect_timeout = KOPF_CONNECT_TIMEOUT
    settings.networking.request_timeout = KOPF_REQUEST_TIMEOUT
    settings.networking.error_backoffs = Backoffs()
    settings.watching.connect_timeout = KOPF_CONNECT_TIMEOUT
    settings.watching.server_timeout = int(stream_seconds)
    settings.watching.client_timeout = stream_seconds * 1.2 + READ_SLACK
    # No event, not even a bookmark, for this long: the stream is dead; kopf reconnects.
    settings.watching.inactivity_timeout = stream_seconds * 1.2 + READ_SLACK
    settings.watching.reconnect_backoff = 1.0
    # A SIGKILLed peer's record counts as alive for its lifetime: that bounds the failover time.
    # Keep-alives are sent every lifetime - 5..10 s (at least every second), see kopf's peering.
    settings.peering.lifetime = peering_lifetime
    settings.peering.stealth = True


class KopfLogFilter(logging.Filter):
    """kopf logs every failed attempt of every request at ERROR (hundreds of lines in an outage):
    those are counted and dropped, the gate in kube/ says once that the API server is unavailable
    and once that it is back. kopf's peering pauses and resumes are turned into calls, so that a
    paused replica stops acting on cache events too."""

    RETRY = re.compile(r"^Request attempt #\d+(/\d+)? failed; will retry")
    PAUSE = ("Pausing operations in favour of", "Pausing all operators, including self")
    RESUME = "Resuming operations after the pause"
    NOISE = ("OS signals are ignored: running not in the main thread",)

    def __init__(self, on_pause: Callable[[], None], on_resume: Callable[[], None]) -> None:
        super().__init__()
        self.on_pause = on_pause
        self.on_resume = on_resume

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.RETRY.match(message):
            KOPF_RETRIES.inc()
            return False
        return not message.startswith(self.NOISE)

    def install(self) -> None:
        """On every handler (kopf logs request retries through many loggers), and on kopf's peering
        logger, at INFO whatever the log level: the pause and resume lines must reach the filter."""
        for handler in logging.getLogger().handlers:
            handler.addFilter(self)
        peering = logging.getLogger(PEERING_LOGGER)
        peering.setLevel(logging.INFO)
        peering.addFilter(self.follow_peering)

    def follow_peering(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(self.PAUSE):
            self.on_pause()
        elif message.startswith(self.RESUME):
            self.on_resume()
        return record.levelno >= logging.getLogger().getEffectiveLevel()


class Health:
    def __init__(
        self,
        cache: Cache,
        running_passes: Callable[[], list[tuple[Any, float]]],
        watch_deadline: float = WATCH_DEADLINE,
        reconcile_deadline: float = RECONCILE_DEADLINE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache = cache
        self.running_passes = running_passes
        self.watch_deadline = watch_deadline
        self.reconcile_deadline = reconcile_deadline
        self.clock = clock
        self.kopf_down_since: float | None = None
        self.stopped = threading.Event()

    def problems(self) -> list[str]:
        if self.stopped.is_set():
            return ["stopped"]
        found = [
            f"watch of {scope.kind}{' in ' + scope.namespace if scope.namespace else ''} "
            f"made no progress for {quiet:.0f} s (deadline {self.watch_deadline:.0f} s)"
            for scope, quiet in self.cache.stalled(self.watch_deadline)
        ]
        now = self.clock()
        for key, started in self.running_passes():
            if now - started > self.reconcile_deadline:
                found.append(
                    f"reconcile of {key} running for {now - started:.0f} s (deadline {self.reconcile_deadline:.0f} s)"
                )
        if self.kopf_down_since is not None and now - self.kopf_down_since > self.watch_deadline:
            found.append(f"kopf down for {now - self.kopf_down_since:.0f} s")
        return found
