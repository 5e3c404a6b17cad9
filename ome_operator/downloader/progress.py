"""Progress: counters shared by the workers, a bar in the log, and a machine-readable snapshot.

The snapshot has the shape of OME's per-node progress (`phase, totalBytes, completedBytes,
totalFiles, completedFiles, speedBytesPerSec, lastUpdated`) plus what an operator needs to say
more than "downloading": ETA, bytes actually transferred this run (a resumed or re-verified copy
completes without transferring), and the resolved commit.

The log gets one line per interval, not a carriage-return bar: container logs are line-based.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from ome_operator.downloader.report import human_bytes, human_seconds

LOG = logging.getLogger("ome_operator.downloader")

SPEED_WINDOW_S = 30.0  # long enough to smooth bursts, short enough to show a collapse
BAR_WIDTH = 24


class Publisher(Protocol):
    def publish(self, snapshot: dict[str, Any], final: bool) -> None: ...


class Progress:
    """Thread-safe counters. `completed` counts bytes known good on disk (downloaded, resumed or
    already verified); `transferred` counts only bytes received from the network this run;
    `hashed` counts bytes read back from disk to verify (a resumed prefix or an unrecorded file)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.started = clock()
        self.phase = "Resolving"
        self.commit: str | None = None
        self.total_bytes = 0
        self.total_files = 0
        self.completed_bytes = 0
        self.completed_files = 0
        self.transferred = 0
        self.hashed = 0
        self.message: str | None = None
        self._samples: deque[tuple[float, int]] = deque([(self.started, 0)])

    def set_plan(self, total_files: int, total_bytes: int, commit: str | None) -> None:
        with self._lock:
            self.total_files, self.total_bytes, self.commit = total_files, total_bytes, commit

    def set_phase(self, phase: str, message: str | None = None) -> None:
        with self._lock:
            self.phase, self.message = phase, message

    def received(self, n: int) -> None:
        with self._lock:
            self.transferred += n
            self.completed_bytes += n

    def rehashed(self, n: int, good: bool = True) -> None:
        """A prefix or whole file read back from disk; `good`: it counts towards completion."""
        with self._lock:
            self.hashed += n
            if good:
                self.completed_bytes += n

    def discarded(self, n: int) -> None:
        """Bytes counted as completed that turned out bad (hash mismatch, server ignored Range)."""
        with self._lock:
            self.completed_bytes -= n

    def file_done(self, untracked_bytes: int = 0) -> None:
        """A file is verified in place; `untracked_bytes` of it were never streamed or re-hashed
        (a copy trusted from the manifest) and are counted as completed now."""
        with self._lock:
            self.completed_files += 1
            self.completed_bytes += untracked_bytes

    def all_done(self) -> None:
        with self._lock:
            self.completed_files, self.completed_bytes = self.total_files, self.total_bytes

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            now = self._clock()
            self._samples.append((now, self.transferred))
            while len(self._samples) > 2 and now - self._samples[1][0] >= SPEED_WINDOW_S:
                self._samples.popleft()
            t0, b0 = self._samples[0]
            speed = (self.transferred - b0) / (now - t0) if now > t0 else 0.0
            remaining = max(0, self.total_bytes - self.completed_bytes)
            eta = remaining / speed if speed > 0 else None
            snap: dict[str, Any] = {
                "phase": self.phase,
                "totalBytes": self.total_bytes,
                "completedBytes": self.completed_bytes,
                "totalFiles": self.total_files,
                "completedFiles": self.completed_files,
                "speedBytesPerSec": int(speed),
                "etaSeconds": None if eta is None else int(eta),
                "bytesTransferred": self.transferred,
                "elapsedSeconds": round(now - self.started, 1),
                "lastUpdated": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            if self.commit:
                snap["commit"] = self.commit
            if self.message:
                snap["message"] = self.message
            return snap


def render_bar(snap: dict[str, Any]) -> str:
    total = snap["totalBytes"] or 0
    done = snap["completedBytes"]
    frac = min(1.0, done / total) if total else (1.0 if snap["phase"] == "Succeeded" else 0.0)
    filled = int(frac * BAR_WIDTH)
    eta = human_seconds(snap["etaSeconds"]) if snap["etaSeconds"] is not None else "?"
    return (
        f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {frac * 100:5.1f}% "
        f"{human_bytes(done)}/{human_bytes(total)} "
        f"files {snap['completedFiles']}/{snap['totalFiles']} "
        f"{human_bytes(snap['speedBytesPerSec'])}/s ETA {eta} ({snap['phase']})"
    )


class Reporter:
    """Logs the bar and publishes the snapshot every `interval` seconds from a daemon thread."""

    def __init__(self, progress: Progress, publisher: Publisher | None, interval: float) -> None:
        self._progress = progress
        self._publisher = publisher
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)

    def start(self) -> None:
        self._emit(final=False)
        self._thread.start()

    def stop(self, phase: str, message: str | None = None) -> dict[str, Any]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._progress.set_phase(phase, message)
        return self._emit(final=True)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._emit(final=False)

    def _emit(self, final: bool) -> dict[str, Any]:
        snap = self._progress.snapshot()
        LOG.info("%s", render_bar(snap))
        if self._publisher is not None:
            try:
                self._publisher.publish(snap, final)
            except Exception as exc:  # progress is advisory: it must never fail the download
                LOG.warning("progress publishing failed: %s", exc)
        return snap
