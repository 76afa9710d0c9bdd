"""The audit hash chain: entry, seal and anchor hashes, Merkle roots and the pure verifier.

Why this module exists: what makes the audit log tamper-evident (INV-WORM-CHAIN)
is a pure function of bytes -- how an entry is hashed and chained, how a sealed
segment's Merkle root and seal chain are formed, how anchors chain -- and
:func:`verify_log` recomputes all of it from the file contents alone. The writer
that puts those bytes on a disk is :mod:`flk.impl.governance.audit`; the optional
RFC 3161 timestamp of an anchor is :mod:`flk.impl.governance.tsa`. No I/O, no clock.

Format (details in spec/GOVERNANCE.md):

* **Entries** are canonical JSON lines (sorted keys, no whitespace, UTF-8).
  Entry ``seq`` n carries ``prev`` = the ``hash`` of entry n-1 (64 zeros for
  n = 0) and ``hash`` = SHA-256(``"flk-audit-v1\\0"`` || canonical JSON of the
  entry without ``hash``). The chain runs across segment boundaries.
* **Seals** ``seg-<n>.seal.json`` hold the entry count, the v1 Merkle root
  (:func:`flk.impl.core.merkle.merkle_root`) over the entry lines, the last entry
  hash and the previous seal's hash (seals form a chain too); ``HEAD.json`` names
  the number of sealed segments and the last seal hash.
* **Anchors** ``anchor-<batch>.json`` hold the v1 Merkle root of a batch of
  segment roots and chain by ``prev_anchor``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..core import textdata
from ..core.errors import InvalidInput
from ..core.merkle import merkle_root

FORMAT = 1
GENESIS = "0" * 64
DOMAIN = b"flk-audit-v1\x00"
SEAL_DOMAIN = b"flk-audit-seal-v1\x00"
ANCHOR_DOMAIN = b"flk-audit-anchor-v1\x00"
HEAD = "HEAD.json"
DEFAULT_SEGMENT_ENTRIES = 1024
MAX_TEXT = 256

SEG_RE = re.compile(r"^seg-(\d{8})\.log$")
SEAL_RE = re.compile(r"^seg-(\d{8})\.seal\.json$")
ANCHOR_RE = re.compile(r"^anchor-(\d{8})\.json$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

ENTRY_KEYS = frozenset(
    {"v", "seq", "ts", "tenant", "pcs_id", "outcome", "status", "payload_digest", "policy_version", "region", "prev", "hash"}
)


def canonical_json(obj: Mapping) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _sha256_hex(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()


def entry_hash(entry: Mapping) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return _sha256_hex(DOMAIN, canonical_json(body))


def seal_hash(seal: Mapping) -> str:
    return _sha256_hex(SEAL_DOMAIN, canonical_json({k: v for k, v in seal.items() if k != "seal_hash"}))


def anchor_hash(anchor: Mapping) -> str:
    body = {k: v for k, v in anchor.items() if k != "anchor_hash"}
    return _sha256_hex(ANCHOR_DOMAIN, canonical_json(body))


def segment_name(n: int) -> str:
    return f"seg-{n:08d}.log"


def seal_name(n: int) -> str:
    return f"seg-{n:08d}.seal.json"


def _text(v: object, field: str, allow_none: bool = False) -> str | None:
    if v is None and allow_none:
        return None
    if not isinstance(v, str) or not v or len(v) > MAX_TEXT:
        raise InvalidInput(field, f"must be a non-empty string of at most {MAX_TEXT} characters")
    if any(ord(c) < 0x20 for c in v):
        raise InvalidInput(field, "must not contain control characters")
    return v


def make_entry(
    seq: int,
    prev: str,
    *,
    tenant: str,
    pcs_id: str,
    outcome: str,
    payload_digest: str,
    ts: float,
    status: int | None = None,
    policy_version: str | None = None,
    region: str | None = None,
) -> dict[str, Any]:
    """A complete, hashed entry (validated: metadata only, never payloads)."""
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not (0 <= ts < 1e12):
        raise InvalidInput("ts", "must be seconds since the epoch (finite, >= 0)")
    if not isinstance(payload_digest, str) or not _HEX64.match(payload_digest):
        raise InvalidInput("payload_digest", "must be 64 lowercase hex digits (SHA-256)")
    if status is not None and (isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599):
        raise InvalidInput("status", "must be an HTTP status code")
    entry: dict[str, Any] = {
        "v": FORMAT,
        "seq": seq,
        "ts": float(ts),
        "tenant": _text(tenant, "tenant"),
        "pcs_id": _text(pcs_id, "pcs_id"),
        "outcome": _text(outcome, "outcome"),
        "payload_digest": payload_digest,
        "prev": prev,
    }
    if status is not None:
        entry["status"] = status
    if policy_version is not None:
        entry["policy_version"] = _text(policy_version, "policy_version")
    if region is not None:
        entry["region"] = _text(region, "region")
    entry["hash"] = entry_hash(entry)
    return entry


def segment_root(lines: Sequence[bytes]) -> str:
    """v1 Merkle root over the entry lines (without their newline)."""
    return merkle_root(list(lines), "v1")


def batch_root(segment_roots: Sequence[str]) -> str:
    """v1 Merkle root over the raw 32-byte segment roots."""
    return merkle_root([bytes.fromhex(r) for r in segment_roots], "v1")


# ---------------------------------------------------------------------------
# Verification (pure)


@dataclass(frozen=True)
class Problem:
    """The first violation found: what, in which segment and at which entry position."""

    kind: str
    segment: int | None
    entry: int | None  # 0-based line position within the segment
    seq: int | None  # the global sequence number expected at that position
    message: str

    def describe(self) -> str:
        where = []
        if self.segment is not None:
            where.append(f"segment {self.segment} ({segment_name(self.segment)})")
        if self.entry is not None:
            where.append(f"entry {self.entry} (seq {self.seq})")
        loc = ", ".join(where) if where else "log"
        return f"{loc}: {self.kind}: {self.message}"


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    problem: Problem | None
    segments: int
    sealed_segments: int
    entries: int
    anchors: int

    def as_dict(self) -> dict:
        d = {
            "ok": self.ok,
            "invariant": "INV-WORM-CHAIN",
            "segments": self.segments,
            "sealed_segments": self.sealed_segments,
            "entries": self.entries,
            "anchors": self.anchors,
        }
        if self.problem is not None:
            p = self.problem
            d["problem"] = {"kind": p.kind, "segment": p.segment, "entry": p.entry, "seq": p.seq, "message": p.message}
        return d


class ChainFault(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_json(data: bytes) -> Any:
    try:
        return textdata.json_loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def parse_file(data: bytes) -> dict | None:
    """A whole JSON file (seal, HEAD, anchor): a canonical object plus one newline, or None."""
    obj = _parse_json(data)
    if not isinstance(obj, dict) or canonical_json(obj) + b"\n" != data:
        return None
    return obj


def check_entry_line(line: bytes, seg: int, pos: int, seq: int, prev: str) -> dict:
    def fail(kind: str, msg: str) -> ChainFault:
        return ChainFault(Problem(kind, seg, pos, seq, msg))

    obj = _parse_json(line)
    if not isinstance(obj, dict):
        raise fail("unparseable", "entry is not a JSON object")
    if canonical_json(obj) != line:
        raise fail("not_canonical", "entry bytes are not canonical JSON")
    if set(obj) - ENTRY_KEYS or obj.get("v") != FORMAT:
        raise fail("bad_format", "unknown fields or format version")
    if not isinstance(obj.get("hash"), str) or obj["hash"] != entry_hash(obj):
        raise fail("hash_mismatch", "entry hash does not match its contents")
    if obj.get("seq") != seq:
        raise fail("sequence", f"expected seq {seq}, found {obj.get('seq')!r} (entry deleted, inserted or reordered)")
    if obj.get("prev") != prev:
        raise fail("chain_break", "prev does not commit to the preceding entry")
    return obj


def verify_log(
    files: Mapping[str, bytes], anchors: Mapping[str, bytes] | None = None
) -> VerifyReport:
    """Verify an audit log given as ``{file name: bytes}`` (and its anchor files).

    Checks, in log order, and stops at the first problem: segment numbering
    (no gaps), every entry (canonical, hash, seq, prev chain), every seal
    (count, Merkle root, last hash, seal chain, seal hash), that only the last
    segment is unsealed, HEAD (no sealed segment missing at the end), and that
    every anchor's segment roots and batch root match the seals.
    """
    anchors = anchors or {}
    segs = sorted(int(m.group(1)) for n in files if (m := SEG_RE.match(n)))
    seals_present = {int(m.group(1)) for n in files if (m := SEAL_RE.match(n))}
    seal_roots: dict[int, str] = {}
    entries = 0
    sealed = 0
    try:
        for i, n in enumerate(segs):
            if n != i:
                raise ChainFault(Problem("segment_missing", i, None, None, f"{segment_name(i)} is missing"))
        for n in sorted(seals_present):
            if n not in segs:
                raise ChainFault(Problem("segment_missing", n, None, None, f"seal present but {segment_name(n)} is missing"))
        prev, seq, prev_seal = GENESIS, 0, GENESIS
        for n in segs:
            data = files[segment_name(n)]
            lines = data.split(b"\n")[:-1] if data else []  # the whole lines (a torn tail's piece left off)
            first_seq = seq
            for pos, line in enumerate(lines):  # in log order: a bad entry before a torn tail is the problem
                obj = check_entry_line(line, n, pos, seq, prev)
                prev, seq = obj["hash"], seq + 1
            if data and not data.endswith(b"\n"):
                raise ChainFault(Problem("torn_tail", n, len(lines), seq, "last entry is not newline-terminated"))
            entries += len(lines)
            if n in seals_present:
                seal = parse_file(files[seal_name(n)])
                keys = {"v", "segment", "first_seq", "count", "merkle_root", "last_hash", "prev_seal", "ts", "seal_hash"}
                if not isinstance(seal, dict) or set(seal) != keys or seal.get("seal_hash") != seal_hash(seal):
                    raise ChainFault(Problem("seal_corrupt", n, None, None, "seal file altered or unreadable"))
                count = seal["count"]
                if seal["segment"] != n or seal["first_seq"] != first_seq:
                    raise ChainFault(Problem("seal_mismatch", n, None, None, "seal names another segment or position"))
                if not isinstance(count, int) or count != len(lines):
                    pos = min(len(lines), count) if isinstance(count, int) else 0
                    raise ChainFault(
                        Problem(
                            "truncated" if isinstance(count, int) and len(lines) < count else "count_mismatch",
                            n, pos, first_seq + pos,
                            f"seal records {count} entries, segment holds {len(lines)}",
                        )
                    )
                if lines and seal["last_hash"] != prev:
                    pos = len(lines) - 1
                    raise ChainFault(Problem("seal_mismatch", n, pos, first_seq + pos, "last entry differs from the seal's last_hash"))
                if seal["merkle_root"] != segment_root(lines):
                    raise ChainFault(Problem("merkle_mismatch", n, None, None, "segment Merkle root differs from its seal"))
                if seal["prev_seal"] != prev_seal:
                    raise ChainFault(Problem("seal_chain_break", n, None, None, "seal does not commit to the previous seal"))
                prev_seal = seal["seal_hash"]
                seal_roots[n] = seal["merkle_root"]
                sealed += 1
            elif n != segs[-1]:
                raise ChainFault(Problem("unsealed_segment", n, None, None, "only the last segment may be unsealed"))
        _check_head(files, sealed, prev_seal, seq)
        _check_anchors(anchors, seal_roots, sealed, seq)
    except ChainFault as f:
        return VerifyReport(False, f.problem, len(segs), sealed, entries, len(anchors))
    return VerifyReport(True, None, len(segs), sealed, entries, len(anchors))


def _check_head(files: Mapping[str, bytes], sealed: int, last_seal: str, seq: int) -> None:
    if HEAD not in files:
        if sealed:
            raise ChainFault(Problem("head_missing", None, None, None, f"{HEAD} missing but sealed segments exist"))
        return
    head = parse_file(files[HEAD])
    if (
        head is None
        or set(head) != {"v", "sealed_segments", "last_seal"}
        or head["v"] != FORMAT
        or type(head["sealed_segments"]) is not int
    ):
        raise ChainFault(Problem("head_corrupt", None, None, None, f"{HEAD} altered or unreadable"))
    want = head["sealed_segments"]
    if want > sealed:
        raise ChainFault(Problem("truncated", sealed, 0, seq, f"HEAD records {want} sealed segments, found {sealed}"))
    if want != sealed or head["last_seal"] != last_seal:
        raise ChainFault(Problem("head_mismatch", None, None, None, "HEAD does not match the seal chain"))


def _check_anchors(anchors: Mapping[str, bytes], seal_roots: Mapping[int, str], sealed: int, seq: int) -> None:
    prev = GENESIS
    names = sorted(n for n in anchors if ANCHOR_RE.match(n))
    for i, name in enumerate(names):
        a = parse_file(anchors[name])
        if a is None or a.get("anchor_hash") != anchor_hash(a) or a.get("batch") != i:
            raise ChainFault(Problem("anchor_corrupt", None, None, None, f"{name} altered, unreadable or out of order"))
        if a.get("prev_anchor") != prev:
            raise ChainFault(Problem("anchor_chain_break", None, None, None, f"{name} does not commit to the previous anchor"))
        prev = a["anchor_hash"]
        first, roots = a.get("first_segment"), a.get("segment_roots")
        if (
            type(first) is not int
            or not isinstance(roots, list)
            or not roots
            or not all(isinstance(r, str) and _HEX64.match(r) for r in roots)
        ):
            raise ChainFault(Problem("anchor_corrupt", None, None, None, f"{name} malformed"))
        for k, root in enumerate(roots):
            n = first + k
            if n not in seal_roots:
                raise ChainFault(Problem("truncated", n, 0, None, f"{name} anchors segment {n}, which is missing or unsealed"))
            if seal_roots[n] != root:
                raise ChainFault(Problem("anchor_mismatch", n, None, None, f"segment root differs from {name}"))
        if a.get("root") != batch_root(roots):
            raise ChainFault(Problem("anchor_corrupt", None, None, None, f"{name} batch root wrong"))
