"""Permanent failures remembered per object, so a refused object costs a few requests, not a loop.

A pass that ends in a permanent error (the API server refused what we sent, or the object cannot
be processed at all) records the fingerprint of its input. Later passes over the same input do no
writes until a capped backoff has passed: the resync timer and child events still run the pass,
but it reads the cache only and leaves the status as it is. A changed input (new generation,
another runtime, a rendered object that differs) has another fingerprint and is tried at once.
The book is in memory: a restarted operator tries each refused object once more.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from ome_operator.api.reasons import Cond

# The first retry of unchanged input after this long, doubling up to the cap.
FIRST_RETRY = 30.0
MAX_RETRY = 600.0


def fingerprint_of(*parts: Any) -> str:
    """A stable digest of a pass's input (rendered objects, spec, generation)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class Refusal:
    fingerprint: str
    condition: Cond
    attempts: int
    retry_at: float


class RefusalBook:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[Hashable, Refusal] = {}

    def blocked(self, key: Hashable, fingerprint: str) -> Cond | None:
        """The remembered condition while the same input waits out its backoff; else None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.fingerprint != fingerprint or self._clock() >= entry.retry_at:
                return None
            return entry.condition

    def record(self, key: Hashable, fingerprint: str, condition: Cond) -> bool:
        """Remember a permanent failure; True when it is news (an input not refused before)."""
        with self._lock:
            entry = self._entries.get(key)
            same = entry is not None and entry.fingerprint == fingerprint
            attempts = entry.attempts + 1 if same and entry is not None else 1
            delay = min(MAX_RETRY, FIRST_RETRY * 2 ** (attempts - 1))
            self._entries[key] = Refusal(fingerprint, condition, attempts, self._clock() + delay)
            # Only new input is news: the same refusal worded a little differently (sizes, times) is not.
            return not same

    def clear(self, key: Hashable) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def attempts(self, key: Hashable) -> int:
        with self._lock:
            entry = self._entries.get(key)
            return entry.attempts if entry is not None else 0


# One book per operator process: reconcile functions are called with keys that are unique per object.
BOOK = RefusalBook()
