"""The shipped stream: what a shipper writes and a reader reads (SPEC.md section 11).

Why this module exists: every region must eventually see every request any
region accepted, and must process it exactly as its origin did, so that
identical payloads produce identical outcomes everywhere and conflicts are
detected and merged (``flk.impl.replication.reconcile``). We replicate the *input* (the
inbox WAL), not the dedup state: the receiving region replays each record
through the same verification core (:mod:`flk.impl.verifier.core`), so a
forged or corrupted record can never bypass signature verification. The
shipper (:mod:`flk.impl.replication.shipping`), the reader
(:mod:`flk.impl.replication.reading`) and the replay memo
(:mod:`flk.impl.replication.applying`) agree on what this module holds:

* the names in the object store (:func:`stream_name`, :func:`segment_key`): the
  stream is the region id, ``<region>/w<k>`` for server worker k > 0; a segment is
  ``<stream>/seg-<20 digits>.log`` and its manifest ``<stream>/seg-<...>.manifest.json``;
* :func:`verify_segment`: a shipped segment checked against its manifest (name,
  SHA-256, frames, count, every record's encoding) and decoded, each record with
  its WAL index and the home answer the manifest carries (SPEC.md section 12.4);
  a bad segment raises :class:`SegmentRejected` naming every problem;
* the errors (:class:`CrrError`, :class:`SegmentRejected`), the watermark file
  both sides persist (:class:`WatermarkFile`) and lag samples (:class:`LagStats`).

Theory of operation::

    region A                          object store                  region B
    inbox WAL --seal--> sealed seg --put--> A/seg-N.log           list A/ after watermark
                         + manifest --put--> A/seg-N.manifest.json --> get, check SHA-256,
    Shipper watermark (next index)                                    scan frames, decode,
                                                                      replay steps 3-8 as A,
                                                                      Reader watermark

Sans-I/O: the files are a ``FileSystem``; there are no threads here (the
lock of :class:`LagStats` only guards metrics read from another thread).
"""

from __future__ import annotations

import json
import posixpath
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat
from operator import attrgetter, sub

from ..core import textdata
from ..core.errors import InvalidInput
from ..storage.fs import FileSystem, OsFileSystem
from ..storage.inbox import InboxRecord, decode_inbox_span
from ..storage.walformat import check_manifest, decode_answers, parse_name, scan_segment

__all__ = [
    "CrrError",
    "SegmentRejected",
    "stream_name",
    "segment_key",
    "WatermarkFile",
    "LagStats",
    "lags_since",
    "verify_segment",
    "WATERMARK_FORMAT",
]

WATERMARK_FORMAT = "flk-crr-watermark/1"
_RECEIVED_AT = attrgetter("received_at")
_POSITIVE = (0.0).__lt__  # lag > 0.0 (False for a NaN)


class CrrError(Exception):
    """A replication problem that needs an operator (not a transient outage)."""


class SegmentRejected(CrrError):
    """A shipped segment failed verification; the stream stops at it."""

    def __init__(self, stream: str, segment: str, problems: list[str]) -> None:
        super().__init__(f"{stream}/{segment}: " + "; ".join(problems))
        self.stream, self.segment, self.problems = stream, segment, list(problems)

    def __reduce__(self):  # pickled as __init__'s arguments (a worker process's error reaches its pool intact)
        return type(self), (self.stream, self.segment, self.problems)


def stream_name(region: str, worker: int = 0) -> str:
    return region if worker == 0 else f"{region}/w{worker}"


def segment_key(stream: str, name: str) -> str:
    return f"{stream}/{name}"


class WatermarkFile:
    """A small JSON state file written atomically through the FileSystem."""

    def __init__(self, path: str, fs: FileSystem | None = None) -> None:
        self.path, self.fs = path, fs or OsFileSystem()

    def load(self) -> dict[str, int]:
        if not self.fs.exists(self.path):
            return {}
        doc = textdata.json_loads(self.fs.read(self.path))
        if doc.get("format") != WATERMARK_FORMAT or not isinstance(doc.get("streams"), dict):
            raise CrrError(f"{self.path}: not a {WATERMARK_FORMAT} file")
        return {str(k): int(v) for k, v in doc["streams"].items()}

    def save(self, streams: Mapping[str, int]) -> None:
        d = posixpath.dirname(self.path)
        if d and not self.fs.isdir(d):
            self.fs.makedirs(d)
        doc = {"format": WATERMARK_FORMAT, "streams": {k: int(streams[k]) for k in sorted(streams)}}
        self.fs.write_atomic(self.path, json.dumps(doc, sort_keys=True).encode())


class LagStats:
    """Replication lag samples (seconds), a bounded window for medians/percentiles."""

    def __init__(self, window: int = 4096) -> None:
        self.samples: deque[float] = deque(maxlen=window)
        self.count = 0
        self.max_s = 0.0
        self._lock = threading.Lock()  # metrics are read from another thread

    def add(self, lag: float) -> None:
        lag = max(0.0, float(lag))
        with self._lock:
            self.samples.append(lag)
            self.count += 1
            self.max_s = max(self.max_s, lag)

    def add_many(self, lags: Iterable[float]) -> None:
        """:meth:`add` of every lag, under one lock."""
        vals = list(map(float, lags))
        if not all(map(_POSITIVE, vals)):  # the common case (every lag > 0) is one C-speed pass
            vals = [lag if lag > 0.0 else 0.0 for lag in vals]  # max(0.0, lag): a NaN too gives 0.0
        if vals:
            with self._lock:
                self.samples.extend(vals)
                self.count += len(vals)
                self.max_s = max(self.max_s, max(vals))

    def quantile(self, q: float) -> float | None:
        with self._lock:
            s = sorted(self.samples)
        if not s:
            return None
        return s[min(len(s) - 1, int(q * len(s)))]


def lags_since(now: float, records: Sequence[InboxRecord]) -> list[float]:
    """``[now - rec.received_at for rec in records]`` in one C-speed pass (the lags a
    shipper or reader hands :meth:`LagStats.add_many`)."""
    return list(map(sub, repeat(now, len(records)), map(_RECEIVED_AT, records)))


def verify_segment(stream: str, name: str, manifest_raw: bytes, data: bytes,
                   expect_first: int | None = None) -> tuple[dict, list[InboxRecord]]:
    """Check a downloaded segment against its manifest; decode its records.
    Raises :class:`SegmentRejected` naming every problem."""
    problems: list[str] = []
    try:
        m = textdata.json_loads(manifest_raw)
        first, count = int(m["first_index"]), int(m["count"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise SegmentRejected(stream, name, ["manifest is not a valid manifest"]) from None
    parsed = parse_name(name)
    if parsed is None or parsed[0] != "seg" or parsed[1] != first:
        problems.append(f"segment name does not match first_index {first}")
    if expect_first is not None and first != expect_first:
        problems.append(f"gap: expected a segment starting at {expect_first}, found {first}")
    problems += check_manifest(manifest_raw, name, first, count, data)
    res = scan_segment(data, is_last=False)
    if res.status != "clean":
        problems.append(f"frames {res.status} at offset {res.bad_offset}: {res.reason}")
    elif res.count != count:
        problems.append(f"{res.count} frames, manifest says {count}")
    if problems:
        raise SegmentRejected(stream, name, problems)
    try:
        answers = decode_answers(m)  # the home answers the manifest carries (None: none)
    except InvalidInput as exc:
        raise SegmentRejected(stream, name, [f"manifest answers: {exc}"]) from None
    records = []
    add = records.append
    names: dict = {}  # the segment's tenant/region strings, decoded once
    note = (lambda index: None) if answers is None else answers.get
    index = first
    for off, ln in res.spans:
        try:
            add(decode_inbox_span(data, off, ln, names, note(index), index))
        except InvalidInput as exc:
            raise SegmentRejected(stream, name, [f"record {index}: {exc}"]) from None
        index += 1
    return m, records

