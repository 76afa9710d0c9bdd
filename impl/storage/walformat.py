"""The on-disk format of the segmented WAL (SPEC.md section 12): pure logic, no I/O.

Why this module exists: the log (:mod:`flk.impl.storage.wal`), its read-only
inspection (:mod:`flk.impl.storage.walinspect`), the shipper and reader of
cross-region replication (:mod:`flk.impl.replication.stream`) and ``flk policy
diff`` all read and write the same bytes; this module is the one place that says
what those bytes are. It holds

* record framing (:func:`encode_frame`) and scanning a segment's bytes
  (:func:`scan_segment`, which classifies a bad tail as *torn* or *corrupt*);
* file naming (:func:`segment_name`, :func:`compact_name`, :func:`manifest_name`,
  :func:`parse_name`) and what a directory listing means (:func:`plan_layout`);
* segment manifests (:func:`build_manifest`, :func:`manifest_bytes`,
  :func:`check_manifest`) and the home answers a manifest carries
  (:class:`AnswerNote`, ``A_*``, :func:`encode_answers`, :func:`decode_answers`,
  SPEC.md section 12.4);
* the errors of the log (:class:`WalError`, :class:`WalCorruption`), raised by the
  format and by :class:`flk.impl.storage.wal.SegmentedLog`.

Frame (little-endian): ``u32 length | u32 crc32(payload) | u32 crc32(first 8
header bytes) | payload``. CRC-32 is the IEEE polynomial of ``zlib.crc32``.
The header checksum means a damaged length field is *detected*, never taken as
a torn tail that would silently drop the records after it.

Zero-filled tails (``flk serve`` writes its active segment into zeros written
ahead of it, :meth:`flk.impl.storage.fs.OsFileSystem.open_preallocated`, so that
an fdatasync commits no file-size change): in the *last* segment a bad frame is a
torn tail when the write it came from cannot have finished -- its header is all
zeros, or a whole 512-byte sector (:data:`SECTOR`, file-aligned) within or
straddling the frame is all zeros. A disk writes a sector whole or not at all, so
such a frame was being written when the process or machine stopped, and no sync
covering it (or anything after it) returned: nothing from it on was acknowledged.
A bit flip never zeros a sector, so a damaged complete record is still *corrupt*.
:attr:`ScanResult.zero_tail` tells a tail of nothing but zeros (what was written
ahead and not used) from one that held bytes of an unfinished write.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import NamedTuple

from ..core import textdata
from ..core.errors import InvalidInput

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
    "AnswerNote",
    "encode_answers",
    "decode_answers",
    "A_STORED",
    "A_DUPLICATE",
    "A_CONFLICT",
    "A_REJECTED",
    "A_UNAVAILABLE",
    "ANSWER_CODES",
    "FRAME_OVERHEAD",
    "MAX_PAYLOAD",
    "Layout",
    "manifest_bytes",
    "SEG_PREFIX",
    "COMPACT_PREFIX",
    "LOG_SUFFIX",
    "MANIFEST_SUFFIX",
    "MANIFEST_FORMAT",
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

    def __reduce__(self):  # pickled as __init__'s arguments (a worker process's error reaches its pool intact)
        return type(self), (self.segment, self.offset, self.reason)


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
    zero_tail: bool = False  # torn, and every byte from valid_end on is zero (nothing of a record)

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
            return _bad(view, spans, o, n, is_last, torn=True, reason="incomplete frame header")
        length, pcrc, hcrc = unpack(view, o)
        if _crc32(view[o : o + 8]) != hcrc:
            if not any(view[o:]):
                return _bad(view, spans, o, n, is_last, torn=True, reason="zero-filled tail")
            unfinished = not any(view[o : o + FRAME_OVERHEAD]) or _zero_sector(view, o, o + FRAME_OVERHEAD)
            return _bad(view, spans, o, n, is_last, torn=unfinished,
                        reason="unfinished write (zero-filled frame header)" if unfinished
                        else "header checksum mismatch")
        if length > MAX_PAYLOAD:
            return _bad(view, spans, o, n, is_last, torn=False, reason=f"record length {length} over limit")
        start = o + FRAME_OVERHEAD
        end = start + length
        if end > n:
            return _bad(view, spans, o, n, is_last, torn=True,
                        reason=f"record runs past end of file ({length} bytes, {n - start} present)")
        if _crc32(view[start:end]) != pcrc:
            unfinished = _zero_sector(view, o, end)
            return _bad(view, spans, o, n, is_last, torn=unfinished,
                        reason="unfinished write (a zero-filled sector in the record)" if unfinished
                        else "payload checksum mismatch")
        spans.append((start, length))
        o = end
    return ScanResult(spans, o, n, "clean")


SECTOR = 512  # the unit a disk writes whole: a zero-filled one in a bad frame is an unfinished write


def _zero_sector(view: memoryview, lo: int, hi: int) -> bool:
    """Whether a whole file-aligned :data:`SECTOR` that overlaps ``[lo, hi)`` and lies in
    the file is all zeros."""
    n = len(view)
    s = lo - lo % SECTOR
    while s < hi and s + SECTOR <= n:
        if not any(view[s : s + SECTOR]):
            return True
        s += SECTOR
    return False


def _bad(view, spans, o, n, is_last, torn, reason) -> ScanResult:
    if torn and is_last:
        return ScanResult(spans, o, n, "torn", o, reason, zero_tail=not any(view[o:]))
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
        m = textdata.json_loads(raw)
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
# Pure logic: the home answers a manifest carries
# ---------------------------------------------------------------------------

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
