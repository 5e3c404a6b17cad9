"""One scope's informer: a store kept current by a list, then a watch stream.

Each scope (a kind, optionally one namespace and a server-side label selector) has one thread that
lists in pages, then watches from the list's resourceVersion with bookmarks. A watch that ends
(server timeout, dropped connection, restarted API server) resumes from the last resourceVersion
seen, so nothing is listed again; only `410 Gone` (that version was compacted away) relists, and
the relist is diffed against the store so objects deleted meanwhile are reported as DELETED, not
kept forever. A stream the cache finds silent (see cache.py) is ended and relisted the same way.

Every stream has a server-side `timeoutSeconds` and a client read timeout a little longer, so a
healthy stream always shows progress (an event, a bookmark, or a new stream's answer) within
`stream_seconds + READ_SLACK`; a black-holed connection is given up after that instead of being
waited on forever, and `stalled()` says how long a stream has made no progress.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter

from .reach import Gate, retry_after_seconds
from .resources import KINDS

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Listener = Callable[[str, Obj], None]  # (event type, object)
PAGE_SIZE = 500
# The API server ends each watch after this long; we resume from our resourceVersion (no relist).
WATCH_SECONDS = 60
# A stream that sent nothing for its timeout plus this long is dead, not idle.
READ_SLACK = 15.0
CONNECT_TIMEOUT = 5.0
LIST_READ_TIMEOUT = 30.0
CACHE_REQUESTS = Counter("ome_cache_requests_total", "Lists and watches the cache sent, by verb.", ["verb"])
CACHE_EVENTS = Counter("ome_cache_events_total", "Watch events the cache applied, by kind and type.", ["kind", "type"])
RELISTS = Counter("ome_cache_relists_total", "Full relists after 410 Gone (or the first list), by kind.", ["kind"])


class Gone(Exception):
    """The resourceVersion we hold is too old for the API server: relist."""


class Throttled(Exception):
    """429, or 503: the API server asks us to come back later."""

    def __init__(self, reason: str, retry_after: float | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def _describe(exc: BaseException) -> str:
    cause = getattr(exc, "reason", None) or exc
    return f"{type(cause).__name__}: {str(cause)[:160]}"


def resource_version(obj: Obj | None) -> int:
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:  # opaque by contract; etcd's are integers, anything else is never "newer"
        return 0


def slim(obj: Obj) -> Obj:
    """Drop managedFields: the largest part of most objects, and nothing we read."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return obj


@dataclass(frozen=True)
class Scope:
    kind: str
    namespace: str | None = None  # None: all namespaces (or a cluster-scoped kind)
    selector: str | None = None  # server-side label selector: only these objects are streamed


class Informer:
    """One scope's store and the thread that keeps it current."""

    def __init__(
        self,
        api: client.ApiClient,
        scope: Scope,
        emit: Listener,
        gate: Gate | None = None,
        stream_seconds: float = WATCH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        answer_timeout: float = 30.0,
    ) -> None:
        self.api = api
        self.scope = scope
        self.emit = emit
        self.gate = gate or Gate()
        self.stream_seconds = stream_seconds
        self.clock = clock
        # When the stream last showed it is alive; `stalled` compares against it.
        self.progress_at = clock()
        self.items: dict[tuple[str | None, str], Obj] = {}
        self.lock = threading.Lock()
        self.synced = threading.Event()
        self.stopped = threading.Event()
        self.resource_version: str | None = None
        self._response: Any = None
        self._answered = False
        # Seconds a watch request may wait for its answer (a healthy server answers at once).
        self.answer_timeout = answer_timeout
        # Set when the stream may have missed events without knowing: list before watching again.
        self.relist_wanted = False
        self.thread = threading.Thread(target=self._run, name=f"watch-{scope.kind}", daemon=True)

    # --- the store ----------------------------------------------------------------------------
    def get(self, namespace: str | None, name: str) -> Obj | None:
        with self.lock:
            return self.items.get((namespace, name))

    def snapshot(self) -> list[Obj]:
        with self.lock:
            return list(self.items.values())

    def put(self, obj: Obj) -> bool:
        """Store obj unless the store already holds a newer version; True when it was stored."""
        meta = obj["metadata"]
        key = (meta.get("namespace"), meta["name"])
        with self.lock:
            current = self.items.get(key)
            if current is not None and resource_version(current) > resource_version(obj):
                return False
            self.items[key] = slim(obj)
            return True

    def remove(self, namespace: str | None, name: str) -> Obj | None:
        with self.lock:
            return self.items.pop((namespace, name), None)

    # --- the stream ---------------------------------------------------------------------------
    def _path(self) -> str:
        return KINDS[self.scope.kind].path(self.scope.namespace)

    def _get(self, query: list[tuple[str, Any]], timeout: tuple[float, float]) -> Any:
        method, url, headers, _, _ = self.api.param_serialize(
            "GET",
            self._path(),
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(method, url, header_params=headers, _request_timeout=timeout)
        if response.status in (429, 503):
            response.read()
            response.response.release_conn()
            raise Throttled(
                f"{response.status} {response.reason}", retry_after_seconds(response.headers.get("Retry-After"))
            )
        self.gate.answered()
        self._answered = True
        self.progress_at = self.clock()
        if not 200 <= response.status <= 299:
            data = response.read() or b""
            ApiException.from_response(http_resp=response, body=data.decode(errors="replace"), data=None)
        return response

    def relist(self) -> None:
        """List everything in pages; report what appeared, changed or vanished since the last list."""
        RELISTS.labels(kind=self.scope.kind).inc()
        fresh: dict[tuple[str | None, str], Obj] = {}
        token: str | None = None
        version = ""
        while True:
            query: list[tuple[str, Any]] = [("limit", PAGE_SIZE)]
            if self.scope.selector:
                query.append(("labelSelector", self.scope.selector))
            if token:
                query.append(("continue", token))
            CACHE_REQUESTS.labels(verb="list").inc()
            page = json.loads(self._get(query, (CONNECT_TIMEOUT, LIST_READ_TIMEOUT)).read() or b"{}")
            info = KINDS[self.scope.kind]
            for item in page.get("items") or []:
                item.setdefault("kind", self.scope.kind)
                item.setdefault("apiVersion", info.api_version)
                fresh[(item["metadata"].get("namespace"), item["metadata"]["name"])] = slim(item)
            token = (page.get("metadata") or {}).get("continue")
            version = (page.get("metadata") or {}).get("resourceVersion") or version
            if not token:
                break
        with self.lock:
            old = self.items
            for key, obj in old.items():
                # A write's answer folded in while the list was read is newer than its listed copy.
                if key in fresh and resource_version(obj) > resource_version(fresh[key]):
                    fresh[key] = obj
            self.items = fresh
        for key, obj in fresh.items():
            before = old.get(key)
            if before is None:
                self._emit("ADDED", obj)
            elif resource_version(before) != resource_version(obj):
                self._emit("MODIFIED", obj)
        for key, obj in old.items():
            if key not in fresh:
                self._emit("DELETED", obj)
        self.resource_version = version

    def watch(self) -> None:
        """One watch request, from self.resource_version until the server ends it."""
        query: list[tuple[str, Any]] = [
            ("watch", "true"),
            ("resourceVersion", self.resource_version),
            ("allowWatchBookmarks", "true"),
            # Spread renewals so the streams do not all reconnect at the same moment.
            ("timeoutSeconds", int(self.stream_seconds * random.uniform(1.0, 1.2))),
        ]
        if self.scope.selector:
            query.append(("labelSelector", self.scope.selector))
        CACHE_REQUESTS.labels(verb="watch").inc()
        # The server answers a watch at once; only then may the stream stay quiet, for a little
        # longer than the server's timeout (an idle healthy stream is ended by the server, a
        # silent dead one by us).
        response = self._get(query, (CONNECT_TIMEOUT, self.answer_timeout))
        _set_read_timeout(response.response, self.stream_seconds * 1.2 + READ_SLACK)
        self._response = response.response
        try:
            for line in _lines(response.response):
                self.progress_at = self.clock()
                self._apply(json.loads(line))
        finally:
            self._response = None
            response.response.release_conn()

    def _apply(self, event: Obj) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone(obj.get("message", "Gone"))
            raise RuntimeError(f"watch error: {obj}")
        self.resource_version = (obj.get("metadata") or {}).get("resourceVersion") or self.resource_version
        if kind == "BOOKMARK":
            return
        obj.setdefault("kind", self.scope.kind)
        obj.setdefault("apiVersion", KINDS[self.scope.kind].api_version)
        CACHE_EVENTS.labels(kind=self.scope.kind, type=str(kind)).inc()
        key = (obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if kind == "DELETED":
            self.remove(*key)
        else:
            with self.lock:
                echo = resource_version(self.items.get(key)) == resource_version(obj) > 0
                self.items[key] = slim(obj)
            if echo:
                return  # our own write, already folded in from its response: nothing new to react to
        self._emit(str(kind), obj)

    def _emit(self, kind: str, obj: Obj) -> None:
        try:
            self.emit(kind, obj)
        except Exception:  # a listener's bug must not stop the stream
            log.exception("cache listener failed on %s %s", kind, self.scope.kind)

    def stalled(self, deadline: float) -> float | None:
        """Seconds without progress, when more than `deadline`: the stream delivered nothing and
        could not be re-established (a healthy idle one shows progress at least every
        `stream_seconds * 1.2 + READ_SLACK`)."""
        if self.stopped.is_set():
            return None
        quiet = self.clock() - self.progress_at
        return quiet if quiet > deadline else None

    def _run(self) -> None:
        refused: str | None = None  # the last answer that was not a transport failure (403, 404...)
        backoff = 0.2
        while not self.stopped.is_set():
            if not self.gate.enter(stop=self.stopped):
                return
            self._answered = False
            watching = False
            try:
                if self.resource_version is None or self.relist_wanted:
                    self.relist_wanted = False
                    self.relist()
                    self.synced.set()
                    log.debug("cache %s: listed %d", self.scope.kind, len(self.items))
                    if not self.gate.enter(stop=self.stopped):
                        return
                    self._answered = False
                watching = True
                self.watch()
                backoff, refused = 0.2, None
            except Gone:
                log.info("cache %s: resourceVersion %s is gone; relisting", self.scope.kind, self.resource_version)
                self.resource_version = None
            except Throttled as exc:
                self.gate.failed(exc.reason, exc.retry_after)
            except ApiException as exc:
                if exc.status == 410:
                    self.resource_version = None
                    continue
                # The server answered, but no: say so once per distinct answer, not every retry.
                message = f"{exc.status} {exc.reason}"
                if message != refused:
                    log.warning("cache %s: %s; retrying with backoff", self.scope.kind, message)
                    refused = message
                self.stopped.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            except Exception as exc:  # refused, reset, timed out, API server restarting
                if self.stopped.is_set():
                    return
                if not self._answered and watching and self.answer_timeout < LIST_READ_TIMEOUT and not self.gate.down():
                    # A watch left unanswered while other requests are answered: it may be only
                    # the watches that are broken. List instead (that list's own answer, or its
                    # failure, tells the gate about the server) and try the watch again after it.
                    # In an outage the same silence is the probe's failure, handled below: a
                    # probe that ended without a verdict would hold every other caller forever.
                    log.debug("cache %s: watch not answered (%s); relisting", self.scope.kind, _describe(exc))
                    self.gate.release()
                    self.relist_wanted = True
                    self.stopped.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if not self._answered:
                    # No answer at all: the API server is unreachable; the gate paces the retries.
                    self.gate.failed(_describe(exc))
                    continue
                # A stream that was answered, then cut (a proxy, a restarting server): resume
                # from our resourceVersion at once, backing off only if it keeps happening.
                log.debug("cache %s: watch ended (%s); resuming in %.1f s", self.scope.kind, exc, backoff)
                self.stopped.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def stop(self) -> None:
        self.stopped.set()
        self._end_stream()

    def revive(self) -> bool:
        """The open stream has been silent too long: end it and relist; False if none is open."""
        if self._response is None:
            return False
        self.relist_wanted = True
        self._end_stream()
        return True

    def _end_stream(self) -> None:
        response = self._response
        if response is not None:
            try:
                response.shutdown()  # unblocks the thread's read
            except Exception:
                log.debug("cache %s: shutdown of the stream failed", self.scope.kind)


def _set_read_timeout(response: Any, seconds: float) -> None:
    """Change the read timeout of an answered response's socket (urllib3 sets one for the whole request)."""
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(seconds)


def _lines(response: Any) -> Iterator[bytes]:
    """Newline-delimited JSON from a streamed response, as the chunks arrive."""
    buffer = b""
    for chunk in response.stream(64 * 1024, decode_content=True):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield line
    if buffer.strip():
        yield buffer
