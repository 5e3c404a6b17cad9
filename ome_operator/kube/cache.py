"""A watch-backed cache: each kind is listed once, then kept current by its informer's stream.

Reconcilers read from here, so a pass that changes nothing sends no request. Writes the client
makes are folded in from their answers (`observe`), so the next pass never acts on an older copy.

A watch can also go silent without ending: the connection stays open (or a new watch is never
answered) while every other request is served, e.g. by a broken proxy. Nothing in the stream says
so, so with a `silence_limit` the cache relists a scope whose stream showed no progress for that
long, and its informer relists again after every watch request left unanswered: changes are then
seen within the limit from the lists, while the watch keeps being retried.
"""

from __future__ import annotations

import logging
import threading
import time

from kubernetes import client
from prometheus_client import Counter

from .informer import LIST_READ_TIMEOUT, WATCH_SECONDS, Informer, Listener, Obj, Scope
from .reach import Gate
from .resources import KINDS
from .selectors import parse_selector, selector_matches

log = logging.getLogger(__name__)
SILENT = Counter("ome_cache_silent_watches_total", "Open watch streams ended for silence, then relisted.")


class Cache:
    """Every scope's informer; reads answer from memory, writes by the client are folded in."""

    def __init__(
        self,
        api: client.ApiClient,
        scopes: list[Scope],
        listener: Listener | None = None,
        gate: Gate | None = None,
        stream_seconds: float = WATCH_SECONDS,
        silence_limit: float | None = None,
    ) -> None:
        """`silence_limit`: relist a scope whose stream showed no progress for this long; the
        streams are then renewed often enough that a healthy idle one never looks silent."""
        self.listener = listener
        self.gate = gate or Gate()
        self.silence_limit = silence_limit
        answer = LIST_READ_TIMEOUT
        if silence_limit is not None:
            stream_seconds = min(stream_seconds, max(silence_limit / 2, 1.0))
            answer = min(LIST_READ_TIMEOUT, max(silence_limit / 2, 2.0))
        self.stopped = threading.Event()
        self.informers = [
            Informer(api, scope, self._emit, self.gate, stream_seconds, answer_timeout=answer) for scope in scopes
        ]

    def _emit(self, kind: str, obj: Obj) -> None:
        if self.listener is not None:
            self.listener(kind, obj)

    def start(self) -> None:
        for informer in self.informers:
            informer.thread.start()
        if self.silence_limit is not None:
            threading.Thread(
                target=self._watch_for_silence, args=(self.silence_limit,), name="watch-silence", daemon=True
            ).start()

    def stop(self) -> None:
        self.stopped.set()
        for informer in self.informers:
            informer.stop()

    def _watch_for_silence(self, limit: float) -> None:
        while not self.stopped.wait(limit / 4):
            self.revive_silent(limit)

    def revive_silent(self, limit: float) -> list[str]:
        """Relist every scope whose open stream has been silent for longer than `limit` seconds."""
        revived = [i.scope.kind for i in self.informers if i.stalled(limit) is not None and i.revive()]
        if revived:
            SILENT.inc(len(revived))
            log.info("watches silent for over %.0f s (%s): relisting them", limit, ", ".join(revived))
        return revived

    def wait_synced(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for informer in self.informers:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not informer.synced.wait(left):
                return False
        return True

    def stalled(self, deadline: float) -> list[tuple[Scope, float]]:
        """The streams without progress for longer than `deadline` seconds, and for how long."""
        found = []
        for informer in self.informers:
            quiet = informer.stalled(deadline)
            if quiet is not None:
                found.append((informer.scope, quiet))
        return found

    def informer(self, kind: str, namespace: str | None) -> Informer | None:
        """The informer holding every object of kind in namespace, if one does."""
        for informer in self.informers:
            scope = informer.scope
            if scope.kind == kind and (scope.namespace is None or scope.namespace == namespace):
                return informer
        return None

    def namespace_informers(self, kind: str) -> list[Informer]:
        """The per-namespace informers of kind when no informer covers every namespace (a
        namespace-restricted operator): together they hold everything it may list."""
        found = [i for i in self.informers if i.scope.kind == kind]
        return found if found and all(i.scope.namespace is not None for i in found) else []

    def get(self, informer: Informer, name: str, namespace: str | None) -> Obj | None:
        return informer.get(namespace if KINDS[informer.scope.kind].namespaced else None, name)

    def list(self, informer: Informer, namespace: str | None, selector: str | None) -> list[Obj] | None:
        """Objects in namespace (None: all) matching selector; None if the selector is beyond us."""
        terms = parse_selector(selector)
        if terms is None:
            return None
        return [
            obj
            for obj in informer.snapshot()
            if (namespace is None or obj["metadata"].get("namespace") == namespace)
            and selector_matches(terms, obj["metadata"].get("labels") or {})
        ]

    def observe(self, obj: Obj | None) -> None:
        """Fold in an object a write returned, so the next pass does not act on the older copy."""
        if not obj or "metadata" not in obj or obj.get("kind") not in KINDS:
            return
        informer = self.informer(obj["kind"], obj["metadata"].get("namespace"))
        if informer is not None and informer.scope.selector is None:
            informer.put(obj)
        elif informer is not None:
            # Only objects the server-side selector would stream belong in a selected store.
            terms = parse_selector(informer.scope.selector)
            if terms is not None and selector_matches(terms, obj["metadata"].get("labels") or {}):
                informer.put(obj)

    def forget(self, kind: str, name: str, namespace: str | None) -> None:
        informer = self.informer(kind, namespace)
        if informer is not None:
            informer.remove(namespace if KINDS[kind].namespaced else None, name)
