"""What the download Job tells the world: redacted logs and the termination message.

The hub token arrives in `HF_TOKEN` and is needed for every request, so any text that leaves the
process (a log line, a traceback, the termination message, the progress ConfigMap) goes through a
`Redactor` first. Redacting the final text rather than trusting every call site also covers
messages built by libraries (huggingface_hub, httpx) that we do not control.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

LOG = logging.getLogger("ome_operator.downloader")
TERMINATION_MESSAGE_LIMIT = 4096  # the kubelet truncates termination messages beyond 4 KiB
REDACTED = "[REDACTED]"


class Redactor:
    """Replaces every known secret (and its URL-encoded forms) in text."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        variants: set[str] = set()
        for secret in secrets:
            if not secret:
                continue
            variants.update({secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)})
        # Longest first, so a variant that contains another is replaced whole.
        self._variants = sorted(variants, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for variant in self._variants:
            text = text.replace(variant, REDACTED)
        return text

    def json(self, value: Any) -> str:
        return self(json.dumps(value, separators=(",", ":"), sort_keys=True))


class _RedactingFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor, fmt: str) -> None:
        super().__init__(fmt, datefmt="%Y-%m-%dT%H:%M:%S")
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        # The whole rendered record, including arguments and any traceback, is redacted.
        return self._redactor(super().format(record))


_HANDLER_MARK = "_ome_downloader_handler"


def configure_logging(redactor: Redactor, stream: IO[str] | None = None, verbose: bool = False) -> None:
    """Send every logger's records (ours and the libraries') through one redacting handler.

    Called once per run; a handler left by an earlier run in the same process is replaced, so
    in-process tests do not accumulate handlers bound to stale streams.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_RedactingFormatter(redactor, "%(asctime)s %(levelname)s %(message)s"))
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    LOG.setLevel(logging.DEBUG if verbose else logging.INFO)
    # httpx logs every request line at INFO; the progress line already says what is happening.
    for noisy in ("httpx", "httpx2", "httpcore", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fit_termination_message(summary: dict[str, Any], limit: int = TERMINATION_MESSAGE_LIMIT) -> dict[str, Any]:
    """Drop the least important fields until the JSON fits the kubelet's limit.

    The order is deliberate: per-dtype counts and the skipped-file list are nice to have; the
    commit, file/byte counts and the model's identity are what the operator acts on.
    """
    summary = dict(summary)
    droppable = ["skippedFiles", "tensorDtypes", "message", "metadata"]
    while len(json.dumps(summary, separators=(",", ":")).encode()) > limit and droppable:
        key = droppable.pop(0)
        if key == "metadata" and isinstance(summary.get("metadata"), dict):
            essential = ("modelType", "modelArchitecture", "modelParameterSize", "quantization", "maxTokens")
            trimmed = {k: v for k, v in summary["metadata"].items() if k in essential}
            if trimmed != summary["metadata"]:
                summary["metadata"] = trimmed
                droppable.insert(0, "metadata")
                continue
        summary.pop(key, None)
    if len(json.dumps(summary, separators=(",", ":")).encode()) > limit:
        # Still too large only if a string value is huge (an error text): cut it.
        for key in ("error", "file"):
            if isinstance(summary.get(key), str):
                summary[key] = summary[key][:512]
    return summary


def write_termination_message(path: Path | None, summary: dict[str, Any], redactor: Redactor) -> str:
    """Write the (redacted, size-bounded) summary; return the exact text written."""
    text = redactor.json(fit_termination_message(summary))
    if path is None:
        return text
    try:
        # Not atomic on purpose: /dev/termination-log is a bind-mounted file that cannot be
        # replaced by rename; truncate-and-write is what the kubelet expects.
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        LOG.warning("could not write the termination message to %s: %s", path, exc)
    return text


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(s)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def env_token() -> str | None:
    """The hub token, from `HF_TOKEN` only (never a file in the image, never an argument)."""
    token = os.environ.get("HF_TOKEN", "").strip()
    return token or None
