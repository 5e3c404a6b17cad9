"""Which API answers will change on retry and which will not, and the field an answer is about.

A refusal of the object we sent does not change until what we send changes: a 4xx (except the few
that are about timing: 404 of a namespace being created, 409 conflicts, 429 throttling), and a 500
whose message is server-side apply's own validation failure (it answers 500, not 422, for
`field not declared in schema`, `duplicate entries for key`, unparsable quantities). Everything
else (other 5xx, connection errors, timeouts) is transient and goes back to the queue's backoff.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import urllib3
from kubernetes.client.exceptions import ApiException

# 4xx answers that are about timing, not about the object: retrying them later can succeed.
TRANSIENT_4XX = frozenset({408, 409, 425, 429})
# Phrases of server-side apply's validation failures, which it reports as 500 Internal Server Error.
_APPLY_VALIDATION = (
    "field not declared in schema",
    "duplicate entries for key",
    "failed to create typed patch object",
    "failed to create typed live object",
    "quantities must match the regular expression",
    "unable to parse quantity",
    "cannot convert",
    "expected numeric",
    "expected string",
    "expected map",
    "expected list",
    # The object is too big for etcd: no write of it (not even its status) can succeed.
    "larger than max",
    "request is too large",
)
# `.spec.template.spec.containers[name="x"].env: duplicate entries for key [name="A"]` and
# `spec.template.spec.containers[0].image: Required value`: the first dotted path of the message.
_FIELD = re.compile(r"(?:^|[\s:(\"'])(\.?(?:metadata|spec|data)(?:\.[A-Za-z0-9_-]+|\[[^\]]*\])+)")


@dataclass(frozen=True)
class ApiRefusal:
    """An answer classified: permanent or not, its one-line message and the field it names."""

    status: int | None
    permanent: bool
    message: str
    field: str = ""


def message_of(exc: ApiException) -> str:
    """The API server's own message (it names the field), without the HTTP noise."""
    try:
        body = json.loads(exc.body or "{}")
    except (ValueError, TypeError):
        return str(exc.reason or exc)
    if not isinstance(body, dict):
        return str(exc.reason or exc)
    return str(body.get("message") or exc.reason or exc)


def field_of(message: str) -> str:
    """The first object field a refusal names, e.g. spec.template.spec.containers[0].env."""
    match = _FIELD.search(message)
    return match.group(1).lstrip(".") if match else ""


def is_apply_validation(message: str) -> bool:
    lowered = message.lower()
    return any(phrase in lowered for phrase in _APPLY_VALIDATION)


def classify(exc: BaseException) -> ApiRefusal:
    """Permanent (a 4xx about the object, or a 500 that is a validation failure) or transient."""
    if not isinstance(exc, ApiException):
        return ApiRefusal(None, False, f"{type(exc).__name__}: {exc}")
    status = exc.status
    message = message_of(exc)
    field = field_of(message)
    if status is None or status == 0:
        return ApiRefusal(status, False, message, field)
    if 400 <= status < 500:
        return ApiRefusal(status, status not in TRANSIENT_4XX, message, field)
    if status == 500 and is_apply_validation(message):
        return ApiRefusal(status, True, message, field)
    return ApiRefusal(status, False, message, field)


def is_permanent(exc: BaseException) -> bool:
    return classify(exc).permanent


def is_transient(exc: BaseException) -> bool:
    """An answer (or no answer) that may differ on retry: the queue's backoff handles it.

    Anything else raised by a pass (a refusal, a ValueError or AttributeError on odd input) will
    fail the same way next time and becomes a condition on the object instead.
    """
    if isinstance(exc, ApiException):
        return not classify(exc).permanent
    return isinstance(exc, OSError | TimeoutError | urllib3.exceptions.HTTPError)
