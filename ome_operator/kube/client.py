"""The only code that talks to the API server: get, paginated list, server-side apply, delete, status.

A thin layer over the kubernetes client's ApiClient.call_api: every request is a plain path, so one
small table (resources.py) replaces discovery, and server-side apply is a PATCH with the
apply-patch content type and a single field manager. With a cache attached (cache.py), reads of
the kinds it holds are answered from memory and every write's response is folded into it.
"""

from __future__ import annotations

import builtins
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter

from .cache import Cache
from .reach import MAX_RETRY_AFTER, ApiUnavailable, Gate, retry_after_seconds
from .resources import KINDS, ResourceInfo

FIELD_MANAGER = "ome-operator"
PAGE_SIZE = 500
# Concurrent writes of one pass (children that do not depend on each other), across all workers.
WRITERS = 8
Obj = dict[str, Any]
API_REQUESTS = Counter("ome_api_requests_total", "Requests the reconcilers sent to the API server.", ["verb"])
# No request waits longer than this for a connection, or for a byte of its answer: a black-holed
# connection (accepted, never answered) fails the request instead of wedging its thread forever.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
# Answers that mean "not now": the request was not acted on, so it is sent again once the gate opens.
THROTTLED = (429, 503)

__all__ = ["FIELD_MANAGER", "ApiException", "ApiUnavailable", "Kube", "load_api_client"]


def configure_transport(configuration: client.Configuration) -> client.Configuration:
    """No hidden retries inside urllib3 (three silent re-sends of a timed-out read would hold a
    thread for minutes); the gate paces retries instead. One connect retry covers a pooled
    connection the server closed while idle. A 429 or 503 with `Retry-After` must reach the gate as
    itself: urllib3 would count it as a retry of a GET, find none left and raise "too many 429
    error responses", a transport failure without the server's Retry-After (watches then probed
    early)."""
    configuration.retries = urllib3.Retry(
        total=1, connect=1, read=0, status=0, other=0, redirect=0, respect_retry_after_header=False
    )
    return configuration


def load_api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """In-cluster credentials when running in a pod, else KUBECONFIG / the given file."""
    configuration = client.Configuration()
    try:
        if kubeconfig is None:
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configure_transport(configuration))
    except config.ConfigException:
        pass
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return client.ApiClient(configure_transport(configuration))


def clone_api_client(api: client.ApiClient, pool: int) -> client.ApiClient:
    """A second client with its own connection pool: each watch holds a connection for minutes."""
    configuration = api.configuration
    copy = client.Configuration()
    copy.__dict__.update({k: v for k, v in configuration.__dict__.items() if k != "logger"})
    copy.connection_pool_maxsize = pool
    return client.ApiClient(configure_transport(copy))


def info(kind: str) -> ResourceInfo:
    return KINDS[kind]


def describe_failure(exc: BaseException) -> str:
    """A short reason for a transport failure (urllib3 nests the cause in `reason`)."""
    cause = getattr(exc, "reason", None) or exc
    text = str(cause)
    return f"{type(cause).__name__}: {text[:160]}" if text else type(cause).__name__


class Kube:
    def __init__(
        self,
        api: client.ApiClient,
        field_manager: str = FIELD_MANAGER,
        cache: Cache | None = None,
        gate: Gate | None = None,
        max_wait: float = MAX_RETRY_AFTER,
    ) -> None:
        self.api = api
        self.field_manager = field_manager
        self.cache = cache
        # Shared with the cache: one view of the API server's health for every request.
        self.gate = gate or (cache.gate if cache is not None else Gate())
        self.max_wait = max_wait
        self._writers: ThreadPoolExecutor | None = None
        self._writers_lock = threading.Lock()

    def wait_synced(self, timeout: float | None = None) -> bool:
        return self.cache is None or self.cache.wait_synced(timeout)

    def _request(
        self,
        method: str,
        path: str,
        query: list[tuple[str, Any]] | None = None,
        body: Any = None,
        content_type: str | None = None,
        accept: str = "application/json",
    ) -> bytes:
        """One request through the gate. A throttling answer (429, 503) is sent again once the gate
        opens, for up to `max_wait` seconds; a transport failure (refused, reset, timed out) raises
        ApiUnavailable at once: a write may or may not have happened, so the caller's pass is re-run
        from fresh state instead of this request being repeated blindly."""
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        method, url, headers, body, post = self.api.param_serialize(
            method, path, query_params=query or [], header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        waited_until = None
        while True:
            self.gate.enter(self.max_wait if waited_until is None else max(0.0, waited_until - self.gate.clock()))
            if waited_until is None:
                waited_until = self.gate.clock() + self.max_wait
            API_REQUESTS.labels(verb=method).inc()
            try:
                response = self.api.call_api(
                    method,
                    url,
                    header_params=headers,
                    body=body,
                    post_params=post,
                    _request_timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                )
                data: bytes = response.read() or b""
            except urllib3.exceptions.HTTPError as exc:
                reason = describe_failure(exc)
                raise ApiUnavailable(f"API server unavailable ({reason})", self.gate.failed(reason)) from exc
            except BaseException:
                self.gate.release()
                raise
            if response.status in THROTTLED:
                wait = retry_after_seconds((response.headers or {}).get("Retry-After"))
                self.gate.failed(f"{response.status} {response.reason}", wait)
                continue
            self.gate.answered()
            if not 200 <= response.status <= 299:
                ApiException.from_response(http_resp=response, body=data.decode(errors="replace"), data=None)
            return data

    def _call(
        self,
        method: str,
        path: str,
        query: list[tuple[str, Any]] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Any:
        data = self._request(method, path, query, body, content_type)
        return json.loads(data) if data else None

    def get(self, kind: str, name: str, namespace: str | None = None, fresh: bool = False) -> Obj | None:
        """From the cache when it holds the kind; `fresh` asks the API server (after a conflict)."""
        informer = self.cache.informer(kind, namespace) if self.cache is not None else None
        if informer is not None and not fresh:
            return self.cache.get(informer, name, namespace) if self.cache is not None else None
        try:
            result: Obj = self._call("GET", info(kind).path(namespace, name))
            result.setdefault("kind", kind)
            result.setdefault("apiVersion", info(kind).api_version)
            self._observe(result)
            return result
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> list[Obj]:
        if self.cache is not None:
            informer = self.cache.informer(kind, namespace)
            if informer is not None:
                found = self.cache.list(informer, namespace, label_selector)
                if found is not None:
                    return found
            elif namespace is None:
                # Restricted to some namespaces, "all" means all of those: a cluster-wide list
                # would need rights the operator does not hold there.
                parts = [self.cache.list(i, None, label_selector) for i in self.cache.namespace_informers(kind)]
                if parts and all(part is not None for part in parts):
                    return [obj for part in parts if part is not None for obj in part]
        return list(self.iter_list(kind, namespace, label_selector))

    def _observe(self, obj: Obj | None) -> None:
        if self.cache is not None:
            self.cache.observe(obj)

    def iter_list(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> Iterator[Obj]:
        """All items, fetched in pages so a large cluster never arrives in one response."""
        token: str | None = None
        while True:
            query: list[tuple[str, Any]] = [("limit", PAGE_SIZE)]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if token:
                query.append(("continue", token))
            page = self._call("GET", info(kind).path(namespace), query)
            for item in page.get("items") or []:
                item.setdefault("kind", kind)
                item.setdefault("apiVersion", info(kind).api_version)
                yield item
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    def apply(self, obj: Obj, dry_run: bool = False) -> Obj:
        """Server-side apply with our field manager; `force` takes over fields we render."""
        meta = obj["metadata"]
        query: list[tuple[str, Any]] = [("fieldManager", self.field_manager), ("force", "true")]
        if dry_run:
            query.append(("dryRun", "All"))
        path = info(obj["kind"]).path(meta.get("namespace"), meta["name"])
        result: Obj = self._call("PATCH", path, query, obj, "application/apply-patch+yaml")
        if not dry_run:
            self._observe(result)
        return result

    def apply_many(self, objs: builtins.list[Obj]) -> builtins.list[Obj]:
        """Apply objects that do not depend on each other concurrently; the first error is raised
        once all have finished, so one refusal does not leave the others half-sent."""
        if len(objs) <= 1:
            return [self.apply(o) for o in objs]
        with self._writers_lock:
            if self._writers is None:
                self._writers = ThreadPoolExecutor(WRITERS, thread_name_prefix="apply")
            pool = self._writers
        futures = [pool.submit(self.apply, o) for o in objs]
        errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error
        return [f.result() for f in futures]

    def delete(
        self,
        kind: str,
        name: str,
        namespace: str | None = None,
        propagation: str = "Background",
        uid: str | None = None,
        grace_seconds: int | None = None,
    ) -> bool:
        """Delete; with `uid`, only that incarnation (a recreated object of the same name is left alone:
        a 409 answers like a 404, it is already gone)."""
        body: Obj = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        if uid is not None:
            body["preconditions"] = {"uid": uid}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        try:
            self._call("DELETE", info(kind).path(namespace, name), body=body, content_type="application/json")
        except ApiException as exc:
            if exc.status != 404 and not (uid is not None and exc.status == 409):
                raise
            if exc.status == 409:
                return False  # another incarnation lives under the name: the cache keeps it
            found = False
        else:
            found = True
        if self.cache is not None:
            self.cache.forget(kind, name, namespace)
        return found

    def merge_patch(
        self, kind: str, name: str, namespace: str | None, patch: Obj, subresource: str | None = None
    ) -> Obj:
        path = info(kind).path(namespace, name, subresource)
        result: Obj = self._call("PATCH", path, body=patch, content_type="application/merge-patch+json")
        self._observe(result)
        return result

    def replace_status(self, obj: Obj) -> Obj | None:
        """PUT the object's whole status; None when its resourceVersion is stale (409 Conflict)
        or the object is gone (404): either way the caller recomputes from a fresh read.

        A replace, unlike a merge patch, removes keys that are no longer in the status, and the
        resourceVersion makes it fail instead of overwriting a status computed from newer state.
        """
        meta = obj["metadata"]
        path = info(obj["kind"]).path(meta.get("namespace"), meta["name"], "status")
        try:
            result: Obj = self._call("PUT", path, body=obj, content_type="application/json")
        except ApiException as exc:
            if exc.status in (404, 409):
                return None
            raise
        self._observe(result)
        return result

    def create(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        result: Obj = self._call(
            "POST", info(obj["kind"]).path(meta.get("namespace")), body=obj, content_type="application/json"
        )
        return result

    def pod_log_tail(self, name: str, namespace: str, lines: int = 20, previous: bool = True) -> str | None:
        """The tail of a pod's (previous) log, or None where the node serves no logs."""
        try:
            return self.read_pod_log(name, namespace, tail_lines=lines, previous=previous)
        except Exception:  # logs are best effort: the kubelet may be gone, or fake
            return None

    def read_pod_log(
        self, name: str, namespace: str, container: str | None = None, tail_lines: int = 20, previous: bool = False
    ) -> str:
        """A pod's log tail; unlike pod_log_tail it raises ApiException, whose message says why there is none."""
        query: list[tuple[str, Any]] = [
            ("tailLines", tail_lines),
            ("previous", "true" if previous else "false"),
            ("limitBytes", 64 * 1024),  # a tail of a few lines; one runaway line must not be megabytes
        ]
        if container:
            query.append(("container", container))
        # The log endpoint refuses Accept: text/plain alone (406); kubectl sends this pair.
        data = self._request("GET", info("Pod").path(namespace, name, "log"), query, accept="application/json, */*")
        return data.decode(errors="replace")
