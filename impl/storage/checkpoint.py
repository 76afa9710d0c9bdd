"""Inbox WAL checkpoints and segment retention (SPEC.md, "WAL checkpoints").

Why this module exists: a restart must not replay records whose outcomes the
dedup store already holds durably, and a WAL whose old segments are never taken
away makes every open scan (and every restart) grow without bound. This module
is the file format, the retention rule and the schedule: :class:`Checkpointer` decides
*when* (every ``every_records`` records or ``every_s`` seconds while records arrive, on the
monotonic clock its driver passes: a wall-clock step neither delays nor hastens a checkpoint,
SPEC.md 11.9 rule 8), and two drivers run it -- ``flk serve``'s worker
(:mod:`flk.impl.server.app`, its thread pool) and the simulator's regions
(:mod:`flk.sim.region`, under SimPy time), so a simulated restart replays what a real one
replays (from the checkpoint), not the whole log.

The checkpoint file (``checkpoint.json`` in the worker's WAL directory) says:
every record below ``index`` has its outcome durable in the dedup store
identified by ``store`` (and, for Redis/Postgres, marked ``generation``); it is
written atomically only AFTER the store made those outcomes durable. ``index``
is always a segment boundary: the segment holding the records below it was
sealed first, so the home answers of those records (SPEC.md section 12.4) are
in sealed manifests, never only in memory.

Retention (``WAL_RETENTION``), applied after a checkpoint to the sealed
segments all of whose records are below ``min(checkpoint, shipped)`` -- where
``shipped`` is the replication shipper's persisted watermark when replication
runs, so a segment is never taken away before it was shipped:

* ``archive`` (default): moved with its manifest to ``<wal dir>/archive/``; the
  log no longer opens or scans it, a rebuild of the dedup store
  (``DEDUP_REBUILD=1``) still replays it (:func:`archived_records`); the
  operator deletes or backs up that directory;
* ``delete``: deleted (a later rebuild can only replay what is left);
* ``keep``: left in the log (restart scans every segment again: unbounded).
"""

from __future__ import annotations

import json
import posixpath
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..core import textdata
from .walformat import WalCorruption, check_manifest, manifest_name, parse_name, scan_segment

__all__ = ["CHECKPOINT_FILE", "ARCHIVE_DIR", "RETENTION_POLICIES", "read_checkpoint", "checkpoint_bytes",
           "retire_segments", "archived_records", "archive_dir", "replay_start", "write_checkpoint",
           "seal_for_checkpoint", "Checkpointer", "DEFAULT_EVERY_RECORDS", "DEFAULT_EVERY_S", "DEFAULT_RETENTION"]

CHECKPOINT_FILE = "checkpoint.json"
ARCHIVE_DIR = "archive"
RETENTION_POLICIES = ("archive", "delete", "keep")
# the running checkpoint's defaults (flk serve's WAL_CHECKPOINT_RECORDS, WAL_CHECKPOINT_S, WAL_RETENTION)
DEFAULT_EVERY_RECORDS = 100_000
DEFAULT_EVERY_S = 60.0
DEFAULT_RETENTION = "archive"


def archive_dir(wal: Any) -> str:
    return posixpath.join(wal.dir, ARCHIVE_DIR)


def read_checkpoint(wal: Any) -> dict | None:
    """The checkpoint document of ``wal``'s directory (None: none, or unreadable)."""
    try:
        doc = textdata.json_loads(wal.fs.read(posixpath.join(wal.dir, CHECKPOINT_FILE)))
        int(doc["index"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return doc if isinstance(doc, dict) else None


def checkpoint_bytes(index: int, store_id: str, generation: str | None) -> bytes:
    return json.dumps({"v": 1, "index": int(index), "store": store_id, "generation": generation},
                      sort_keys=True).encode()


def retire_segments(wal: Any, below: int, policy: str) -> list[str]:
    """Apply the retention ``policy`` to the sealed segments all of whose records are
    below ``below``; returns the names taken out of the log."""
    if policy == "keep":
        return []
    if policy not in RETENTION_POLICIES:
        raise ValueError(f"unknown WAL retention policy {policy!r}")
    return wal.retire_sealed_before(below, archive_dir(wal) if policy == "archive" else None)


def archived_records(wal: Any, from_index: int = 0) -> Iterator[tuple[int, bytes]]:
    """Every record of ``wal``'s archive with index >= ``from_index`` and below the log's
    first live index, in order, as ``(index, payload)``; each segment is checked against
    its manifest (SHA-256, count) and its frames' CRCs first. A gap raises
    :class:`WalCorruption` (what is missing cannot be replayed silently)."""
    fs, adir = wal.fs, archive_dir(wal)
    if not fs.isdir(adir):
        return
    names = set(fs.listdir(adir))
    segs = sorted((parsed[1], name) for name in names
                  if (parsed := parse_name(name)) is not None and parsed[0] == "seg" and manifest_name(name) in names)
    end = wal.first_index
    expected = None
    for first, name in segs:
        if first >= end:
            break
        data = fs.read(posixpath.join(adir, name))
        res = scan_segment(data, is_last=False)
        if res.status != "clean":
            raise WalCorruption(name, res.bad_offset, res.reason + " (archived segment)")
        problems = check_manifest(fs.read(posixpath.join(adir, manifest_name(name))), name, first, res.count, data)
        if problems:
            raise WalCorruption(name, None, "; ".join(problems) + " (archived segment)")
        if expected is not None and first != expected:
            raise WalCorruption(name, 0, f"gap in the archive: expected first index {expected}, file starts at {first}")
        expected = first + res.count
        if expected <= from_index:
            continue
        for k, (off, ln) in enumerate(res.spans):
            if first + k >= from_index:
                yield first + k, data[off: off + ln]
    if expected is not None and expected < end:
        raise WalCorruption(ARCHIVE_DIR, None, f"gap between the archive (ends at {expected}) and the log "
                                               f"(starts at {end})")


# -- WAL checkpoints: where the start-up replay begins, and when a checkpoint is written -----
# ``checkpoint.json`` says: every record below ``index`` has its outcome durable in the dedup
# store identified by ``store`` (and, for Redis/Postgres, marked ``generation``). It is written
# only AFTER the store made those outcomes durable (:func:`write_checkpoint` asks
# ``store.make_durable()`` first), with the file system's atomic write, at a segment boundary
# (the segment holding the records below it was sealed first, so their home answers are in its
# manifest). So a crash at any point leaves either the old checkpoint (the records after it are
# replayed again: first-write-wins makes that a no-op, INV-IDEMPOTENT-REPLAY) or the new one
# (every record below it is in the store). A different store, another generation, a rebuild or
# a store that keeps nothing across restarts (memory) replays everything. Taken after the
# start-up replay, while serving (:class:`Checkpointer`: every ``WAL_CHECKPOINT_RECORDS``
# records or ``WAL_CHECKPOINT_S`` seconds) and after a clean stop.


def replay_start(wal: Any, store_id: str, generation: str | None, trust: bool) -> int:
    """The first inbox WAL index the start-up replay must process (0: every record).

    Never above the first record of the active (unsealed) segment: those records'
    home answers were in memory only, and the replay notes them again (a checkpoint
    written by this code is at a segment boundary, so this costs nothing; one written
    inside the active segment by an older version costs at most one segment)."""
    if not trust:
        return 0
    doc = read_checkpoint(wal)
    if doc is None or doc.get("store") != store_id or doc.get("generation") != generation:
        return 0
    index = int(doc["index"])
    if index < 0:
        return 0
    segments = wal.segments()
    active_first = segments[-1].first_index if segments else 0
    return max(wal.first_index, min(index, wal.next_index, active_first))


def write_checkpoint(wal: Any, index: int, store: Any, store_id: str, generation: str | None) -> bool:
    """Record that every record below ``index`` has its outcome durable in ``store``:
    the store is asked to make what it holds durable first (SQLite: a full WAL
    checkpoint; Redis with AOF and Postgres already are), then the file is replaced
    atomically. The caller sealed the segment ending at ``index`` (or ``index`` is the
    log's next index at a stop, sealed by :func:`seal_for_checkpoint`)."""
    durable = getattr(store, "make_durable", None)
    if durable is None or not durable():
        return False  # a store that cannot say its outcomes are durable gets no checkpoint
    wal.fs.write_atomic(posixpath.join(wal.dir, CHECKPOINT_FILE), checkpoint_bytes(index, store_id, generation))
    return True


def seal_for_checkpoint(wal: Any) -> int:
    """Seal the active segment (its records' home answers go to its manifest) and return
    the log's next index: a segment boundary below which every record is sealed. Call
    it between batches (under the batch driver's lock, or with no driver running)."""
    wal.seal()
    return wal.next_index


class Checkpointer:
    """Running WAL checkpoints of one worker, taken on a worker thread (:meth:`tick`).

    A tick, when due (``every_records`` records appended since the last mark, or
    ``every_s`` seconds and at least one record), does two things:

    1. *Mark*: under ``lock`` (the batch driver's: no batch is between its records and
       their answers) the active segment is sealed -- its home answers reach its
       manifest -- and the log's next index is remembered as the next candidate.
    2. *Checkpoint* the candidate of the PREVIOUS tick, if ``healthy()`` (no store call,
       WAL append or submission failed since the start: a failure may have left a record
       in the WAL without its outcome, and the start-up replay is what repairs that) and
       ``trusted()``. A candidate is one period old, so every failure of a batch below it
       has been counted by then (the server counts a batch's 5xx on the event loop, after
       the batch released the lock). The store makes its outcomes durable first
       (:func:`write_checkpoint`).
    3. *Retire* the sealed segments below ``min(previous checkpoint, shipped())`` (one
       checkpoint period stays in the log as a margin: ``flk wal inspect`` and a reader of
       the recent records still find them) by the retention
       ``policy`` (:func:`flk.impl.storage.checkpoint.retire_segments`); ``shipped()`` is the
       replication shipper's persisted watermark (None: no replication), so no segment
       leaves the log before it was shipped.

    The clock is passed in (``due(mono)``, ``tick(mono)``, ``checkpoint_now(mono)``), so tests
    drive it step by step. It is the driver's *monotonic* clock (``flk serve``:
    ``time.monotonic()``; the simulator: simulated time, which no clock fault moves): the
    schedule is all it is used for (the checkpoint file carries no time), and on the wall clock
    a step back of ``s`` seconds held every running checkpoint back for ``s`` seconds -- more
    replay at the next start, and no retention meanwhile (SPEC.md 11.9 rule 8)."""

    def __init__(self, wal: Callable[[], Any], lock: Any, store: Callable[[], Any], store_id: str,
                 generation: Callable[[], str | None], trusted: Callable[[], bool], healthy: Callable[[], bool],
                 *, every_records: int, every_s: float, policy: str,
                 shipped: Callable[[], int | None] = lambda: None) -> None:
        self.wal, self.lock, self.store, self.store_id = wal, lock, store, store_id
        self.generation, self.trusted, self.healthy, self.shipped = generation, trusted, healthy, shipped
        self.every_records, self.every_s, self.policy = int(every_records), float(every_s), policy
        self.index = 0  # the last checkpoint written by this process (or found at its start)
        self.previous = 0  # the checkpoint before it: retention works below this one (one period of margin)
        self.candidate: int | None = None  # marked at the previous tick
        self._marked_at: float | None = None
        self._marked_index = 0
        self.checkpoints = 0
        self.retired: list[str] = []
        self.mutex = threading.Lock()  # one tick or checkpoint at a time

    def due(self, mono: float) -> bool:
        if not self.trusted():
            return False
        appended = self.wal().next_index - self._marked_index
        if appended <= 0:
            return self.candidate is not None and self.candidate > self.index
        return appended >= self.every_records or self._marked_at is None or mono - self._marked_at >= self.every_s

    def tick(self, mono: float) -> dict:
        """(Worker thread.) Mark, checkpoint the previous mark, retire; what was done."""
        with self.mutex:
            return self._tick(mono)

    def _tick(self, mono: float) -> dict:
        out: dict[str, Any] = {"checkpoint": None, "retired": []}
        if not self.trusted() or not self.healthy():
            return out  # no checkpoint until a restart's replay repaired what failed
        wal = self.wal()
        previous = self.candidate
        if wal.next_index > self._marked_index:
            with self.lock:
                mark = seal_for_checkpoint(wal)
            self.candidate, self._marked_index, self._marked_at = mark, mark, mono
        if previous is not None and previous > self.index and self.healthy():
            if write_checkpoint(wal, previous, self.store(), self.store_id, self.generation()):
                self.previous, self.index = self.index, previous
                self.checkpoints += 1
                out["checkpoint"] = previous
        out["retired"] = self.retire()
        return out

    def checkpoint_now(self, mono: float) -> bool:
        """(No batch running: at start after the replay, at a clean stop.) Seal, write the
        checkpoint at the log's next index (if ``trusted()`` and ``healthy()``), retire."""
        with self.mutex:
            if not self.trusted() or not self.healthy():
                return False
            wal = self.wal()
            mark = seal_for_checkpoint(wal)
            self.candidate, self._marked_index, self._marked_at = mark, mark, mono
            if not write_checkpoint(wal, mark, self.store(), self.store_id, self.generation()):
                return False
            if mark > self.index:
                self.previous, self.index = self.index, mark
            self.checkpoints += 1
            self.retire()
            return True

    def started_from(self, index: int) -> None:
        """The start-up replay began at ``index`` (the checkpoint found, or 0): it counts as
        this process's first checkpoint, so retention can work below it."""
        self.index = self.previous = max(0, int(index))

    def retire(self) -> list[str]:
        """Apply the retention policy below the checkpoint and the shipped watermark."""
        below = self.previous
        shipped = self.shipped()
        if shipped is not None:
            below = min(below, shipped)
        retired = retire_segments(self.wal(), below, self.policy) if below > 0 else []
        self.retired += retired
        return retired
