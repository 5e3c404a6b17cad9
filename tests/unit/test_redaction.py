"""Operator log lines never carry credentials, in text or JSON format."""

from __future__ import annotations

import json
import logging
import sys

from ome_operator.handlers.run import RedactingFormatter, redact

TOKEN = "hf_abcdefghijklmnopqrstuvwxyz012345"


def test_redact_masks_tokens_and_bearer_headers() -> None:
    assert TOKEN not in redact(f"download failed with token {TOKEN}")
    assert "s3cr3t" not in redact("Authorization: Bearer s3cr3t.value")
    assert "hunter2" not in redact('{"password": "hunter2"}')
    assert redact("applied 14 children") == "applied 14 children"


def test_formatters_redact_messages_and_tracebacks() -> None:
    try:
        raise RuntimeError(f"hub refused token={TOKEN}")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed: %s", (TOKEN,), None)
        record.exc_info = sys.exc_info()
    for json_lines in (False, True):
        line = RedactingFormatter(json_lines=json_lines).format(record)
        assert TOKEN not in line
        if json_lines:
            assert json.loads(line)["level"] == "ERROR"
