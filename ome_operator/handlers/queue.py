"""A coalescing work queue: many events for one object become one reconcile, never two at once.

kopf delivers events (parents, children, timers); this queue turns them into keyed work items so a
burst of pod updates costs one pass, the same object is never reconciled concurrently, and a
failed pass is retried with exponential backoff.

Fairness: keys run in order of their due time, and a pass that stops at its write budget
(reconcile.budget.MoreWork) goes back in line behind every key already due, instead of holding a
worker (and the shared writer pool) until its thousands of children are applied.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Hashable

from ome_operator.reconcile.budget import MoreWork

log = logging.getLogger(__name__)

MIN_BACKOFF = 1.0
MAX_BACKOFF = 60.0


class WorkQueue:
    def __init__(self, handle: Callable[[Hashable], None], workers: int = 4, debounce: float = 0.01) -> None:
        self._handle = handle
        self._workers = workers
        self._debounce = debounce
        self._lock = threading.Condition()
        self._heap: list[tuple[float, int, Hashable]] = []
        self._due: dict[Hashable, float] = {}
        self._running: set[Hashable] = set()
        self._again: set[Hashable] = set()
        self._failures: dict[Hashable, int] = {}
        self._counter = 0
        self._stopped = False
        self._threads: list[threading.Thread] = []

    def add(self, key: Hashable, delay: float | None = None) -> None:
        """Schedule `key`; an earlier schedule wins, a running key is re-run once it finishes."""
        when = time.monotonic() + (self._debounce if delay is None else delay)
        with self._lock:
            if key in self._running:
                self._again.add(key)
                return
            if key in self._due and self._due[key] <= when:
                return
            self._due[key] = when
            self._counter += 1
            heapq.heappush(self._heap, (when, self._counter, key))
            self._lock.notify()

    def start(self) -> None:
        for index in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"reconcile-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def pending(self) -> int:
        with self._lock:
            return len(self._due) + len(self._running)

    def _next(self) -> Hashable | None:
        with self._lock:
            while not self._stopped:
                now = time.monotonic()
                while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                    heapq.heappop(self._heap)  # superseded by an earlier schedule
                if self._heap and self._heap[0][0] <= now:
                    _, _, key = heapq.heappop(self._heap)
                    del self._due[key]
                    if key in self._running:
                        self._again.add(key)
                        continue
                    self._running.add(key)
                    return key
                timeout = (self._heap[0][0] - now) if self._heap else None
                self._lock.wait(timeout)
            return None

    def _work(self) -> None:
        while (key := self._next()) is not None:
            retry_in: float | None = None
            try:
                self._handle(key)
                self._failures.pop(key, None)
            except MoreWork as more:
                self._failures.pop(key, None)
                retry_in = more.delay
            except Exception:
                count = self._failures.get(key, 0) + 1
                self._failures[key] = count
                retry_in = min(MAX_BACKOFF, MIN_BACKOFF * 2 ** (count - 1))
                log.exception("reconcile of %s failed (attempt %d); retrying in %.0fs", key, count, retry_in)
            with self._lock:
                self._running.discard(key)
                again = key in self._again
                self._again.discard(key)
            if retry_in is not None:
                self.add(key, retry_in)
            elif again:
                self.add(key)
