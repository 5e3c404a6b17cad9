"""Writing status, and turning the API server's and pydantic's refusals into one-line messages."""

from __future__ import annotations

import json
from typing import Any

import pydantic

from ome_operator.kube.client import ApiException, Kube
from ome_operator.kube.errors import classify

Obj = dict[str, Any]


class FieldError(ValueError):
    """Input the schema let through (or that was stored before it existed) but that cannot be used."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def describe_exception(exc: BaseException) -> tuple[str, str]:
    """(field path or "", one-line message) for any exception a pass raised."""
    if isinstance(exc, FieldError):
        return exc.path, exc.message
    if isinstance(exc, pydantic.ValidationError):
        return describe_validation_error(exc)
    if isinstance(exc, ApiException):
        return "", f"the API server answered {exc.status}: {classify(exc).message}"
    return "", f"{type(exc).__name__}: {exc}"


def write_status(kube: Kube, raw: Obj, status: Obj) -> bool:
    """Replace the status as a whole; nothing is sent when it did not change.

    Returns False when the object changed since `raw` was read (409): the caller recomputes from a
    fresh read instead of writing a status that describes an older spec.
    """
    if raw.get("status") == status:
        return True
    body = {**raw, "status": status}
    return kube.replace_status(body) is not None


def describe_api_error(exc: ApiException) -> str:
    """The API server's own message (it names the field), without the HTTP noise."""
    try:
        body = json.loads(exc.body or "{}")
        return str(body.get("message") or exc.reason)
    except (ValueError, TypeError):
        return str(exc.reason)


def describe_validation_error(exc: pydantic.ValidationError) -> tuple[str, str]:
    """(field path, message) of the first problem pydantic found, e.g. ("spec.engine.minReplicas", ...)."""
    first = exc.errors(include_url=False)[0]
    path = ""
    for part in first["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    more = len(exc.errors()) - 1
    message = str(first["msg"]) + (f" (and {more} more problems)" if more > 0 else "")
    return path or "spec", message
