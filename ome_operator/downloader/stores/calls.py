"""Small API calls to a store (listing, sizing up a part) with the same retry rules as transfers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import httpx

from ome_operator.downloader.retry import RETRYABLE_STATUS, Attempts, TransientError, parse_retry_after
from ome_operator.downloader.stores.common import StoreError

LOG = logging.getLogger("ome_operator.downloader")


class Calls:
    """Runs a request built fresh for every attempt (signatures carry the time), retrying 429/5xx
    and transport errors; any other non-2xx status becomes a permanent StoreError."""

    def __init__(
        self,
        client: httpx.Client,
        describe: Callable[[int, str], str],
        max_retries: int,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        self._client = client
        self._describe = describe
        self._max_retries = max_retries
        self._wait = wait or threading.Event().wait

    def get(self, what: str, make: Callable[[], httpx.Request]) -> bytes:
        return self._run(what, make).content

    def head(self, what: str, make: Callable[[], httpx.Request]) -> httpx.Headers:
        return self._run(what, make).headers

    def _run(self, what: str, make: Callable[[], httpx.Request]) -> httpx.Response:
        attempts = Attempts(self._max_retries)
        while True:
            try:
                response = self._client.send(make())
                status = response.status_code
                if 200 <= status < 300:
                    return response
                if status not in RETRYABLE_STATUS:
                    raise StoreError(f"{what}: {self._describe(status, what)}", permanent=True)
                error = TransientError(f"HTTP {status}", parse_retry_after(response.headers.get("retry-after")))
            except httpx.TransportError as exc:
                error = TransientError(f"{type(exc).__name__}: {exc}"[:300])
            delay = attempts.next_delay(error)
            if delay is None:
                raise StoreError(f"{what}: gave up after {self._max_retries} retries: {error}", permanent=False)
            LOG.warning("%s: %s; retry %d/%d in %.1fs", what, error, attempts.used, self._max_retries, delay)
            self._wait(delay)
