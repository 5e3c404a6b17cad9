"""Bounded work per pass: an object with thousands of children is applied a slice at a time.

A pass sends at most PASS_BUDGET writes, in chunks of CHUNK, and checks between chunks that the
object is still the one it started from (same uid and generation, not being deleted). What is left
is done by the next pass, which the queue schedules behind every other object that is due, so one
huge InferenceService never starves the others, and its status shows progress in between.
"""

from __future__ import annotations

# Writes one pass may send before it writes status and yields its worker.
PASS_BUDGET = 120
# Writes sent concurrently between two checks of the object (deleted? changed?).
CHUNK = 24
# How soon the rest of a sliced pass runs (the queue orders it by this due time).
CONTINUE_AFTER = 0.05


class MoreWork(BaseException):
    """Raised by a pass that stopped at its budget (or must look again later): the queue re-runs the
    key after `delay`.

    A BaseException on purpose: it is not a failure, so the `except Exception` of error metrics and
    backoff does not see it; only the work queue catches it.
    """

    def __init__(self, delay: float = CONTINUE_AFTER) -> None:
        super().__init__(f"more work; continuing in {delay:.2f}s")
        self.delay = delay
