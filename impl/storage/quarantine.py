"""Quarantine for log records whose processing fails unexpectedly (poison records).

Why this module exists: replay must never stop a process. A record that is
durably in an inbox WAL (start-up replay) or in a peer's shipped stream
(cross-region replay) but makes the pipeline raise -- a bug, not bad input,
which the pipeline answers with a 4xx -- would otherwise be replayed, fail and
stop the replay on every start, or stall the peer's stream at that record for
ever. Both replays hand such a record here instead and go on.

What a quarantined record leaves behind:

* one line in a JSONL file beside the log (``quarantine.jsonl`` inside the
  inbox WAL directory; ``read-quarantine.jsonl`` beside the replication
  reader's watermarks), written and fsynced through a
  :class:`flk.impl.storage.fs.FileSystem`. It holds the source (``inbox`` or
  the stream name), the record's index and segment, the reason, the SHA-256 of
  the record bytes and the record itself in base64 (``record_b64``), so that an
  operator can inspect it and re-drive it once the bug is fixed;
* :meth:`Quarantine.status` (count and last reason) for ``/ready`` and the
  replication metrics, and :func:`read_entries` for ``flk wal inspect``.

Log lines, ``/ready`` and audit entries get :func:`public_view` of an entry:
never the payload, never the exception's message (which may quote the
payload) -- only the exception type and the code location that raised.

The same record met again (every start replays the whole WAL) is recognised by
(source, index, digest) and not counted or written twice. Sans-I/O apart from
the one append through the file system passed in; time is passed in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import posixpath
import threading
from typing import Any

from ..core import textdata
from .fs import FileSystem, OsFileSystem

__all__ = ["FILE_NAME", "FORMAT", "Quarantine", "describe_error", "poison_entry", "public_view",
           "parse_entries", "read_entries"]

FILE_NAME = "quarantine.jsonl"
FORMAT = "flk-quarantine/1"
_PRIVATE = ("record_b64", "detail")


def describe_error(error: BaseException) -> str:
    """``TypeError in validate_pcs (wire.py:123)``: what raised and where, never
    the message (it may quote the record's payload)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return type(error).__name__
    code = tb.tb_frame.f_code
    return f"{type(error).__name__} in {code.co_name} ({posixpath.basename(code.co_filename)}:{tb.tb_lineno})"


def poison_entry(source: str, index: int, segment: str | None, record: bytes, error: BaseException,
                 now: float, **context: Any) -> dict[str, Any]:
    """The quarantine line of one record (``context``: e.g. tenant, region)."""
    raw = bytes(record)
    return {
        "format": FORMAT,
        "source": source,
        "index": int(index),
        "segment": segment,
        "reason": describe_error(error),
        "digest": hashlib.sha256(raw).hexdigest(),
        "bytes": len(raw),
        "at": float(now),
        **{k: v for k, v in sorted(context.items()) if v is not None},
        "detail": f"{type(error).__name__}: {str(error)[:500]}",
        "record_b64": base64.b64encode(raw).decode("ascii"),
    }


def public_view(entry: dict[str, Any]) -> dict[str, Any]:
    """``entry`` without the record bytes and the exception message (for logs,
    ``/ready``, metrics and audit)."""
    return {k: v for k, v in entry.items() if k not in _PRIVATE}


def parse_entries(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The entries of a quarantine file's bytes and how many lines were not
    entries (a torn last line after a crash, foreign text)."""
    out, bad = [], 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            entry = textdata.json_loads(line)
        except (ValueError, UnicodeDecodeError):
            bad += 1
            continue
        if isinstance(entry, dict) and entry.get("format") == FORMAT:
            out.append(entry)
        else:
            bad += 1
    return out, bad


def read_entries(path: str, fs: FileSystem | None = None) -> tuple[list[dict[str, Any]], int]:
    """:func:`parse_entries` of the file at ``path`` (no file: no entries)."""
    fs = fs if fs is not None else OsFileSystem()
    if not fs.exists(path):
        return [], 0
    return parse_entries(fs.read(path))


class Quarantine:
    """The poison records of one replay, persisted in the JSONL file ``path``
    (``None``: memory only). Thread-safe (a replay thread adds, ``/ready`` reads)."""

    def __init__(self, path: str | None, fs: FileSystem | None = None) -> None:
        self.path = path
        self.fs: FileSystem = fs if fs is not None else OsFileSystem()
        self._lock = threading.Lock()
        self._keys: set[tuple[str, int, str]] = set()
        self.last: dict[str, Any] | None = None
        self.write_failures = 0
        if path is not None:
            entries, _ = read_entries(path, self.fs)
            for entry in entries:
                self._keys.add(_key(entry))
            if entries:
                self.last = public_view(entries[-1])

    @property
    def count(self) -> int:
        """Distinct records quarantined (this file, over every run)."""
        return len(self._keys)

    def add(self, source: str, index: int, segment: str | None, record: bytes, error: BaseException,
            now: float, **context: Any) -> dict[str, Any] | None:
        """Quarantine one record; returns its :func:`public_view` (with
        ``persisted``), or None when it was quarantined before."""
        entry = poison_entry(source, index, segment, record, error, now, **context)
        key = _key(entry)
        with self._lock:
            if key in self._keys:
                return None
            persisted = self._persist(entry)
            self._keys.add(key)
            self.last = public_view(entry)
        return {**public_view(entry), "persisted": persisted}

    def _persist(self, entry: dict[str, Any]) -> bool:
        if self.path is None:
            return False
        line = (json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n").encode()
        try:
            created = not self.fs.exists(self.path)
            handle = self.fs.open_append(self.path)
            try:
                handle.write(line)
                handle.fsync()
            finally:
                handle.close()
            if created:  # the new file's name must survive a power cut too
                self.fs.fsync_dir(posixpath.dirname(self.path) or ".")
        except OSError:  # a full disk must not stop the replay; the record stays in the log
            self.write_failures += 1
            return False
        return True

    def status(self) -> dict[str, Any]:
        """``{"count", "last_reason", "last_index", "last_source"}`` (no payload)."""
        last = self.last or {}
        return {"count": self.count, "last_reason": last.get("reason"), "last_index": last.get("index"),
                "last_source": last.get("source"), "write_failures": self.write_failures}


def _key(entry: dict[str, Any]) -> tuple[str, int, str]:
    return (str(entry.get("source")), int(entry.get("index", -1)), str(entry.get("digest")))
