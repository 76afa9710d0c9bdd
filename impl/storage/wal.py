"""Segmented, checksummed, append-only write-ahead log (SPEC.md section 12).

Why this module exists: the verifier answers nothing before a request is in
the inbox WAL (INV-WAL-FIRST), and the agent forgets nothing it has not been
told was delivered (outbox, :mod:`flk.impl.agent.outbox`). Both sit on this log.

The module has three layers:

1. **Pure logic** (no I/O, no threads, no clock): record framing
   (:func:`encode_frame`), scanning a segment's bytes (:func:`scan_segment`,
   which classifies a bad tail as *torn* or *corrupt*), file naming
   (:func:`segment_name`, :func:`parse_name`), directory layout
   (:func:`plan_layout`), manifests (:func:`build_manifest`,
   :func:`check_manifest`) and the inbox record codec (:class:`InboxRecord`).
2. **The log** (:class:`SegmentedLog`): carries the logic out through a
   :class:`flk.impl.storage.fs.FileSystem`. It holds locks (it is shared by request
   threads and a commit thread) but starts no thread and reads no clock.
3. **The group-commit driver** (:class:`GroupCommitter`): a thread that fsyncs
   batches of appends (max delay, max batch) and wakes waiters: blocking
   ``wait`` and ``on_durable`` callbacks (the agent outbox uses them).

:func:`inspect_directory` examines a log directory read-only (``flk wal
inspect|verify``).

Frame (little-endian): ``u32 length | u32 crc32(payload) | u32 crc32(first 8
header bytes) | payload``. CRC-32 is the IEEE polynomial of ``zlib.crc32``.
The header checksum means a damaged length field is *detected*, never taken as
a torn tail that would silently drop the records after it.

Recovery on open: every segment is scanned. A bad tail of the *last* segment
is torn (an incomplete header, a valid header whose payload runs past the end
of the file, or an all-zero tail) and is truncated away -- and reported in
``SegmentedLog.recovery``. Anything else (a checksum mismatch anywhere, a torn
tail in a non-last segment, a gap or overlap between segments, a manifest that
does not match its segment) raises :class:`WalCorruption` naming the segment
and the byte offset. No record is ever skipped silently.

Locking (the proof obligations of the driver):

* ``_lock`` guards the in-memory state (next index, write buffer, active
  handle, segment list); every method that touches it holds it briefly.
* ``_sync_lock`` serialises fsyncs and segment changes (roll, seal). Order is
  always ``_sync_lock`` then ``_lock``. ``sync`` flushes under ``_lock``,
  fsyncs under ``_sync_lock`` only -- so appends continue during an fsync --
  and the active handle cannot change during that fsync (changes need
  ``_sync_lock``).
* ``_maint_lock`` serialises compaction and retention. Both touch only sealed
  segments (immutable) and swap the segment list under ``_lock``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import posixpath
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from ..core.errors import InvalidInput
from .fs import FileSystem, OsFileSystem
from .groupcommit import DEFAULT_MAX_BATCH, Closed, GroupCommit, Release

__all__ = [
    "WalError",
    "WalCorruption",
    "encode_frame",
    "scan_segment",
    "ScanResult",
    "segment_name",
    "compact_name",
    "manifest_name",
    "parse_name",
    "plan_layout",
    "build_manifest",
    "check_manifest",
    "SegmentInfo",
    "SegmentedLog",
    "GroupCommitter",
    "InboxRecord",
    "inspect_directory",
    "encode_inbox_record",
    "encode_inbox_records",
    "decode_inbox_record",
    "AnswerNote",
    "encode_answers",
    "decode_answers",
    "with_home",
    "A_STORED",
    "A_DUPLICATE",
    "A_CONFLICT",
    "A_REJECTED",
    "A_UNAVAILABLE",
    "FRAME_OVERHEAD",
    "MAX_PAYLOAD",
    "Layout",
    "manifest_bytes",
    "LOG_SUFFIX",
    "MANIFEST_SUFFIX",
]

# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class WalError(Exception):
    """The log cannot do what was asked (closed, failed fsync, bad argument)."""


class WalCorruption(WalError):
    """Damage that recovery must not paper over. ``offset`` is a byte offset
    in ``segment`` (None for whole-file problems such as a manifest mismatch)."""

    def __init__(self, segment: str, offset: int | None, reason: str) -> None:
        self.segment = segment
        self.offset = offset
        self.reason = reason
        where = segment if offset is None else f"{segment} at byte {offset}"
        super().__init__(f"WAL corruption in {where}: {reason}")


# ---------------------------------------------------------------------------
# Pure logic: framing and scanning
# ---------------------------------------------------------------------------

_HEADER = struct.Struct("<III")
_LEN_CRC = struct.Struct("<II")
FRAME_OVERHEAD = _HEADER.size  # 12 bytes
MAX_PAYLOAD = 64 * 1024 * 1024
_crc32 = zlib.crc32


def encode_frame(payload: bytes) -> bytes:
    """One framed record: length, payload CRC, header CRC, payload."""
    n = len(payload)
    if n > MAX_PAYLOAD:
        raise WalError(f"record of {n} bytes exceeds the {MAX_PAYLOAD}-byte limit")
    head = _LEN_CRC.pack(n, _crc32(payload))
    return head + _crc32(head).to_bytes(4, "little") + payload


@dataclass(frozen=True)
class ScanResult:
    """Outcome of scanning one segment's bytes.

    ``spans`` are ``(payload_offset, payload_length)`` of every valid record in
    order; ``valid_end`` is the byte just past the last valid frame.
    ``status`` is ``"clean"``, ``"torn"`` (a recoverable bad tail starting at
    ``valid_end``) or ``"corrupt"`` (damage at ``bad_offset``)."""

    spans: list[tuple[int, int]]
    valid_end: int
    size: int
    status: str
    bad_offset: int | None = None
    reason: str = ""

    @property
    def count(self) -> int:
        return len(self.spans)


def scan_segment(data: bytes | bytearray | memoryview, is_last: bool) -> ScanResult:
    """Scan framed records. A bad tail counts as torn only if ``is_last``."""
    view = memoryview(data)
    n = len(view)
    spans: list[tuple[int, int]] = []
    o = 0
    unpack = _HEADER.unpack_from
    while o < n:
        if n - o < FRAME_OVERHEAD:
            return _bad(spans, o, n, is_last, torn=True, reason="incomplete frame header")
        length, pcrc, hcrc = unpack(view, o)
        if _crc32(view[o : o + 8]) != hcrc:
            zeros = not any(view[o:])
            return _bad(spans, o, n, is_last, torn=zeros,
                        reason="zero-filled tail" if zeros else "header checksum mismatch")
        if length > MAX_PAYLOAD:
            return _bad(spans, o, n, is_last, torn=False, reason=f"record length {length} over limit")
        start = o + FRAME_OVERHEAD
        end = start + length
        if end > n:
            return _bad(spans, o, n, is_last, torn=True,
                        reason=f"record runs past end of file ({length} bytes, {n - start} present)")
        if _crc32(view[start:end]) != pcrc:
            return _bad(spans, o, n, is_last, torn=False, reason="payload checksum mismatch")
        spans.append((start, length))
        o = end
    return ScanResult(spans, o, n, "clean")


def _bad(spans, o, n, is_last, torn, reason) -> ScanResult:
    if torn and is_last:
        return ScanResult(spans, o, n, "torn", o, reason)
    if torn:
        reason += " (not the last segment, so not a torn tail)"
    return ScanResult(spans, o, n, "corrupt", o, reason)


# ---------------------------------------------------------------------------
# Pure logic: names, layout, manifests
# ---------------------------------------------------------------------------

SEG_PREFIX, COMPACT_PREFIX, LOG_SUFFIX, MANIFEST_SUFFIX = "seg-", "compact-", ".log", ".manifest.json"
MANIFEST_FORMAT = "flk-wal-manifest/1"


def segment_name(first_index: int) -> str:
    """``seg-<20-digit index of its first record>.log``."""
    return f"{SEG_PREFIX}{first_index:020d}{LOG_SUFFIX}"


def compact_name(end_index: int) -> str:
    """``compact-<20-digit index just past its last record>.log`` (a compacted
    prefix: it replaces every record below ``end_index``)."""
    return f"{COMPACT_PREFIX}{end_index:020d}{LOG_SUFFIX}"


def manifest_name(log_name: str) -> str:
    return log_name[: -len(LOG_SUFFIX)] + MANIFEST_SUFFIX


def parse_name(name: str) -> tuple[str, int] | None:
    """``("seg", first)``, ``("compact", end)``, ``("manifest:seg"|"manifest:compact", n)``,
    ``("tmp", 0)`` or None for a name that is not ours."""
    if name.endswith(".tmp"):
        # only our own temp files (a segment, compaction or manifest being written)
        return ("tmp", 0) if name.startswith((SEG_PREFIX, COMPACT_PREFIX)) else None
    for prefix, kind in ((SEG_PREFIX, "seg"), (COMPACT_PREFIX, "compact")):
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix) :]
        for suffix, k in ((LOG_SUFFIX, kind), (MANIFEST_SUFFIX, "manifest:" + kind)):
            digits = rest[: -len(suffix)]
            if rest.endswith(suffix) and len(digits) == 20 and digits.isdigit():
                return (k, int(digits))
    return None


@dataclass
class Layout:
    """What a directory listing means. ``files`` are the live log files in order
    as ``(kind, number, name)``; ``obsolete`` are files to delete (superseded by
    a compaction, leftover temp files, manifests without a log file)."""

    files: list[tuple[str, int, str]] = field(default_factory=list)
    manifests: set[str] = field(default_factory=set)
    obsolete: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)


def plan_layout(names: list[str]) -> Layout:
    """Classify a directory listing. The newest compacted prefix (largest end)
    supersedes every segment starting below its end and every older compaction."""
    lay = Layout()
    segs, compacts, manifests = [], [], []
    for name in sorted(names):
        parsed = parse_name(name)
        if parsed is None:
            lay.foreign.append(name)
        elif parsed[0] == "tmp":
            lay.obsolete.append(name)
        elif parsed[0] == "seg":
            segs.append((parsed[1], name))
        elif parsed[0] == "compact":
            compacts.append((parsed[1], name))
        else:
            manifests.append(name)
    cut = -1
    if compacts:
        end, cname = max(compacts)
        cut = end
        lay.files.append(("compact", end, cname))
        lay.obsolete += [n for e, n in compacts if n != cname]
    for first, name in segs:
        if first < cut:
            lay.obsolete.append(name)
        else:
            lay.files.append(("seg", first, name))
    live = {n for _, _, n in lay.files}
    for m in manifests:
        log = m[: -len(MANIFEST_SUFFIX)] + LOG_SUFFIX
        if log in live:
            lay.manifests.add(m)
        else:
            lay.obsolete.append(m)
    lay.obsolete.sort()
    return lay


def build_manifest(name: str, first_index: int, count: int, data: bytes,
                   sha256_hex: str | None = None) -> dict:
    """The manifest of a segment. ``sha256_hex`` may be given when the caller
    hashed ``data`` as it was written (``data`` may then be just its length)."""
    nbytes = data if isinstance(data, int) else len(data)
    return {
        "format": MANIFEST_FORMAT,
        "segment": name,
        "first_index": first_index,
        "last_index": first_index + count - 1,
        "count": count,
        "bytes": nbytes,
        "sha256": sha256_hex if sha256_hex is not None else hashlib.sha256(data).hexdigest(),
    }


def manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, sort_keys=True, indent=1) + "\n").encode()


def check_manifest(raw: bytes, name: str, first_index: int, count: int, data: bytes) -> list[str]:
    """Every way ``raw`` (a manifest file's bytes) disagrees with the segment."""
    try:
        m = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return [f"manifest is not JSON ({exc.__class__.__name__})"]
    if not isinstance(m, dict):
        return ["manifest is not a JSON object"]
    want = build_manifest(name, first_index, count, data)
    problems = []
    for key in ("format", "segment", "first_index", "last_index", "count", "bytes", "sha256"):
        if m.get(key) != want[key]:
            problems.append(f"manifest {key} is {m.get(key)!r}, segment has {want[key]!r}")
    return problems


# ---------------------------------------------------------------------------
# Pure logic: the inbox record
# ---------------------------------------------------------------------------

_INBOX_VERSION = 1
_INBOX_HEAD = struct.Struct("<BHHd")


@dataclass(frozen=True)
class InboxRecord:
    """One request as received: tenant, receive time (seconds since the epoch,
    passed in), region, and the request body verbatim.

    ``home`` and ``index`` are not part of the record's bytes: a reader of a shipped
    segment (:func:`flk.impl.replication.crr.verify_segment`) sets ``index`` (its WAL
    index) and ``home`` (the :class:`AnswerNote` its home region's manifest of the
    segment carries for it, or None)."""

    tenant: str
    received_at: float
    region: str
    body: bytes
    home: AnswerNote | None = field(default=None, compare=False, repr=False)
    index: int = field(default=-1, compare=False, repr=False)


def encode_inbox_record(rec: InboxRecord) -> bytes:
    """``u8 version=1 | u16 len(tenant) | u16 len(region) | f64 received_at |
    tenant UTF-8 | region UTF-8 | body`` (little-endian; body to the end)."""
    if not isinstance(rec.tenant, str) or not isinstance(rec.region, str):
        raise InvalidInput("inbox_record", "tenant and region must be strings")
    if not isinstance(rec.body, (bytes, bytearray, memoryview)):
        raise InvalidInput("inbox_record.body", "body must be bytes")
    try:
        t, r = rec.tenant.encode("utf-8"), rec.region.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("inbox_record", "tenant/region are not valid Unicode") from None
    if len(t) > 0xFFFF or len(r) > 0xFFFF:
        raise InvalidInput("inbox_record", "tenant/region longer than 65535 bytes")
    ts = rec.received_at
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise InvalidInput("inbox_record.received_at", "must be a finite number")
    return _INBOX_HEAD.pack(_INBOX_VERSION, len(t), len(r), float(ts)) + t + r + bytes(rec.body)


def encode_inbox_records(records) -> list[bytes]:
    """:func:`encode_inbox_record` of each of ``records`` (objects with ``tenant``,
    ``received_at``, ``region``, ``body``), the same bytes; records with one tenant,
    receive time and region (a batch) share one encoded head."""
    out = []
    heads: dict[tuple[str, float, str], bytes] = {}
    for rec in records:
        tenant, received_at, region, body = rec.tenant, rec.received_at, rec.region, rec.body
        # exact types only, and no zero: 0.0 == -0.0 and 1 == 1.0 == True would share a key
        if type(body) is bytes and type(received_at) is float and received_at != 0.0 \
                and type(tenant) is str and type(region) is str:
            key = (tenant, received_at, region)
            head = heads.get(key)
            if head is None:
                head = heads[key] = encode_inbox_record(InboxRecord(tenant, received_at, region, b""))
            out.append(head + body)
        else:
            out.append(encode_inbox_record(InboxRecord(tenant, received_at, region, body)))
    return out


def decode_inbox_record(payload: bytes) -> InboxRecord:
    head = _INBOX_HEAD.size
    if len(payload) < head:
        raise InvalidInput("inbox_record", "too short")
    version, lt, lr, ts = _INBOX_HEAD.unpack_from(payload, 0)
    if version != _INBOX_VERSION:
        raise InvalidInput("inbox_record", f"unknown version {version}")
    if len(payload) < head + lt + lr:
        raise InvalidInput("inbox_record", "truncated tenant/region")
    if not math.isfinite(ts):
        raise InvalidInput("inbox_record.received_at", "not finite")
    try:
        tenant = payload[head : head + lt].decode("utf-8")
        region = payload[head + lt : head + lt + lr].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("inbox_record", "tenant/region not UTF-8") from None
    return InboxRecord(tenant, ts, region, bytes(payload[head + lt + lr :]))


# The home answer of an inbox record (SPEC.md section 12.4): what this region answered the
# request recorded at ``index``. A batch driver hands its batch's answers to
# SegmentedLog.note_answers; the segment's manifest carries them (``answers``), so they are
# shipped with the segment they describe (the batch driver holds the shipper's seal lock and
# the segment rolls only between batches).
A_STORED = 0  # its outcome was stored (200/202, first write): a peer replays it
A_DUPLICATE = 1  # the same payload was held already (replayed answer): a peer replays it (a no-op)
A_CONFLICT = 2  # 409: another payload was held (``digest``): a peer must not write it
A_REJECTED = 3  # 4xx (invalid, unauthenticated, refused by policy): nothing was stored anywhere
A_UNAVAILABLE = 4  # 503 (the dedup store did not answer): undecided, a peer decides by itself
ANSWER_CODES = "SDCRU"  # one character per answer in a manifest's ``answers.codes``; "-": none
_CODE_OF = {c: k for k, c in enumerate(ANSWER_CODES)}
_STATUS_OF = {A_STORED: 200, A_DUPLICATE: 200, A_CONFLICT: 409, A_REJECTED: 400, A_UNAVAILABLE: 503}


class AnswerNote(NamedTuple):
    """The home region's answer to the inbox record at ``index`` (see ``A_*``);
    ``digest``: the held payload digest of a conflict (``A_CONFLICT``), else ``""``."""

    index: int
    answer: int
    status: int
    digest: str = ""

    @property
    def refused(self) -> bool:
        """The home did not accept this record: no region may store it."""
        return self.answer in (A_CONFLICT, A_REJECTED)


def encode_answers(first_index: int, count: int, notes: dict[int, AnswerNote]) -> dict:
    """The ``answers`` object of a segment's manifest: ``codes``, one character per record
    (``ANSWER_CODES``, ``-`` where no answer is known), and ``held``, the held payload
    digest of each conflict by its offset in the segment."""
    codes, held = [], {}
    for k in range(count):
        note = notes.get(first_index + k)
        if note is None:
            codes.append("-")
            continue
        codes.append(ANSWER_CODES[note.answer])
        if note.answer == A_CONFLICT and note.digest:
            held[str(k)] = note.digest
    return {"codes": "".join(codes), "held": held}


def decode_answers(manifest: dict) -> dict[int, AnswerNote] | None:
    """The home answers a manifest carries (None: none -- a segment written before answers
    existed); a malformed ``answers`` raises :class:`flk.impl.core.errors.InvalidInput`."""
    raw = manifest.get("answers")
    if raw is None:
        return None
    try:
        first, count = int(manifest["first_index"]), int(manifest["count"])
        codes, held = raw["codes"], raw.get("held", {})
        ok = isinstance(codes, str) and len(codes) == count and isinstance(held, dict)
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise InvalidInput("manifest.answers", "not one answer code per record")
    out = {}
    for k, c in enumerate(codes):
        if c == "-":
            continue
        answer = _CODE_OF.get(c)
        if answer is None:
            raise InvalidInput("manifest.answers", f"unknown answer code {c!r}")
        digest = held.get(str(k), "") if answer == A_CONFLICT else ""
        if not isinstance(digest, str) or len(digest) > 128:
            raise InvalidInput("manifest.answers", "held digest is not a short string")
        out[first + k] = AnswerNote(first + k, answer, _STATUS_OF[answer], digest)
    return out


def with_home(rec: InboxRecord, note: AnswerNote | None, index: int) -> InboxRecord:
    """``rec`` as read from a shipped segment: its WAL ``index`` and its home answer."""
    return InboxRecord(rec.tenant, rec.received_at, rec.region, rec.body, note, index)


# ---------------------------------------------------------------------------
# Read-only inspection (``flk wal inspect|verify``)
# ---------------------------------------------------------------------------


def inspect_directory(directory: str, fs: FileSystem | None = None) -> dict:
    """Examine a log directory WITHOUT changing it.

    Returns ``{"directory", "ok", "segments": [...], "records", "first_index",
    "next_index", "problems": [{"segment", "offset", "reason"}], "warnings":
    [...], "obsolete": [...], "foreign": [...]}``. ``problems`` are what
    :class:`SegmentedLog` would refuse to open (checksum damage, a bad tail in a
    non-last segment, gaps, manifest mismatches); ``warnings`` are what it
    would repair (a torn tail of the last segment, a full segment not yet
    sealed, leftover files). ``quarantine`` lists the records replay set aside
    as poison (:mod:`flk.impl.storage.quarantine`; without their bytes).
    Raises ``FileNotFoundError``/``NotADirectoryError``."""
    fs = fs if fs is not None else OsFileSystem()
    if not fs.exists(directory):
        raise FileNotFoundError(directory)
    if not fs.isdir(directory):
        raise NotADirectoryError(directory)
    lay = plan_layout(fs.listdir(directory))
    out: dict = {"directory": directory, "segments": [], "problems": [], "warnings": [],
                 "obsolete": list(lay.obsolete), "foreign": list(lay.foreign)}
    for name in lay.obsolete:
        out["warnings"].append(f"{name}: leftover file (removed on next open)")
    expected: int | None = None
    for pos, (kind, number, name) in enumerate(lay.files):
        is_last = pos == len(lay.files) - 1
        data = fs.read(posixpath.join(directory, name))
        res = scan_segment(data, is_last)
        first = number if kind == "seg" else number - res.count
        info = {"name": name, "kind": kind, "first_index": first, "count": res.count,
                "last_index": first + res.count - 1 if res.count else None,
                "bytes": len(data), "status": res.status, "sealed": False, "manifest": "none"}
        if res.status == "corrupt":
            out["problems"].append({"segment": name, "offset": res.bad_offset, "reason": res.reason})
        elif res.status == "torn":
            out["warnings"].append(f"{name}: torn tail at byte {res.valid_end} "
                                   f"({res.size - res.valid_end} bytes, {res.reason}); truncated on next open")
        if expected is not None and res.status != "corrupt" and first != expected:
            what = "gap before" if first > expected else "overlap at"
            out["problems"].append({"segment": name, "offset": 0,
                                    "reason": f"{what} this segment: expected first index {expected}, file starts at {first}"})
        mname = manifest_name(name)
        if mname in lay.manifests:
            info["sealed"] = True
            probs = check_manifest(fs.read(posixpath.join(directory, mname)), name, first, res.count, bytes(data))
            if res.status != "clean":
                probs.append(f"sealed segment is {res.status}")
            info["manifest"] = "ok" if not probs else "mismatch"
            for p in probs:
                out["problems"].append({"segment": name, "offset": None, "reason": p})
        elif not is_last:
            out["warnings"].append(f"{name}: not the last segment but has no manifest (sealed on next open)")
        out["segments"].append(info)
        expected = first + res.count if res.status != "corrupt" else None
    segs = out["segments"]
    out["records"] = sum(s["count"] for s in segs)
    out["first_index"] = segs[0]["first_index"] if segs else None
    out["next_index"] = segs[-1]["first_index"] + segs[-1]["count"] if segs else None
    out["ok"] = not out["problems"]
    out["quarantine"] = _inspect_quarantine(directory, fs, out)
    return out


def _inspect_quarantine(directory: str, fs: FileSystem, out: dict) -> dict:
    from .quarantine import FILE_NAME, public_view, read_entries

    if FILE_NAME in out["foreign"]:
        out["foreign"].remove(FILE_NAME)
    entries, unreadable = read_entries(posixpath.join(directory, FILE_NAME), fs)
    if entries:
        out["warnings"].append(f"{FILE_NAME}: {len(entries)} quarantined record(s) replay skipped as poison")
    if unreadable:
        out["warnings"].append(f"{FILE_NAME}: {unreadable} unreadable line(s)")
    return {"file": FILE_NAME, "count": len(entries), "unreadable_lines": unreadable,
            "entries": [public_view(e) for e in entries]}


# ---------------------------------------------------------------------------
# The log (I/O through a FileSystem)
# ---------------------------------------------------------------------------


@dataclass
class SegmentInfo:
    """One log file. ``first_index`` .. ``first_index + count - 1`` are its
    records; ``sealed`` means it is immutable and has a manifest."""

    name: str
    kind: str  # "seg" | "compact"
    first_index: int
    count: int
    bytes: int
    sealed: bool

    @property
    def end_index(self) -> int:
        return self.first_index + self.count


class SegmentedLog:
    """An append-only log of byte records, split into segment files.

    ``append(payload) -> index`` buffers (not durable); ``sync()`` makes every
    earlier append durable; ``is_durable(i)`` / ``durable_index`` (every index
    below it is durable). Indexes are 0-based and never reused. The active
    segment is sealed (fsync, SHA-256 manifest, read-only) and a new one begun
    once it reaches ``segment_bytes``. Thread-safe; see the module docstring
    for the locking rules.
    """

    def __init__(
        self,
        directory: str,
        fs: FileSystem | None = None,
        segment_bytes: int = 16 * 1024 * 1024,
        flush_bytes: int = 256 * 1024,
        verify_manifests: bool = True,
    ) -> None:
        if segment_bytes < FRAME_OVERHEAD + 1:
            raise WalError("segment_bytes too small")
        self.dir = directory
        self.fs: FileSystem = fs if fs is not None else OsFileSystem()
        self.segment_bytes = segment_bytes
        self.flush_bytes = flush_bytes
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._maint_lock = threading.Lock()
        self._buf = bytearray()
        self._failed: BaseException | None = None
        self._closed = False
        self._listeners: list = []
        self._answers: dict[int, AnswerNote] = {}  # home answers of the active segment's records
        self.recovery: dict = {}
        self._open(verify_manifests)

    # -- recovery -----------------------------------------------------------
    def _path(self, name: str) -> str:
        return posixpath.join(self.dir, name)

    def _open(self, verify_manifests: bool) -> None:
        fs = self.fs
        if fs.exists(self.dir) and not fs.isdir(self.dir):
            raise WalError(f"{self.dir!r} exists and is not a directory")
        fs.makedirs(self.dir)
        lay = plan_layout(fs.listdir(self.dir))
        removed = []
        for name in lay.obsolete:
            fs.remove(self._path(name))
            removed.append(name)
        if removed:
            fs.fsync_dir(self.dir)
        segments: list[SegmentInfo] = []
        torn = None
        expected_first: int | None = None
        for pos, (kind, number, name) in enumerate(lay.files):
            is_last = pos == len(lay.files) - 1
            data = fs.read(self._path(name))
            res = scan_segment(data, is_last)
            if res.status == "corrupt":
                raise WalCorruption(name, res.bad_offset, res.reason)
            first = number if kind == "seg" else number - res.count
            if first < 0:
                raise WalCorruption(name, None, f"compacted prefix holds {res.count} records, more than its end {number}")
            if expected_first is not None and first != expected_first:
                what = "gap before" if first > expected_first else "overlap at"
                raise WalCorruption(name, 0, f"{what} this segment: expected first index {expected_first}, file starts at {first}")
            size = res.valid_end
            mname = manifest_name(name)
            sealed = mname in lay.manifests
            if sealed and res.status == "torn":
                raise WalCorruption(name, res.bad_offset, res.reason + " (in a sealed segment)")
            if sealed and verify_manifests:
                problems = check_manifest(fs.read(self._path(mname)), name, first, res.count, bytes(data))
                if problems:
                    raise WalCorruption(name, None, "; ".join(problems))
            if res.status == "torn":
                torn = {"segment": name, "offset": res.valid_end, "dropped_bytes": res.size - res.valid_end,
                        "reason": res.reason}
                fs.truncate(self._path(name), res.valid_end)
            segments.append(SegmentInfo(name, kind, first, res.count, size, sealed))
            expected_first = first + res.count
        self.recovery = {"removed": removed, "torn_tail": torn, "segments": len(segments)}
        # Seal every non-last segment that lacks a manifest (a crash between
        # fsyncing a full segment and writing its manifest).
        for seg in segments[:-1]:
            if not seg.sealed:
                self._write_manifest(seg)
        if segments and segments[-1].kind == "seg" and not segments[-1].sealed:
            active = segments[-1]
        else:
            start = segments[-1].end_index if segments else 0
            active = SegmentInfo(segment_name(start), "seg", start, 0, 0, False)
            segments.append(active)
        self._segments = segments
        self._active_sha = hashlib.sha256(fs.read(self._path(active.name))[: active.bytes]
                                          if active.count else b"")
        self._handle = fs.open_append(self._path(active.name))
        if active.count == 0:
            fs.fsync_dir(self.dir)
        self._handle.fsync()
        self._next = active.end_index
        self._durable = self._next
        self._durable_bytes = active.bytes  # bytes of the active segment known to be on disk

    def _write_manifest(self, seg: SegmentInfo, sha256_hex: str | None = None) -> None:
        if sha256_hex is None:
            m = build_manifest(seg.name, seg.first_index, seg.count, self.fs.read(self._path(seg.name))[: seg.bytes])
        else:
            m = build_manifest(seg.name, seg.first_index, seg.count, seg.bytes, sha256_hex)
        answers = self._answers
        if answers:  # the home answers of this segment's records travel in its manifest
            end = seg.end_index
            mine = {i: n for i, n in answers.items() if seg.first_index <= i < end}
            if mine:
                m["answers"] = encode_answers(seg.first_index, seg.count, mine)
            self._answers = {i: n for i, n in answers.items() if i >= end}
        self.fs.write_atomic(self._path(manifest_name(seg.name)), manifest_bytes(m))
        self.fs.chmod_readonly(self._path(seg.name))
        seg.sealed = True

    # -- appending ------------------------------------------------------------
    def _check_ok(self) -> None:
        if self._closed:
            raise WalError("log is closed")
        if self._failed is not None:
            raise WalError(f"log failed earlier (recover() or reopen it): {self._failed}")

    def append(self, payload: bytes) -> int:
        """Append one record; returns its index. Not durable until ``sync``."""
        frame = encode_frame(payload)
        with self._lock:
            self._check_ok()
            idx = self._next
            self._next = idx + 1
            self._buf += frame
            active = self._segments[-1]
            active.count += 1
            active.bytes += len(frame)
            if len(self._buf) >= self.flush_bytes:
                self._flush_locked()
            roll = active.bytes >= self.segment_bytes
        if roll and self._roll(only_if_full=True) is not None:
            self._notify_durable()
        return idx

    def append_many(self, payloads: list[bytes], roll: bool = True) -> int:
        """Append several records; returns the index of the first. ``roll=False``: do not
        seal the segment after them even when it is full (a batch driver whose batch's
        answers must reach the segment's manifest calls :meth:`roll_if_full` before the
        batch instead)."""
        frames = [encode_frame(p) for p in payloads]
        data = b"".join(frames)
        with self._lock:
            self._check_ok()
            first = self._next
            self._next += len(frames)
            active = self._segments[-1]
            self._buf += data
            active.bytes += len(data)
            active.count += len(frames)
            if len(self._buf) >= self.flush_bytes:
                self._flush_locked()
            roll = roll and active.bytes >= self.segment_bytes
        if roll and self._roll(only_if_full=True) is not None:
            self._notify_durable()
        return first

    def note_answers(self, notes) -> None:
        """Remember the home answers (:class:`AnswerNote`) of records of the active segment;
        its manifest carries them when it is sealed (answers of sealed records are
        dropped). In memory only: after a crash the start-up replay notes them again."""
        with self._lock:
            first = self._segments[-1].first_index
            for note in notes:
                if note.index >= first:
                    self._answers[note.index] = note

    def roll_if_full(self) -> SegmentInfo | None:
        """Seal the active segment if it reached ``segment_bytes`` (what an append does
        after itself unless told not to); the sealed segment or None."""
        sealed = self._roll(only_if_full=True)
        if sealed is not None:
            self._notify_durable()
        return sealed

    def _flush_locked(self) -> None:
        if self._buf:
            chunk = bytes(self._buf)
            try:
                self._handle.write(chunk)
            except OSError as exc:
                self._failed = exc
                raise WalError(f"write failed: {exc}") from exc
            self._active_sha.update(chunk)  # the seal's SHA-256, without reading the file back
            self._buf.clear()

    def sync(self) -> int:
        """Make every record appended so far durable; returns ``durable_index``."""
        with self._sync_lock:
            with self._lock:
                self._check_ok()
                target = self._next
                if target <= self._durable:
                    return self._durable
                self._flush_locked()
                handle = self._handle
                mark = self._segments[-1].bytes  # the file's size now (the buffer is flushed)
            try:
                handle.fsync()
            except OSError as exc:
                # After a failed fsync the kernel may have dropped the dirty
                # pages: nothing written since the last good fsync is known to
                # be on disk. The log refuses further work (reopen recovers).
                with self._lock:
                    self._failed = exc
                raise WalError(f"fsync failed: {exc}") from exc
            with self._lock:
                if target > self._durable:
                    self._durable = target
                    self._durable_bytes = mark
                durable = self._durable
        self._notify_durable()
        return durable

    def add_durable_listener(self, fn) -> None:
        """``fn()`` is called (outside the log's locks) whenever ``durable_index``
        may have advanced -- by ``sync``, a seal or a roll. It must be quick."""
        self._listeners.append(fn)

    def remove_durable_listener(self, fn) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def _notify_durable(self) -> None:
        for fn in list(self._listeners):
            fn()

    @property
    def durable_index(self) -> int:
        """Every record with an index below this is durable."""
        return self._durable

    def is_durable(self, index: int) -> bool:
        return index < self._durable

    @property
    def next_index(self) -> int:
        return self._next

    @property
    def first_index(self) -> int:
        with self._lock:
            return self._segments[0].first_index

    @property
    def failed(self) -> BaseException | None:
        return self._failed

    # -- sealing ----------------------------------------------------------------
    def _roll(self, only_if_full: bool) -> SegmentInfo | None:
        with self._sync_lock:
            with self._lock:
                self._check_ok()
                active = self._segments[-1]
                if active.count == 0 or (only_if_full and active.bytes < self.segment_bytes):
                    return None
                self._flush_locked()
                try:
                    self._handle.fsync()
                except OSError as exc:
                    self._failed = exc
                    raise WalError(f"fsync failed: {exc}") from exc
                self._durable = max(self._durable, self._next)
                self._durable_bytes = active.bytes
                try:
                    self._handle.close()
                    self._write_manifest(active, self._active_sha.hexdigest())
                    self._active_sha = hashlib.sha256()
                    new = SegmentInfo(segment_name(active.end_index), "seg", active.end_index, 0, 0, False)
                    self._handle = self.fs.open_append(self._path(new.name))
                    self.fs.fsync_dir(self.dir)
                except OSError as exc:  # a full disk while sealing: recover() finishes the roll
                    self._failed = exc
                    raise WalError(f"sealing {active.name} failed: {exc}") from exc
                self._segments.append(new)
                self._durable_bytes = 0
                return active

    def seal(self) -> SegmentInfo | None:
        """Seal the active segment now (if it holds records): fsync, manifest,
        read-only, and begin a new one. Returns the sealed segment or None."""
        sealed = self._roll(only_if_full=False)
        if sealed is not None:
            self._notify_durable()
        return sealed

    def segments(self) -> list[SegmentInfo]:
        with self._lock:
            return [SegmentInfo(**s.__dict__) for s in self._segments]

    def sealed_segments(self) -> list[SegmentInfo]:
        return [s for s in self.segments() if s.sealed]

    # -- reading ------------------------------------------------------------------
    def records(self, from_index: int = 0) -> Iterator[tuple[int, bytes]]:
        """Every record with index >= ``from_index`` as ``(index, payload)``, in
        order, as of the call (later appends are not included)."""
        with self._lock:
            self._check_ok()
            self._flush_locked()
            snap = [(s.name, s.first_index, s.count, s.bytes) for s in self._segments]
        for name, first, count, nbytes in snap:
            if first + count <= from_index or count == 0:
                continue
            try:
                data = self.fs.read(self._path(name))[:nbytes]
            except FileNotFoundError:
                raise WalError(f"segment {name} was removed (retention/compaction) during iteration") from None
            res = scan_segment(data, is_last=False)
            if res.status != "clean" or res.count != count:
                raise WalCorruption(name, res.bad_offset, res.reason or "record count changed under the reader")
            for k, (off, ln) in enumerate(res.spans):
                idx = first + k
                if idx >= from_index:
                    yield idx, data[off : off + ln]

    # -- retention and compaction -------------------------------------------------
    def drop_sealed_before(self, index: int) -> list[str]:
        """Delete sealed segments all of whose records are below ``index``
        (oldest first, each removal fsynced). Never touches the active segment."""
        dropped = []
        with self._maint_lock:
            while True:
                with self._lock:
                    s = self._segments[0]
                    if len(self._segments) < 2 or not s.sealed or s.end_index > index:
                        break
                    self._segments.pop(0)
                self.fs.remove(self._path(s.name))
                self.fs.fsync_dir(self.dir)
                self.fs.remove(self._path(manifest_name(s.name)))
                self.fs.fsync_dir(self.dir)
                dropped.append(s.name)
        return dropped

    def compact_prefix(self, end_index: int, payloads: list[bytes]) -> SegmentInfo:
        """Atomically replace every record below ``end_index`` by ``payloads``,
        which take the indexes ``end_index - len(payloads) .. end_index - 1``.

        ``end_index`` must be the first index of a segment after a sealed one
        (call :meth:`seal` first) and ``len(payloads)`` at most the number of
        records replaced. Crash-safe: the new file is written under a temp
        name, fsynced, renamed to ``compact-<end>.log`` and the directory
        fsynced -- that rename is the commit point; on open a compacted prefix
        supersedes every file below its end. Appends continue meanwhile (they
        go to segments at or above ``end_index``, which are untouched)."""
        frames = b"".join(encode_frame(p) for p in payloads)
        with self._maint_lock:
            with self._lock:
                self._check_ok()
                cut = next((i for i, s in enumerate(self._segments) if s.first_index == end_index), None)
                if cut is None or cut == 0 or not all(s.sealed for s in self._segments[:cut]):
                    raise WalError(f"end_index {end_index} is not the start of a segment after sealed ones")
                old = list(self._segments[:cut])
                if old[0].name == compact_name(end_index):
                    raise WalError(f"nothing to compact below {end_index}")
                if len(payloads) > end_index - old[0].first_index:
                    raise WalError("compaction would hold more records than it replaces")
            name = compact_name(end_index)
            path = self._path(name)
            tmp = path + ".tmp"
            if self.fs.exists(tmp):
                self.fs.remove(tmp)
            h = self.fs.open_append(tmp)
            try:
                h.write(frames)
                h.fsync()
            finally:
                h.close()
            self.fs.rename(tmp, path)
            self.fs.fsync_dir(self.dir)  # commit point
            seg = SegmentInfo(name, "compact", end_index - len(payloads), len(payloads), len(frames), False)
            self._write_manifest(seg)
            with self._lock:
                self._segments[:cut] = [seg]
            for s in old:
                if s.name == name:
                    continue
                self.fs.remove(self._path(s.name))
                if self.fs.exists(self._path(manifest_name(s.name))):
                    self.fs.remove(self._path(manifest_name(s.name)))
            self.fs.fsync_dir(self.dir)
            return SegmentInfo(**seg.__dict__)

    # -- recovery after a failed write or fsync ------------------------------------------
    def recover(self, probe_bytes: int = 64 * 1024) -> dict:
        """Accept appends again after a failed write or fsync (ENOSPC, EIO), without a
        restart; raises :class:`WalError` (the log stays failed) while the disk still
        refuses. Returns ``{"recovered", "dropped_records", "segment"}``.

        Every record below ``durable_index`` (every acknowledged one) is kept; every
        record above it was never acknowledged (its waiters failed) and is dropped:
        the active segment is cut back to the byte its last good fsync covered --
        so no page the kernel may have lost after the failed fsync stays in the
        file -- checked, and appending resumes there. The indexes of the dropped
        records are given out again. A probe first writes, fsyncs and removes
        ``probe_bytes`` in the directory, so a disk that is still full fails
        here, not on the next acknowledged request."""
        with self._sync_lock, self._lock:
            if self._closed:
                raise WalError("log is closed")
            if self._failed is None:
                return {"recovered": False, "dropped_records": 0, "segment": self._segments[-1].name}
            with contextlib.suppress(OSError):
                self._handle.close()
            try:
                self._probe_space(probe_bytes)
                self._settle_seal(self._segments[-1])
                active, data = self._cut_active()
                handle = self.fs.open_append(self._path(active.name))
                handle.fsync()
                self.fs.fsync_dir(self.dir)
            except OSError as exc:
                self._failed = exc
                raise WalError(f"recovery failed: {exc}") from exc
            dropped = self._next - self._durable
            self._handle = handle
            self._buf.clear()
            self._active_sha = hashlib.sha256(data)
            self._next = self._durable
            self._failed = None
            return {"recovered": True, "dropped_records": dropped, "segment": active.name}

    def _probe_space(self, nbytes: int) -> None:
        probe = self._path(SEG_PREFIX + "probe.tmp")  # a leftover is removed on the next open
        handle = self.fs.open_append(probe)
        try:
            handle.write(b"\0" * max(0, nbytes))
            handle.fsync()
        finally:
            handle.close()
            with contextlib.suppress(OSError):
                self.fs.remove(probe)

    def _settle_seal(self, active: SegmentInfo) -> None:
        """A roll that failed half-way: a manifest written for the whole active
        segment makes it sealed (the roll is finished below); any other leftover
        manifest is removed."""
        mpath = self._path(manifest_name(active.name))
        if active.sealed or not self.fs.exists(mpath):
            return
        data = self.fs.read(self._path(active.name))
        if active.bytes == self._durable_bytes == len(data) and active.count and not check_manifest(
                self.fs.read(mpath), active.name, active.first_index, active.count, data):
            self.fs.chmod_readonly(self._path(active.name))
            active.sealed = True
        else:
            self.fs.remove(mpath)
            self.fs.fsync_dir(self.dir)

    def _cut_active(self) -> tuple[SegmentInfo, bytes]:
        """Cut the active segment back to its durable prefix (or begin the next
        segment after a sealed one); returns it and its bytes."""
        active = self._segments[-1]
        if active.sealed:
            new = SegmentInfo(segment_name(active.end_index), "seg", active.end_index, 0, 0, False)
            if self.fs.exists(self._path(new.name)):
                self.fs.truncate(self._path(new.name), 0)
            self._segments.append(new)
            self._durable_bytes = 0
            return new, b""
        keep = self._durable - active.first_index
        self.fs.truncate(self._path(active.name), self._durable_bytes)
        data = self.fs.read(self._path(active.name))
        res = scan_segment(data, is_last=True)
        if res.status != "clean" or res.count != keep or len(data) != self._durable_bytes:
            raise WalCorruption(active.name, res.bad_offset,
                                f"after cutting back to the last fsync ({self._durable_bytes} bytes, {keep} records) "
                                f"the segment holds {res.count} records, status {res.status}")
        active.count, active.bytes = keep, self._durable_bytes
        return active, data

    def segment_of(self, index: int) -> str | None:
        """The name of the segment that holds record ``index`` (None if none does)."""
        with self._lock:
            for seg in self._segments:
                if seg.first_index <= index < seg.end_index:
                    return seg.name
        return None

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self._failed is None:
                self.sync()
        finally:
            with self._lock:
                self._closed = True
                self._handle.close()

    def __enter__(self) -> SegmentedLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------
# The group-commit driver
# ---------------------------------------------------------------------------


class GroupCommitter:
    """A thread that fsyncs batches of appends and wakes whoever waits.

    When to sync and whom a sync releases is decided by the pure
    :class:`flk.impl.storage.groupcommit.GroupCommit` (max delay, max batch,
    release only after a covering fsync, failure fails everyone); this class
    carries it out with one thread, a condition variable and ``clock`` (the
    wall clock by default).
    """

    def __init__(self, log: SegmentedLog, max_delay_s: float = 0.002, max_batch: int = DEFAULT_MAX_BATCH,
                 clock=time.monotonic) -> None:
        if max_delay_s < 0 or max_batch < 1:
            raise WalError("max_delay_s must be >= 0 and max_batch >= 1")
        self.log = log
        self.max_delay_s = max_delay_s
        self.max_batch = max_batch
        self._clock = clock
        self._cond = threading.Condition()
        self._machine = GroupCommit(max_delay_s, max_batch, durable=log.durable_index)
        self._machine.append(log.next_index - 1, clock())
        self._stop = False  # close() asked the thread to finish (after a last sync)
        self._finished = False  # the thread has ended: nobody will sync for waiters
        self._error: BaseException | None = None
        self.syncs = 0  # syncs this committer ran
        log.add_durable_listener(self._durable_advanced)
        self._thread = threading.Thread(target=self._run, name="wal-group-commit", daemon=True)
        self._thread.start()

    # -- producer side ------------------------------------------------------------
    def append(self, payload: bytes) -> int:
        """Append (not yet durable) and nudge the commit thread."""
        idx = self.log.append(payload)
        self._kick(idx)
        return idx

    def append_many(self, payloads: list[bytes]) -> int:
        first = self.log.append_many(payloads)
        self._kick(first + len(payloads) - 1)
        return first

    def notify_appended(self) -> None:
        """Tell the commit thread that records were appended to the log
        directly (``append``/``append_many`` here do it themselves)."""
        self._kick(self.log.next_index - 1)

    def _kick(self, last_index: int) -> None:
        with self._cond:
            if self._machine.append(last_index, self._clock()):
                self._cond.notify_all()

    def wait(self, index: int, timeout: float | None = None) -> None:
        """Block until record ``index`` is durable. Raises WalError if the log
        failed, TimeoutError on timeout."""
        with self._cond:
            if self._machine.append(self.log.next_index - 1, self._clock()):  # appended behind our back
                self._cond.notify_all()
            ok = self._cond.wait_for(
                lambda: self.log.is_durable(index) or self._error is not None or self._finished, timeout)
            if self._error is not None and not self.log.is_durable(index):
                raise WalError(f"group commit failed: {self._error}")
            if not ok:
                raise TimeoutError(f"record {index} not durable after {timeout}s")
            if not self.log.is_durable(index):
                raise WalError("group committer is closed; the record is not durable")

    def append_and_wait(self, payload: bytes, timeout: float | None = None) -> int:
        idx = self.append(payload)
        self.wait(idx, timeout)
        return idx

    def _register(self, index: int, callback) -> Release | None:
        """Queue a callback waiter; returns its release when the outcome is known now."""
        with self._cond:
            if self._machine.append(self.log.next_index - 1, self._clock()):  # appended behind our back
                self._cond.notify_all()
            return self._machine.wait(index, callback, self._clock())

    def _error_for(self, release: Release) -> BaseException | None:
        if release.error is None:
            return None
        if isinstance(release.error, Closed):
            return WalError("group committer is closed")
        return WalError(f"group commit failed: {release.error}")

    def _fire(self, releases: list[Release]) -> None:
        """Settle callback waiters outside the lock."""
        for release in releases:
            release.waiter(self._error_for(release))

    def on_durable(self, index: int, callback) -> None:
        """Call ``callback(error_or_None)`` (from the thread that made it
        durable) once ``index`` is durable or the log failed; at once if it
        already is. It must be quick and must not call into the log."""
        release = self._register(index, callback)
        if release is not None:
            callback(self._error_for(release))

    def _durable_advanced(self) -> None:
        # Someone made records durable (our own sync, or a seal/roll/sync by
        # another caller): release whoever that covers.
        with self._cond:
            ready = self._machine.durable_advanced(self.log.durable_index, self._clock())
            self._cond.notify_all()
        self._fire(ready)

    # -- the commit thread ----------------------------------------------------------
    def _await_sync_start(self) -> bool:
        """Under the lock: sleep until a sync is due (True) or the thread may end (False)."""
        machine = self._machine
        while True:
            machine.append(self.log.next_index - 1, self._clock())  # records appended behind our back
            deadline = machine.next_deadline()
            if deadline is None:
                if self._stop:
                    return False
                self._cond.wait()
                continue
            left = deadline - self._clock()
            if left <= 0 or self._stop:
                return True
            self._cond.wait(left)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._await_sync_start():
                    break
                self._machine.start_sync(self._clock())
            try:
                self.log.sync()
                err = None
            except BaseException as exc:  # noqa: BLE001 -- handed to every waiter
                err = exc
            with self._cond:
                self.syncs += 1
                if err is None:
                    ready = self._machine.synced(self.log.durable_index, self._clock())
                else:
                    self._error = err
                    ready = self._machine.sync_failed(err, self._clock())
                self._cond.notify_all()
            self._fire(ready)
            if err is not None:
                break
        with self._cond:
            self._stop = self._finished = True
            rest = self._machine.close()
            self._cond.notify_all()
        self._fire(rest)

    def close(self) -> None:
        """Sync what is pending, stop the thread (does not close the log)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join()
        self.log.remove_durable_listener(self._durable_advanced)

    def __enter__(self) -> GroupCommitter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
