"""One hub download for the whole fleet: the download Jobs of one model share files between nodes.

Every Job serves the files it has verified from a small HTTP server on its pod IP (`PeerServer`)
and keeps a record under its own key of the model's progress ConfigMap, `_peer.<node>` (node names
cannot contain `_`, so no key collides with a node's progress key):
`{url, token, commit, have: [paths], beat, done, failed}`.

A file is fetched from the hub by the one node that *claims* it. Each file has a key of its own,
`_claim.<hash of the path>`, holding `{"path", "node"}` ("node" empty while nobody holds it); a
claim is a JSON patch that tests the key's current value and replaces it in one step, so of two
nodes claiming a file the API server applies one and answers 422 to the other, and claims on
different files never conflict (no object-wide resourceVersion race between 16 nodes). The keys
are created once, by whichever node's merge patch with the ConfigMap's resourceVersion lands
first. Every other node fetches the file from a peer that lists it in `have`, verifying the
whole file's digest as it arrives exactly as for the hub, and falls back to another peer or to
the hub when a peer refuses, stalls, dies or sends bad bytes. The Job's Role (get/patch/update on
this one ConfigMap) is all it needs.

Liveness without comparing clocks: each node bumps `beat` every HEARTBEAT_S; a reader that has
not seen a node's beat change for STALE_S, and whose probe of that node's server gets no HTTP
answer, treats it as gone: its claims may be taken over (the same test-and-replace). A holder is
tried as a source whatever its beat: a dead one refuses the connection and the next is tried.

A node that has everything keeps serving ("lingers") while another registered node still works,
up to --peer-linger seconds: its own Job ends a little later, the fleet much sooner. A node that
fetched files from the hub also waits, up to JOIN_WAIT_S, for the nodes the operator created Jobs
for (the ConfigMap's `_expected` list) that have not registered yet, so a Job whose pod starts late
still finds a peer instead of fetching the whole model from the hub. One that fetched nothing from
the hub does not: what it has, the hub's fetchers have too, and a Job recreated on a node that
already has the model must not wait for nodes whose Jobs finished long ago. The server
requires the record's random bearer token, so only what can read the ConfigMap (the model's Jobs
and cluster admins) can read weights from it; the hub token never goes to a peer. Size: the
records list paths, about 16 x 40 bytes per file of the model; a 1,000-file model stays far below
the ConfigMap limit of 1 MiB.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from ome_operator.downloader.fetch import Source
from ome_operator.downloader.listing import RemoteFile
from ome_operator.downloader.peer_board import Board, PeerRecord, claim_key, claim_value
from ome_operator.downloader.peer_server import PeerServer

LOG = logging.getLogger("ome_operator.downloader")

HEARTBEAT_S = 3.0
# Beats can lag far behind HEARTBEAT_S on a loaded API server; a node whose beat looks stale is
# only given up when its peer server does not answer either (a dead process refuses at once).
STALE_S = 30.0
PROBE_TIMEOUT_S = 2.0
POLL_S = 1.0  # 16 nodes reading a ConfigMap of some 10-50 KB: keep the API server's load small
# Least time between two writes of a node's record: every write is a new version of the whole
# ConfigMap in etcd, and readers look only once per POLL_S anyway.
WRITE_GAP_S = 0.5
DEFAULT_PEER_PORT = 8477
DEFAULT_LINGER_S = 600.0
# How long a finished node waits for an expected node that never registered (a pod pulling its
# image, a Job held back, a node that went away): bounded, as nothing tells which it is.
JOIN_WAIT_S = 120.0


def compute_waiting_for(
    others: dict[str, PeerRecord], expected: frozenset[str], me: str, total_files: int
) -> tuple[list[str], list[str]]:
    """(registered nodes still downloading, expected nodes not registered yet), as a finished node sees them."""
    working = sorted(
        n for n, r in others.items() if not r.done and not r.failed and len(set(r.have)) < total_files
    )  # fmt: skip
    return working, sorted(expected - set(others) - {me})


@dataclass
class _Seen:
    beat: int
    changed_at: float


class Coordinator:
    """This node's view of the board and its side of the protocol."""

    def __init__(
        self, board: Board, node: str, server: PeerServer, commit: str, peer_client: httpx.Client, linger: float
    ) -> None:
        self.board, self.node, self.server, self.commit = board, node, server, commit
        self._client = peer_client
        self._linger = linger
        self._lock = threading.Lock()
        self.record = PeerRecord(url=server.url, token=server.token, commit=commit)
        self._others: dict[str, PeerRecord] = {}
        self._claims: dict[str, str] = {}
        self._expected: frozenset[str] = frozenset()
        self._fetched_from_hub = False  # this node claimed a file: late joiners may need its copy
        self._mine: set[str] = set()
        self._seen: dict[str, _Seen] = {}
        self._probed: dict[str, tuple[float, bool]] = {}
        self._read_at = 0.0
        self._total_files = 0
        self._stop = threading.Event()
        self._dirty = threading.Event()  # the record changed since the last write
        self._beat_thread = threading.Thread(target=self._beat_loop, name="peer-beat", daemon=True)
        self._rng = random.Random(node)

    # --- the board -------------------------------------------------------------------------------

    def start(self, files: list[RemoteFile], have: Iterable[str]) -> bool:
        """Register on the board; False when the claim keys cannot be set up (then: hub only)."""
        for path in have:
            self.server.offer(path)
            self.record.have.append(path)
        paths = [f.path for f in files]
        self._total_files = len(paths)
        for _ in range(30):
            view = self.board.read(fresh=True)
            if view is not None and all(claim_key(p) in view.claims for p in paths):
                break
            if view is not None and self.board.create_claims(
                [p for p in paths if claim_key(p) not in view.claims], view.resource_version
            ):
                break
            time.sleep(self._rng.uniform(0.05, 0.3))  # someone wrote in between: look again
        else:
            return False
        self._write()
        self.refresh(force=True)
        self._beat_thread.start()
        return True

    def _write(self) -> bool:
        with self._lock:
            record = PeerRecord(**{**self.record.__dict__, "have": list(self.record.have)})
        return self.board.write(self.node, record)

    def _write_surely(self) -> None:
        """For the outcome: a lost or reordered write would leave others waiting for this node."""
        for attempt in range(5):
            if self._write():
                return
            time.sleep(0.5 * 2**attempt)
        LOG.warning("peer record: could not publish the outcome; others will see this node go quiet")

    def _beat_loop(self) -> None:
        """The one writer of this node's record while it works: a beat every HEARTBEAT_S, and a
        change (a file placed) at most WRITE_GAP_S after the last write. Files placed together
        go out in one patch, and no fetch worker waits on the API server."""
        last = 0.0
        while not self._stop.is_set():
            self._dirty.wait(HEARTBEAT_S)
            gap = last + WRITE_GAP_S - time.monotonic()
            if self._stop.is_set() or (gap > 0 and self._stop.wait(gap)):
                return
            self._dirty.clear()
            with self._lock:
                self.record.beat += 1
            self._write()
            last = time.monotonic()

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._read_at < POLL_S:
            return
        view = self.board.read()
        self._read_at = now
        if view is None:
            return
        with self._lock:
            self._claims = view.claims
            self._expected = view.expected
            self._others = {n: r for n, r in view.records.items() if n != self.node and r.commit == self.commit}
            for n, r in self._others.items():
                seen = self._seen.get(n)
                if seen is None or seen.beat != r.beat:
                    self._seen[n] = _Seen(r.beat, now)

    def _alive(self, node: str, now: float) -> bool:
        seen = self._seen.get(node)
        if seen is not None and now - seen.changed_at < STALE_S:
            return True
        with self._lock:
            record = self._others.get(node)
            probed = self._probed.get(node)
        if record is None:
            return False
        if probed is not None and now - probed[0] < HEARTBEAT_S:
            return probed[1]
        try:
            self._client.head(record.url.rstrip("/") + "/v1/", timeout=PROBE_TIMEOUT_S)
            answered = True  # any HTTP answer (401, 404) means the process is there
        except httpx.HTTPError:
            answered = False
        with self._lock:
            self._probed[node] = (now, answered)
        return answered

    # --- decisions -------------------------------------------------------------------------------

    def peer_source(self, f: RemoteFile, exclude: set[str]) -> Source | None:
        with self._lock:
            holders = [
                (n, r) for n, r in self._others.items() if f.path in r.have and n not in exclude and not r.failed
            ]
        if not holders:
            return None
        node, record = self._rng.choice(sorted(holders, key=lambda nr: nr[0]))
        base = record.url.rstrip("/") + f"/v1/{self.commit}/"
        return Source(
            name=f"peer {node}",
            client=self._client,
            url=lambda path: base + urllib.parse.quote(path),
            headers={"authorization": f"Bearer {record.token}"},
            is_hub=False,
        )

    def _holder(self, f: RemoteFile) -> tuple[str, str] | None:
        """(the claim's exact value, the node holding it), or None when the key is unknown."""
        with self._lock:
            value = self._claims.get(claim_key(f.path))
        if value is None:
            return None
        try:
            return value, str(json.loads(value).get("node", ""))
        except ValueError:
            return value, ""

    def claimed_elsewhere(self, f: RemoteFile) -> bool:
        held = self._holder(f)
        if held is None or not held[1] or held[1] == self.node:
            return False
        now = time.monotonic()
        with self._lock:
            record = self._others.get(held[1])
        return record is not None and self._alive(held[1], now) and not record.failed and not record.done

    def claim(self, f: RemoteFile, exclude: set[str]) -> bool:
        """Take the hub fetch of `f`; False when another live node holds it or a usable copy exists."""
        if self.peer_source(f, exclude) is not None or self.claimed_elsewhere(f):
            return False
        held = self._holder(f)
        if held is None:
            return False
        won = self.board.swap_claim(f.path, held[0], claim_value(f.path, self.node))
        if won is None:  # no answer: the board will tell on the next read whether it landed
            self.refresh(force=True)
            held = self._holder(f)
            won = held is not None and held[1] == self.node
        if not won:
            self.refresh(force=True)
            return False
        with self._lock:
            self._mine.add(f.path)
            self._claims[claim_key(f.path)] = claim_value(f.path, self.node)
            self._fetched_from_hub = True
        return True

    def placed(self, f: RemoteFile) -> None:
        self.server.offer(f.path)
        with self._lock:
            self._mine.discard(f.path)
            if f.path not in self.record.have:
                self.record.have.append(f.path)
        self._dirty.set()

    def release(self, f: RemoteFile) -> None:
        with self._lock:
            if f.path not in self._mine:
                return
            self._mine.discard(f.path)
        self.board.swap_claim(f.path, claim_value(f.path, self.node), claim_value(f.path, ""))

    # --- the end ---------------------------------------------------------------------------------

    def finish(self, succeeded: bool) -> None:
        """Publish the outcome; after a success keep serving (and beating) while others still work."""
        with self._lock:
            self.record.done, self.record.failed = succeeded, not succeeded
            mine = sorted(self._mine)
        for path in mine:  # a failed node hands its claims back at once instead of after STALE_S
            self.board.swap_claim(path, claim_value(path, self.node), claim_value(path, ""))
        self._write_surely()
        if succeeded:
            self._linger_while_needed()
        self._stop_beats()
        self._write_surely()  # the last word, after any beat that might overtake it
        self.close()

    def _stop_beats(self) -> None:
        self._stop.set()
        self._dirty.set()
        if self._beat_thread.is_alive():
            self._beat_thread.join()

    def close(self) -> None:
        self._stop_beats()
        self.server.stop()
        self.board.close()
        self._client.close()

    def _linger_while_needed(self) -> None:
        started = time.monotonic()
        deadline = started + self._linger
        said: tuple[int, int] | None = None
        while time.monotonic() < deadline:
            self.refresh(force=True)
            now = time.monotonic()
            with self._lock:
                working, unseen = compute_waiting_for(self._others, self._expected, self.node, self._total_files)
            if not self._fetched_from_hub or now - started >= JOIN_WAIT_S:
                unseen = []
            working = [n for n in working if self._alive(n, now)]
            if not working and not unseen:
                break
            if said != (len(working), len(unseen)):
                LOG.info(
                    "serving peers while %d other node(s) still download and %d expected node(s) have not started",
                    len(working), len(unseen),
                )  # fmt: skip
                said = (len(working), len(unseen))
            time.sleep(POLL_S)
        LOG.info("peer server: %d requests, %d bytes served", self.server.requests, self.server.bytes_served)


class CooperativeQueue:
    """The files still to bring in, handed to workers in the order that saves the hub's bytes:
    first whatever a live peer already has, then a file nobody has claimed (claimed now, for the
    hub), and otherwise wait for the board to change. Each node starts its scan at a different
    file, so sixteen nodes starting together claim different files instead of racing for one."""

    def __init__(self, coord: Coordinator, files: list[RemoteFile]) -> None:
        self._coord = coord
        offset = int.from_bytes(coord.node.encode()[-4:].rjust(4, b"\0"), "big") % max(1, len(files))
        self._pending = files[offset:] + files[:offset]
        self._excluded: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def take(self, cancel: threading.Event) -> tuple[RemoteFile, Source | None] | None:
        while not cancel.is_set():
            with self._lock:
                if not self._pending:
                    return None
                self._coord.refresh()
                for f in self._pending:
                    source = self._coord.peer_source(f, self._excluded.get(f.path, set()))
                    if source is not None:
                        self._pending.remove(f)
                        return f, source
                for f in self._pending:
                    excluded = self._excluded.get(f.path, set())
                    if not self._coord.claimed_elsewhere(f) and self._coord.claim(f, excluded):
                        self._pending.remove(f)
                        return f, None
            cancel.wait(POLL_S)
        return None

    def retry(self, f: RemoteFile, source_name: str) -> None:
        """`source_name` failed for `f`: never ask that peer for it again; look for another source."""
        with self._lock:
            self._excluded.setdefault(f.path, set()).add(source_name.removeprefix("peer "))
            self._pending.insert(0, f)

    def done(self, f: RemoteFile) -> None:
        self._coord.placed(f)

    def abandon(self, f: RemoteFile) -> None:
        self._coord.release(f)
