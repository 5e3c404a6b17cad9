"""When to try again, and how long to wait first.

Hubs rate-limit per client IP, and 16 nodes behind one NAT all downloading the same model is
exactly the traffic that earns a 429. Waiting exactly as long as the server asks (Retry-After),
and otherwise backing off exponentially with jitter, keeps a fleet of download Jobs from turning
one throttle into a storm of retries.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
RETRY_AFTER_CAP_S = 900.0  # a server asking for more than 15 minutes is treated as asking for 15
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_RNG = random.Random()


class TransientError(Exception):
    """A failure worth retrying (throttled, server error, stalled or dropped connection)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after

    def __str__(self) -> str:
        if self.retry_after is not None:
            return f"{self.reason} (server asked to retry after {self.retry_after:g}s)"
        return self.reason


class FatalError(Exception):
    """A failure that retrying cannot fix (not found, no access, disk full, bad listing)."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return min(float(value), RETRY_AFTER_CAP_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return min(max(0.0, when.timestamp() - now), RETRY_AFTER_CAP_S)


def backoff_delay(
    attempt: int,
    retry_after: float | None = None,
    base: float = BACKOFF_BASE_S,
    cap: float = BACKOFF_CAP_S,
    rng: random.Random | None = None,
) -> float:
    """Delay before retry number `attempt` (1-based).

    With Retry-After: at least what the server asked, plus up to 10% so the Jobs that were
    throttled together do not all come back in the same second. Without: exponential from `base`
    with full jitter in [0.5, 1.0] of the step, capped at `cap`.
    """
    r = rng or _RNG
    if retry_after is not None:
        return retry_after * (1.0 + 0.1 * r.random())
    step = min(cap, base * 2.0 ** (attempt - 1))
    return step * (0.5 + 0.5 * r.random())


def status_error(status: int, headers: Mapping[str, str], what: str) -> Exception:
    """Turn an unexpected HTTP status into the matching error, with an actionable message."""
    if status in RETRYABLE_STATUS:
        return TransientError(f"HTTP {status} for {what}", parse_retry_after(headers.get("retry-after")))
    if status in (401, 403):
        return FatalError(
            f"HTTP {status} for {what}: no access; the repository may be gated or private "
            "and HF_TOKEN missing or without permission"
        )
    if status == 404:
        return FatalError(f"HTTP 404 for {what}: not found at the resolved commit")
    if status == 416:
        return TransientError(f"HTTP 416 for {what}: the server rejected the resume offset")
    return FatalError(f"HTTP {status} for {what}")


@dataclass
class Attempts:
    """Counts retries of one operation against a budget."""

    max_retries: int
    used: int = 0

    def next_delay(self, error: TransientError) -> float | None:
        """The delay before the next try, or None when the budget is spent."""
        self.used += 1
        if self.used > self.max_retries:
            return None
        return backoff_delay(self.used, error.retry_after)
