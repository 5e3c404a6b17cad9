"""One shared view of whether the API server answers, and the pacing of requests while it does not.

Every request of the client and of the cache passes the gate. While the API server answers, the
gate costs a lock. Once a request finds it unreachable (refused, reset, timed out) or overloaded
(429, or 503 with `Retry-After`), the gate closes: one request at a time probes after a jittered
backoff capped at a few seconds (never sooner than the server's `Retry-After`), the others wait,
so an outage costs a bounded request rate, not a storm from every worker and watch. The gate logs
one line when the API server stops answering and one when it is back.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

BASE_BACKOFF = 0.5
MAX_BACKOFF = 5.0
# A server's Retry-After beyond this is not waited for inside one request: the work is re-queued.
MAX_RETRY_AFTER = 30.0
API_UNREACHABLE = Gauge("ome_api_unreachable", "1 while the API server does not answer or throttles us.")
API_OUTAGES = Counter("ome_api_outages_total", "Times the API server stopped answering (or throttled us).")


class ApiUnavailable(ApiException):
    """The API server did not answer, or asked us to come back later: transient by nature.

    A subclass of ApiException with status 503, so code that treats 5xx answers as transient
    treats this one so too; `retry_in` says when the gate opens again.
    """

    def __init__(self, reason: str, retry_in: float) -> None:
        super().__init__(status=503, reason=reason)
        self.retry_in = retry_in


def retry_after_seconds(value: str | None) -> float | None:
    """A `Retry-After` header in seconds (the HTTP-date form is not sent by the API server)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class Gate:
    def __init__(self, clock: Callable[[], float] = time.monotonic, announce: bool = True) -> None:
        """`announce`: log the outage and the recovery (a one-shot CLI says it in its error instead)."""
        self.clock = clock
        self.announce = announce
        self._cond = threading.Condition()
        self.down_since: float | None = None
        self._reason = ""
        self._backoff = BASE_BACKOFF
        self._not_before = 0.0
        self._probing = False

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def enter(self, max_wait: float | None = None, stop: threading.Event | None = None) -> bool:
        """Wait for this caller's turn; True when it may send its request (then it must call
        `answered` or `failed`), False when `stop` was set. Raises ApiUnavailable when the turn
        would come later than `max_wait`."""
        deadline = None if max_wait is None else self.clock() + max_wait
        with self._cond:
            while True:
                if stop is not None and stop.is_set():
                    return False
                if self.down_since is None:
                    return True
                now = self.clock()
                if now >= self._not_before and not self._probing:
                    self._probing = True  # this caller is the probe; the others wait for its answer
                    return True
                opens = max(self._not_before, now + 0.05)
                if deadline is not None and opens > deadline:
                    raise ApiUnavailable(f"API server unavailable ({self._reason})", opens - now)
                wait = opens - now if deadline is None else min(opens, deadline) - now
                # Wake up regularly to notice `stop` (the cache's threads are stopped by it).
                self._cond.wait(min(max(wait, 0.05), 1.0))

    def answered(self) -> None:
        """The API server answered (any status but throttling): open the gate for everyone."""
        with self._cond:
            self._probing = False
            if self.down_since is None:
                return
            if self.announce:
                log.warning("API server answers again after %.0f s", self.clock() - self.down_since)
            self.down_since = None
            self._backoff = BASE_BACKOFF
            self._not_before = 0.0
            API_UNREACHABLE.set(0)
            self._cond.notify_all()

    def failed(self, reason: str, retry_after: float | None = None) -> float:
        """The API server did not answer, or throttled us; returns seconds until the next probe."""
        with self._cond:
            now = self.clock()
            if self.down_since is None:
                self.down_since = now
                self._reason = reason
                self._backoff = BASE_BACKOFF
                API_OUTAGES.inc()
                API_UNREACHABLE.set(1)
                if self.announce:
                    log.warning("API server unavailable (%s); requests paused and retried with backoff", reason)
            elif self._probing:
                self._backoff = min(MAX_BACKOFF, self._backoff * 2)
            self._probing = False
            # Jitter spreads the probes of replicas (and of the cache and kopf) over the interval.
            delay = max(retry_after or 0.0, self._backoff * random.uniform(0.5, 1.0))
            self._not_before = max(self._not_before, now + delay)
            self._cond.notify_all()
            return self._not_before - now

    def release(self) -> None:
        """The caller's request ended without saying anything about the API server."""
        with self._cond:
            if self._probing:
                self._probing = False
                self._cond.notify_all()
