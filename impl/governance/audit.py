"""WORM audit log: the writer of the hash-chained, sealed, anchored audit log.

Why this module exists: the lab must be able to *prove* afterwards which PCS
each tenant submitted and what the verifier answered (INV-WORM-CHAIN), even to
someone who does not trust the operator. Each audit entry records only
metadata -- pcs_id, tenant, outcome, payload digest, time -- never payloads,
signatures or keys.

The concepts live in three modules (format details in spec/GOVERNANCE.md):

* :mod:`flk.impl.governance.auditchain` -- the hash chain: entry, seal and anchor
  hashes, segment and batch Merkle roots, and :func:`verify_log`, a pure
  function of the file contents that names the first bad segment and entry;
* this module -- the write-once log on a ``FileSystem``: :class:`AuditLog`
  appends entries to segments ``seg-<8 digits>.log``, seals a segment
  (``seg-<n>.seal.json``, both files then read-only; writing to them again is a
  :class:`WormViolation`), keeps ``HEAD.json`` (written atomically) so dropping
  whole trailing segments is detected, and anchors batches of sealed segments in
  an :class:`AttestationStore` (write-once files); :func:`verify_directory` reads
  a directory and runs the verifier; :func:`pipeline_sink` turns verifier outcome
  events into entries;
* :mod:`flk.impl.governance.tsa` -- the optional RFC 3161 timestamp of an anchor
  (:meth:`AuditLog.anchor` takes its ``tsa`` callable).

The chain's names (``verify_log``, ``make_entry``, ``GENESIS``, ...) are
importable from here too, as callers of the log use them.

I/O goes through the ``FileSystem`` interface of ``flk.impl.storage.fs`` so the
simulator can run the same code on a simulated disk. Time is passed in.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from ..core import textdata
from ..core.errors import InvalidInput
from ..storage.fs import FileSystem, OsFileSystem
from .auditchain import (  # noqa: F401 -- the chain's public names stay importable from the log
    ANCHOR_DOMAIN,
    ANCHOR_RE,
    DEFAULT_SEGMENT_ENTRIES,
    DOMAIN,
    ENTRY_KEYS,
    FORMAT,
    GENESIS,
    HEAD,
    MAX_TEXT,
    SEAL_DOMAIN,
    SEAL_RE,
    SEG_RE,
    ChainFault,
    Problem,
    VerifyReport,
    anchor_hash,
    batch_root,
    canonical_json,
    check_entry_line,
    entry_hash,
    make_entry,
    parse_file,
    seal_hash,
    seal_name,
    segment_name,
    segment_root,
    verify_log,
)


class WormViolation(Exception):
    """An attempt to modify sealed (write-once) audit data."""


class AuditCorruption(Exception):
    """The log on disk is not a valid audit log (raised by the writer on open)."""


def _default_fs() -> FileSystem:
    return OsFileSystem()


def _join(directory: str, name: str) -> str:
    return os.path.join(directory, name)


def read_log_files(directory: str, fs=None) -> dict[str, bytes]:
    """The audit-relevant files of ``directory`` as ``{name: bytes}``."""
    fs = fs or _default_fs()
    out = {}
    for name in fs.listdir(directory):
        if SEG_RE.match(name) or SEAL_RE.match(name) or name == HEAD:
            out[name] = fs.read(_join(directory, name))
    return out


class AttestationStore:
    """Write-once anchor files ``anchor-<batch>.json`` in a directory."""

    def __init__(self, directory: str, fs=None) -> None:
        self.directory = directory
        self.fs = fs or _default_fs()
        self.fs.makedirs(directory)

    def names(self) -> list[str]:
        return [n for n in self.fs.listdir(self.directory) if ANCHOR_RE.match(n)]

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
        segs = sorted(int(m.group(1)) for n in names if (m := SEG_RE.match(n)))
        seals = {int(m.group(1)) for n in names if (m := SEAL_RE.match(n))}
        self.prev, self.seq, self.last_seal, self.sealed_count = GENESIS, 0, GENESIS, 0
        self.active, self.active_lines = 0, []
        for i, n in enumerate(segs):
            if n != i:
                raise AuditCorruption(f"{segment_name(i)} missing")
        seal_hashes = [GENESIS]
        for n in segs:
            if n in seals:
                seal = parse_file(self.fs.read(_join(self.directory, seal_name(n))))
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
        head = parse_file(raw)
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
                obj = check_entry_line(line, n, pos, self.seq, self.prev)
            except ChainFault as f:
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
            path = self._path(segment_name(self.active))
            created = not self.fs.exists(path)
            self._handle = self.fs.open_append(path)
            if created:  # the new segment's directory entry must survive a crash like its entries
                self.fs.fsync_dir(self.directory)
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
            a = textdata.json_loads(existing[name])
            prev, batch = a["anchor_hash"], a["batch"] + 1
            next_seg = a["first_segment"] + len(a["segment_roots"])
        if next_seg >= self.sealed_count:
            return None
        roots = []
        for n in range(next_seg, self.sealed_count):
            roots.append(textdata.json_loads(self.fs.read(self._path(seal_name(n))))["merkle_root"])
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
