"""Inbox WAL checkpoints and segment retention (SPEC.md, "WAL checkpoints").

Why this module exists: a restart must not replay records whose outcomes the
dedup store already holds durably, and a WAL whose old segments are never taken
away makes every open scan (and every restart) grow without bound. This module
is the file format and the retention rule; *when* a checkpoint is taken is the
server's (:class:`flk.impl.server.pipeline.Checkpointer`).

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
from collections.abc import Iterator
from typing import Any

from ..core import textdata
from .walformat import WalCorruption, check_manifest, manifest_name, parse_name, scan_segment

__all__ = ["CHECKPOINT_FILE", "ARCHIVE_DIR", "RETENTION_POLICIES", "read_checkpoint", "checkpoint_bytes",
           "retire_segments", "archived_records", "archive_dir"]

CHECKPOINT_FILE = "checkpoint.json"
ARCHIVE_DIR = "archive"
RETENTION_POLICIES = ("archive", "delete", "keep")


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
