"""WORM audit log: hash-chained entries, sealed segments, Merkle roots, batch anchoring.

Why this module exists: the lab must be able to *prove* afterwards which PCS
each tenant submitted and what the verifier answered (INV-WORM-CHAIN), even to
someone who does not trust the operator. Each audit entry records only
metadata -- pcs_id, tenant, outcome, payload digest, time -- never payloads,
signatures or keys.

Theory of operation (format details in spec/GOVERNANCE.md):

* **Entries** are canonical JSON lines (sorted keys, no whitespace, UTF-8).
  Entry ``seq`` n carries ``prev`` = the ``hash`` of entry n-1 (64 zeros for
  n = 0) and ``hash`` = SHA-256(``"flk-audit-v1\\0"`` || canonical JSON of the
  entry without ``hash``). The chain runs across segment boundaries.
* **Segments** ``seg-<8 digits>.log`` hold consecutive entries. Sealing a
  segment writes ``seg-<n>.seal.json`` with the entry count, the v1 Merkle root
  (:func:`flk.impl.core.merkle.merkle_root`) over the entry lines, the last entry
  hash and the previous seal's hash (seals form a chain too); both files are
  then made read-only and the log never opens them for writing again
  (:class:`WormViolation`). ``HEAD.json`` (written atomically) names the
  number of sealed segments and the last seal hash, so dropping whole trailing
  segments is detected.
* **Anchoring** puts the v1 Merkle root of a batch of segment roots into an
  :class:`AttestationStore` (a directory by default; write-once files). An
  RFC 3161 timestamp token over that root is an optional external anchor
  (:func:`build_timestamp_request` / :func:`parse_timestamp_response`).
* **Verification** (:func:`verify_log`) is a pure function of the file
  contents: it recomputes every hash, the chain, every seal, HEAD and every
  anchor, and names the first bad segment and entry.

I/O goes through the ``FileSystem`` interface of ``flk.impl.storage.fs`` so the
simulator can run the same code on a simulated disk. Time is passed in.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.errors import InvalidInput
from ..core.merkle import merkle_root
from ..storage.fs import FileSystem, OsFileSystem

FORMAT = 1
GENESIS = "0" * 64
DOMAIN = b"flk-audit-v1\x00"
SEAL_DOMAIN = b"flk-audit-seal-v1\x00"
ANCHOR_DOMAIN = b"flk-audit-anchor-v1\x00"
HEAD = "HEAD.json"
DEFAULT_SEGMENT_ENTRIES = 1024
MAX_TEXT = 256

_SEG_RE = re.compile(r"^seg-(\d{8})\.log$")
_SEAL_RE = re.compile(r"^seg-(\d{8})\.seal\.json$")
_ANCHOR_RE = re.compile(r"^anchor-(\d{8})\.json$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

ENTRY_KEYS = frozenset(
    {"v", "seq", "ts", "tenant", "pcs_id", "outcome", "status", "payload_digest", "policy_version", "region", "prev", "hash"}
)


class WormViolation(Exception):
    """An attempt to modify sealed (write-once) audit data."""


class AuditCorruption(Exception):
    """The log on disk is not a valid audit log (raised by the writer on open)."""


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


class _Fail(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_json(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def _parse_file(data: bytes) -> dict | None:
    """A whole JSON file (seal, HEAD, anchor): a canonical object plus one newline, or None."""
    obj = _parse_json(data)
    if not isinstance(obj, dict) or canonical_json(obj) + b"\n" != data:
        return None
    return obj


def _check_entry_line(line: bytes, seg: int, pos: int, seq: int, prev: str) -> dict:
    def fail(kind: str, msg: str) -> _Fail:
        return _Fail(Problem(kind, seg, pos, seq, msg))

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
    segs = sorted(int(m.group(1)) for n in files if (m := _SEG_RE.match(n)))
    seals_present = {int(m.group(1)) for n in files if (m := _SEAL_RE.match(n))}
    seal_roots: dict[int, str] = {}
    entries = 0
    sealed = 0
    try:
        for i, n in enumerate(segs):
            if n != i:
                raise _Fail(Problem("segment_missing", i, None, None, f"{segment_name(i)} is missing"))
        for n in sorted(seals_present):
            if n not in segs:
                raise _Fail(Problem("segment_missing", n, None, None, f"seal present but {segment_name(n)} is missing"))
        prev, seq, prev_seal = GENESIS, 0, GENESIS
        for n in segs:
            data = files[segment_name(n)]
            if data and not data.endswith(b"\n"):
                last = data.count(b"\n")
                raise _Fail(Problem("torn_tail", n, last, seq + last, "last entry is not newline-terminated"))
            lines = data.split(b"\n")[:-1] if data else []
            first_seq = seq
            for pos, line in enumerate(lines):
                obj = _check_entry_line(line, n, pos, seq, prev)
                prev, seq = obj["hash"], seq + 1
            entries += len(lines)
            if n in seals_present:
                seal = _parse_file(files[seal_name(n)])
                keys = {"v", "segment", "first_seq", "count", "merkle_root", "last_hash", "prev_seal", "ts", "seal_hash"}
                if not isinstance(seal, dict) or set(seal) != keys or seal.get("seal_hash") != seal_hash(seal):
                    raise _Fail(Problem("seal_corrupt", n, None, None, "seal file altered or unreadable"))
                count = seal["count"]
                if seal["segment"] != n or seal["first_seq"] != first_seq:
                    raise _Fail(Problem("seal_mismatch", n, None, None, "seal names another segment or position"))
                if not isinstance(count, int) or count != len(lines):
                    pos = min(len(lines), count) if isinstance(count, int) else 0
                    raise _Fail(
                        Problem(
                            "truncated" if isinstance(count, int) and len(lines) < count else "count_mismatch",
                            n, pos, first_seq + pos,
                            f"seal records {count} entries, segment holds {len(lines)}",
                        )
                    )
                if lines and seal["last_hash"] != prev:
                    pos = len(lines) - 1
                    raise _Fail(Problem("seal_mismatch", n, pos, first_seq + pos, "last entry differs from the seal's last_hash"))
                if seal["merkle_root"] != segment_root(lines):
                    raise _Fail(Problem("merkle_mismatch", n, None, None, "segment Merkle root differs from its seal"))
                if seal["prev_seal"] != prev_seal:
                    raise _Fail(Problem("seal_chain_break", n, None, None, "seal does not commit to the previous seal"))
                prev_seal = seal["seal_hash"]
                seal_roots[n] = seal["merkle_root"]
                sealed += 1
            elif n != segs[-1]:
                raise _Fail(Problem("unsealed_segment", n, None, None, "only the last segment may be unsealed"))
        _check_head(files, sealed, prev_seal, seq)
        _check_anchors(anchors, seal_roots, sealed, seq)
    except _Fail as f:
        return VerifyReport(False, f.problem, len(segs), sealed, entries, len(anchors))
    return VerifyReport(True, None, len(segs), sealed, entries, len(anchors))


def _check_head(files: Mapping[str, bytes], sealed: int, last_seal: str, seq: int) -> None:
    if HEAD not in files:
        if sealed:
            raise _Fail(Problem("head_missing", None, None, None, f"{HEAD} missing but sealed segments exist"))
        return
    head = _parse_file(files[HEAD])
    if (
        head is None
        or set(head) != {"v", "sealed_segments", "last_seal"}
        or head["v"] != FORMAT
        or type(head["sealed_segments"]) is not int
    ):
        raise _Fail(Problem("head_corrupt", None, None, None, f"{HEAD} altered or unreadable"))
    want = head["sealed_segments"]
    if want > sealed:
        raise _Fail(Problem("truncated", sealed, 0, seq, f"HEAD records {want} sealed segments, found {sealed}"))
    if want != sealed or head["last_seal"] != last_seal:
        raise _Fail(Problem("head_mismatch", None, None, None, "HEAD does not match the seal chain"))


def _check_anchors(anchors: Mapping[str, bytes], seal_roots: Mapping[int, str], sealed: int, seq: int) -> None:
    prev = GENESIS
    names = sorted(n for n in anchors if _ANCHOR_RE.match(n))
    for i, name in enumerate(names):
        a = _parse_file(anchors[name])
        if a is None or a.get("anchor_hash") != anchor_hash(a) or a.get("batch") != i:
            raise _Fail(Problem("anchor_corrupt", None, None, None, f"{name} altered, unreadable or out of order"))
        if a.get("prev_anchor") != prev:
            raise _Fail(Problem("anchor_chain_break", None, None, None, f"{name} does not commit to the previous anchor"))
        prev = a["anchor_hash"]
        first, roots = a.get("first_segment"), a.get("segment_roots")
        if (
            type(first) is not int
            or not isinstance(roots, list)
            or not roots
            or not all(isinstance(r, str) and _HEX64.match(r) for r in roots)
        ):
            raise _Fail(Problem("anchor_corrupt", None, None, None, f"{name} malformed"))
        for k, root in enumerate(roots):
            n = first + k
            if n not in seal_roots:
                raise _Fail(Problem("truncated", n, 0, None, f"{name} anchors segment {n}, which is missing or unsealed"))
            if seal_roots[n] != root:
                raise _Fail(Problem("anchor_mismatch", n, None, None, f"segment root differs from {name}"))
        if a.get("root") != batch_root(roots):
            raise _Fail(Problem("anchor_corrupt", None, None, None, f"{name} batch root wrong"))


# ---------------------------------------------------------------------------
# Writer (I/O through a FileSystem)


def _default_fs() -> FileSystem:
    return OsFileSystem()


def _join(directory: str, name: str) -> str:
    return os.path.join(directory, name)


def read_log_files(directory: str, fs=None) -> dict[str, bytes]:
    """The audit-relevant files of ``directory`` as ``{name: bytes}``."""
    fs = fs or _default_fs()
    out = {}
    for name in fs.listdir(directory):
        if _SEG_RE.match(name) or _SEAL_RE.match(name) or name == HEAD:
            out[name] = fs.read(_join(directory, name))
    return out


class AttestationStore:
    """Write-once anchor files ``anchor-<batch>.json`` in a directory."""

    def __init__(self, directory: str, fs=None) -> None:
        self.directory = directory
        self.fs = fs or _default_fs()
        self.fs.makedirs(directory)

    def names(self) -> list[str]:
        return [n for n in self.fs.listdir(self.directory) if _ANCHOR_RE.match(n)]

    def read_all(self) -> dict[str, bytes]:
        return {n: self.fs.read(_join(self.directory, n)) for n in self.names()}

    def put(self, anchor: Mapping) -> str:
        name = f"anchor-{anchor['batch']:08d}.json"
        path = _join(self.directory, name)
        if self.fs.exists(path):
            raise WormViolation(f"{name} already exists; anchors are write-once")
        self.fs.write_atomic(path, canonical_json(anchor) + b"\n")
        self.fs.chmod_readonly(path)
        return name


class AuditLog:
    """The append-only writer. Not thread-safe: one owner (a driver) calls it.

    ``append`` buffers an entry in the active segment (durable after
    :meth:`sync`); a segment is sealed automatically after
    ``segment_entries`` entries or explicitly by :meth:`seal`.
    """

    def __init__(self, directory: str, fs=None, segment_entries: int = DEFAULT_SEGMENT_ENTRIES) -> None:
        if segment_entries < 1:
            raise InvalidInput("segment_entries", "must be >= 1")
        self.directory = directory
        self.fs = fs or _default_fs()
        self.segment_entries = segment_entries
        self.fs.makedirs(directory)
        self._handle = None
        self._recover()

    # -- recovery
    def _recover(self) -> None:
        names = self.fs.listdir(self.directory)
        segs = sorted(int(m.group(1)) for n in names if (m := _SEG_RE.match(n)))
        seals = {int(m.group(1)) for n in names if (m := _SEAL_RE.match(n))}
        self.prev, self.seq, self.last_seal, self.sealed_count = GENESIS, 0, GENESIS, 0
        self.active, self.active_lines = 0, []
        for i, n in enumerate(segs):
            if n != i:
                raise AuditCorruption(f"{segment_name(i)} missing")
        seal_hashes = [GENESIS]
        for n in segs:
            if n in seals:
                seal = _parse_file(self.fs.read(_join(self.directory, seal_name(n))))
                if seal is None or seal.get("seal_hash") != seal_hash(seal) or seal.get("prev_seal") != self.last_seal:
                    raise AuditCorruption(f"{seal_name(n)} altered or unreadable")
                self.prev = seal["last_hash"] if seal["count"] else self.prev
                self.seq = seal["first_seq"] + seal["count"]
                self.last_seal = seal["seal_hash"]
                seal_hashes.append(self.last_seal)
                self.sealed_count += 1
                self.active = n + 1
            elif n != segs[-1]:
                raise AuditCorruption(f"{segment_name(n)} is unsealed but not the last segment")
        self._recover_head(names, seal_hashes)
        if segs and segs[-1] not in seals:
            self._recover_active(segs[-1])

    def _head_bytes(self) -> bytes:
        return canonical_json({"v": FORMAT, "sealed_segments": self.sealed_count, "last_seal": self.last_seal}) + b"\n"

    def _recover_head(self, names: list[str], seal_hashes: list[str]) -> None:
        """Finish a seal interrupted between the seal file and HEAD; refuse anything else."""
        want = self._head_bytes()
        path = self._path(HEAD)
        if HEAD not in names:
            if self.sealed_count == 0:
                return
            if self.sealed_count == 1:  # crashed right after the first seal
                self.fs.write_atomic(path, want)
                return
            raise AuditCorruption(f"{HEAD} missing but {self.sealed_count} segments are sealed")
        raw = self.fs.read(path)
        if raw == want:
            return
        head = _parse_file(raw)
        if (
            head is not None
            and head.get("sealed_segments") == self.sealed_count - 1
            and head.get("last_seal") == seal_hashes[-2]
        ):
            self.fs.write_atomic(path, want)
            return
        raise AuditCorruption(f"{HEAD} does not match the sealed segments (truncated or altered log)")

    def _recover_active(self, n: int) -> None:
        path = _join(self.directory, segment_name(n))
        data = self.fs.read(path)
        cut = data.rfind(b"\n") + 1
        if cut != len(data):  # torn tail from a crash: the unterminated entry was never acknowledged
            self.fs.truncate(path, cut)
            data = data[:cut]
        lines = data.split(b"\n")[:-1] if data else []
        for pos, line in enumerate(lines):
            try:
                obj = _check_entry_line(line, n, pos, self.seq, self.prev)
            except _Fail as f:
                raise AuditCorruption(f.problem.describe()) from None
            self.prev, self.seq = obj["hash"], self.seq + 1
        self.active, self.active_lines = n, lines

    # -- writing
    def _path(self, name: str) -> str:
        return _join(self.directory, name)

    def _open_active(self):
        if self._handle is None:
            if self.fs.exists(self._path(seal_name(self.active))):
                raise WormViolation(f"{segment_name(self.active)} is sealed; refusing to write to it")
            self._handle = self.fs.open_append(self._path(segment_name(self.active)))
        return self._handle

    def append(
        self,
        *,
        tenant: str,
        pcs_id: str,
        outcome: str,
        payload_digest: str,
        now: float,
        status: int | None = None,
        policy_version: str | None = None,
        region: str | None = None,
    ) -> dict:
        entry = make_entry(
            self.seq, self.prev, tenant=tenant, pcs_id=pcs_id, outcome=outcome, payload_digest=payload_digest,
            ts=now, status=status, policy_version=policy_version, region=region,
        )
        line = canonical_json(entry)
        self._open_active().write(line + b"\n")
        self.active_lines.append(line)
        self.prev, self.seq = entry["hash"], self.seq + 1
        if len(self.active_lines) >= self.segment_entries:
            self.seal(now)
        return entry

    def sync(self) -> None:
        if self._handle is not None:
            self._handle.fsync()

    def seal(self, now: float) -> dict | None:
        """Seal the active segment (no-op when it is empty); returns the seal."""
        if not self.active_lines:
            return None
        self.sync()
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        n = self.active
        seal: dict[str, Any] = {
            "v": FORMAT,
            "segment": n,
            "first_seq": self.seq - len(self.active_lines),
            "count": len(self.active_lines),
            "merkle_root": segment_root(self.active_lines),
            "last_hash": self.prev,
            "prev_seal": self.last_seal,
            "ts": float(now),
        }
        seal["seal_hash"] = seal_hash(seal)
        spath = self._path(seal_name(n))
        if self.fs.exists(spath):
            raise WormViolation(f"{seal_name(n)} already exists")
        self.fs.write_atomic(spath, canonical_json(seal) + b"\n")
        self.fs.chmod_readonly(self._path(segment_name(n)))
        self.fs.chmod_readonly(spath)
        self.last_seal = seal["seal_hash"]
        self.sealed_count += 1
        self.fs.write_atomic(self._path(HEAD), self._head_bytes())
        self.active, self.active_lines = n + 1, []
        return seal

    def close(self, now: float | None = None) -> None:
        """Flush; with ``now``, also seal the active segment."""
        if now is not None:
            self.seal(now)
        self.sync()
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    # -- anchoring
    def anchor(self, store: AttestationStore, now: float, tsa: Callable[[str], bytes] | None = None) -> dict | None:
        """Anchor every sealed segment not yet anchored; returns the anchor (None if nothing new).

        ``tsa`` (optional) maps the hex batch root to an RFC 3161 token (DER),
        stored base64 in the anchor as ``tsa_token_b64`` (covered by ``anchor_hash``).
        """
        existing = store.read_all()
        prev, next_seg, batch = GENESIS, 0, 0
        for name in sorted(existing):
            a = json.loads(existing[name])
            prev, batch = a["anchor_hash"], a["batch"] + 1
            next_seg = a["first_segment"] + len(a["segment_roots"])
        if next_seg >= self.sealed_count:
            return None
        roots = []
        for n in range(next_seg, self.sealed_count):
            roots.append(json.loads(self.fs.read(self._path(seal_name(n))))["merkle_root"])
        anchor: dict[str, Any] = {
            "v": FORMAT,
            "batch": batch,
            "first_segment": next_seg,
            "segment_roots": roots,
            "root": batch_root(roots),
            "prev_anchor": prev,
            "ts": float(now),
        }
        if tsa is not None:
            import base64

            anchor["tsa_token_b64"] = base64.b64encode(tsa(anchor["root"])).decode("ascii")
        anchor["anchor_hash"] = anchor_hash(anchor)
        store.put(anchor)
        return anchor


def verify_directory(directory: str, anchors_dir: str | None = None, fs=None) -> VerifyReport:
    """Read ``directory`` (and the attestation store) and run :func:`verify_log`."""
    fs = fs or _default_fs()
    files = read_log_files(directory, fs)
    anchors = AttestationStore(anchors_dir, fs).read_all() if anchors_dir and fs.exists(anchors_dir) else {}
    return verify_log(files, anchors)


# ---------------------------------------------------------------------------
# RFC 3161 timestamping (optional external anchor). Sans-I/O: build the
# request bytes, let a driver POST them (Content-Type
# application/timestamp-query), parse the reply bytes. The token's CMS
# signature is *not* verified here (that needs the TSA's certificate chain);
# the parser checks status, content types, the message imprint and the nonce.

OID_SHA256 = "2.16.840.1.101.3.4.2.1"
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_TST_INFO = "1.2.840.113549.1.9.16.1.4"
PKI_STATUS = {0: "granted", 1: "grantedWithMods", 2: "rejection", 3: "waiting", 4: "revocationWarning", 5: "revocationNotification"}


class TimestampError(ValueError):
    """A timestamp response that is malformed, refused or does not match the request."""


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def der_tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(content)) + content


def der_int(v: int) -> bytes:
    if v < 0:
        raise InvalidInput("der_int", "only non-negative integers")
    b = v.to_bytes(v.bit_length() // 8 + 1, "big")  # leading 0x00 keeps the sign bit clear
    return der_tlv(0x02, b)


def der_oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    out = bytearray([40 * parts[0] + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        p >>= 7
        while p:
            chunk.append(0x80 | (p & 0x7F))
            p >>= 7
        out.extend(reversed(chunk))
    return der_tlv(0x06, bytes(out))


def der_seq(*items: bytes) -> bytes:
    return der_tlv(0x30, b"".join(items))


def build_timestamp_request(digest: bytes, nonce: int | None = None, cert_req: bool = True, policy: str | None = None) -> bytes:
    """DER ``TimeStampReq`` (RFC 3161 section 2.4.1) over a SHA-256 ``digest``.

    ``version 1, messageImprint {sha256 with NULL parameters, digest},
    reqPolicy?, nonce?, certReq`` (certReq is omitted when FALSE, the DER default).
    """
    if not isinstance(digest, (bytes, bytearray)) or len(digest) != 32:
        raise InvalidInput("digest", "must be a 32-byte SHA-256 digest")
    items = [der_int(1), der_seq(der_seq(der_oid(OID_SHA256), b"\x05\x00"), der_tlv(0x04, bytes(digest)))]
    if policy is not None:
        items.append(der_oid(policy))
    if nonce is not None:
        items.append(der_int(nonce))
    if cert_req:
        items.append(b"\x01\x01\xff")
    return der_seq(*items)


def der_read(data: bytes, pos: int = 0) -> tuple[int, bytes, int]:
    """(tag, content, next position) of the TLV at ``pos``; strict definite-length DER."""
    if pos + 2 > len(data):
        raise TimestampError("truncated DER")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise TimestampError("multi-byte tags are not used in RFC 3161")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        k = first & 0x7F
        if k == 0 or k > 4 or pos + k > len(data):
            raise TimestampError("bad DER length")
        length = int.from_bytes(data[pos : pos + k], "big")
        if length < 0x80 or data[pos] == 0:
            raise TimestampError("non-minimal DER length")
        pos += k
    end = pos + length
    if end > len(data):
        raise TimestampError("truncated DER")
    return tag, data[pos:end], end


def der_children(content: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(content):
        tag, body, pos = der_read(content, pos)
        out.append((tag, body))
    return out


def _oid_text(body: bytes) -> str:
    parts = [body[0] // 40, body[0] % 40] if body[0] < 80 else [2, body[0] - 80]
    v = 0
    for b in body[1:]:
        v = (v << 7) | (b & 0x7F)
        if not b & 0x80:
            parts.append(v)
            v = 0
    return ".".join(map(str, parts))


def _expect(item: tuple[int, bytes], tag: int, what: str) -> bytes:
    if item[0] != tag:
        raise TimestampError(f"{what}: expected tag 0x{tag:02x}, got 0x{item[0]:02x}")
    return item[1]


@dataclass(frozen=True)
class TimestampToken:
    status: str
    gen_time: str  # GeneralizedTime text, e.g. 20260101000000Z
    serial: int
    policy: str
    nonce: int | None
    token_der: bytes


def parse_timestamp_response(data: bytes, digest: bytes, nonce: int | None = None) -> TimestampToken:
    """Parse a DER ``TimeStampResp``; check status, imprint (SHA-256 of ``digest``) and nonce."""
    try:
        tag, body, end = der_read(data)
        if tag != 0x30 or end != len(data):
            raise TimestampError("TimeStampResp is not one SEQUENCE")
        parts = der_children(body)
        if not parts:
            raise TimestampError("empty TimeStampResp")
        status_info = der_children(_expect(parts[0], 0x30, "PKIStatusInfo"))
        code = int.from_bytes(_expect(status_info[0], 0x02, "PKIStatus"), "big")
        status = PKI_STATUS.get(code, f"unknown({code})")
        if code not in (0, 1):
            raise TimestampError(f"TSA refused the request: {status}")
        if len(parts) < 2:
            raise TimestampError("granted but no timeStampToken")
        token_der = der_tlv(0x30, _expect(parts[1], 0x30, "timeStampToken"))
        content_info = der_children(parts[1][1])
        if _oid_text(_expect(content_info[0], 0x06, "contentType")) != OID_SIGNED_DATA:
            raise TimestampError("timeStampToken is not CMS SignedData")
        signed_data = der_children(_expect(der_children(_expect(content_info[1], 0xA0, "content"))[0], 0x30, "SignedData"))
        encap = der_children(_expect(signed_data[2], 0x30, "encapContentInfo"))
        if _oid_text(_expect(encap[0], 0x06, "eContentType")) != OID_TST_INFO:
            raise TimestampError("eContentType is not id-ct-TSTInfo")
        tst_der = _expect(der_children(_expect(encap[1], 0xA0, "eContent"))[0], 0x04, "eContent")
        tst = der_children(_expect(der_read(tst_der)[:2], 0x30, "TSTInfo"))
        policy = _oid_text(_expect(tst[1], 0x06, "policy"))
        imprint = der_children(_expect(tst[2], 0x30, "messageImprint"))
        alg = der_children(_expect(imprint[0], 0x30, "hashAlgorithm"))
        if _oid_text(_expect(alg[0], 0x06, "algorithm")) != OID_SHA256:
            raise TimestampError("messageImprint is not SHA-256")
        if _expect(imprint[1], 0x04, "hashedMessage") != bytes(digest):
            raise TimestampError("messageImprint does not match the anchored root")
        serial = int.from_bytes(_expect(tst[3], 0x02, "serialNumber"), "big")
        gen_time = _expect(tst[4], 0x18, "genTime").decode("ascii")
        got_nonce = None
        for t, b in tst[5:]:
            if t == 0x02:
                got_nonce = int.from_bytes(b, "big")
        if nonce is not None and got_nonce != nonce:
            raise TimestampError("nonce does not match the request")
        return TimestampToken(status, gen_time, serial, policy, got_nonce, token_der)
    except (IndexError, UnicodeDecodeError) as exc:
        raise TimestampError(f"malformed TimeStampResp: {exc}") from None


def http_tsa(url: str, timeout: float = 10.0, nonce: int | None = None) -> Callable[[str], bytes]:
    """A driver for :meth:`AuditLog.anchor`: POST the request for a hex root to ``url``
    and return the checked token DER. (Needs network; not exercised by the test suite.)"""

    def call(root_hex: str) -> bytes:
        import httpx

        digest = bytes.fromhex(root_hex)
        req = build_timestamp_request(digest, nonce=nonce)
        resp = httpx.post(url, content=req, headers={"Content-Type": "application/timestamp-query"}, timeout=timeout)
        resp.raise_for_status()
        return parse_timestamp_response(resp.content, digest, nonce).token_der

    return call


# ---------------------------------------------------------------------------
# Pipeline integration: an Emit sink


AUDITED_KINDS = ("accepted", "escalated", "dedup_conflict")


def pipeline_sink(log: AuditLog, clock: Callable[[], float], policy_version: str | None = None, region: str | None = None):
    """An ``Emit`` sink for :func:`flk.impl.verifier.pipeline.run_sync` that appends an
    audit entry for every outcome event that names a payload digest
    (accepted, escalated, dedup_conflict). The entry's time is the event's
    ``first_seen`` when present, else ``clock()`` (the driver's clock)."""

    def sink(event: Mapping) -> None:
        kind = event.get("kind")
        if kind not in AUDITED_KINDS or "payload_digest" not in event or "pcs_id" not in event:
            return
        log.append(
            tenant=str(event.get("tenant") or event.get("tenant_label")),
            pcs_id=str(event["pcs_id"]),
            outcome=str(kind),
            payload_digest=str(event["payload_digest"]),
            now=float(event.get("first_seen", clock())),
            status=event.get("status"),
            policy_version=event.get("policy_version", policy_version),
            region=region,
        )

    return sink
