"""The agent's outbox: a crash-safe queue of signed PCS awaiting delivery.

Why this module exists: at-least-once delivery begins here. A PCS the agent
has built must survive a crash until the verifier has answered it, and an
answer once recorded (an *ack*) must survive too, or every guarantee
downstream is void. The seed system's outbox could lose appends that raced
with compaction; this one cannot (argument below, test in
``tests/wal/test_outbox.py``).

It sits on :class:`flk.impl.storage.wal.SegmentedLog`. Records (the pure part,
:func:`encode_record` / :func:`decode_record` / :func:`fold`):

* ``PCS``  = ``0x01 | u64 seq | data``  -- a record to deliver (data verbatim)
* ``ACK``  = ``0x02 | u64 seq``         -- ``seq`` is done (acks are records too)
* ``MARK`` = ``0x03 | u64 next_seq``    -- ends a compacted prefix so sequence
  numbers are never reused after everything was acked and compacted

State = ``(pending: seq -> data in append order, next_seq)``, the left fold of
the records in log order. A record that passes its CRC but does not decode is
an error (:class:`OutboxError`), never skipped.

Durability: ``"always"`` fsyncs before ``append``/``ack`` return (concurrent
callers share fsyncs); ``"group"`` hands the fsync to a
:class:`flk.impl.storage.groupcommitter.GroupCommitter` with ``max_delay_s`` and waits for it.
Either way ``append`` returns only once the record is durable.

Compaction and why concurrent appends are never lost. Locks: ``_lock`` (the
outbox state and the order of log appends: every append/ack appends to the log
*and* updates the state under it, so state order = log order) and
``_compact_lock`` (one compaction at a time). ``compact()``:

1. under ``_lock``: seal the active segment (fsync + manifest; everything with
   index < k is durable and immutable, k = the new active segment's first
   index) and copy the state ``S_k`` -- exactly the fold of records < k, since
   under ``_lock`` no append is half done;
2. without ``_lock`` (appends and acks proceed into segments >= k): write
   ``PCS(s, d) for (s, d) in S_k.pending`` then ``MARK(S_k.next_seq)`` as the
   compacted prefix ending at k (temp file, fsync, rename, fsync dir -- the
   rename is the commit point), then delete the old segments.

Claim: after any crash the fold of the log equals the fold of the records that
were durable. Before the commit point the directory holds the old files (the
temp file is ignored and removed on open). After it, the log is
``C ++ R`` where ``R`` = records >= k, untouched. ``fold(C) = S_k =
fold(records < k)`` by construction (PCS records restore pending in order, MARK
restores next_seq), and the fold is a function of (state, remaining records),
so ``fold(C ++ R) = fold(records<k ++ R)``. Nothing appended during the
compaction is in ``records < k``, so nothing is dropped.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass, field

from ..storage.fs import FileSystem
from ..storage.groupcommitter import GroupCommitter
from ..storage.wal import SegmentedLog, WalError

__all__ = ["Outbox", "OutboxError", "OutboxState", "encode_record", "decode_record", "fold"]

PCS, ACK, MARK = 1, 2, 3
_HEAD = struct.Struct("<BQ")
MAX_SEQ = 2**64 - 1


class OutboxError(WalError):
    """An outbox record that passed its checksum but makes no sense."""


def encode_record(kind: int, seq: int, data: bytes = b"") -> bytes:
    if kind not in (PCS, ACK, MARK):
        raise OutboxError(f"unknown record kind {kind}")
    if not 0 <= seq <= MAX_SEQ:
        raise OutboxError(f"sequence number {seq} out of range")
    if kind != PCS and data:
        raise OutboxError("only PCS records carry data")
    return _HEAD.pack(kind, seq) + bytes(data)


def decode_record(payload: bytes) -> tuple[int, int, bytes]:
    if len(payload) < _HEAD.size:
        raise OutboxError(f"outbox record of {len(payload)} bytes is too short")
    kind, seq = _HEAD.unpack_from(payload, 0)
    if kind not in (PCS, ACK, MARK):
        raise OutboxError(f"unknown outbox record kind {kind}")
    if kind != PCS and len(payload) != _HEAD.size:
        raise OutboxError("an ACK/MARK record carries data")
    return kind, seq, bytes(payload[_HEAD.size :])


@dataclass
class OutboxState:
    pending: dict[int, bytes] = field(default_factory=dict)
    next_seq: int = 0

    def copy(self) -> OutboxState:
        return OutboxState(dict(self.pending), self.next_seq)


def apply(state: OutboxState, payload: bytes, index: int | None = None) -> None:
    """Apply one record to ``state`` in place (the fold step)."""
    kind, seq, data = decode_record(payload)
    if kind == PCS:
        if seq < state.next_seq:
            # seqs only grow (a compacted prefix lists pending seqs in order, then its MARK)
            where = "" if index is None else f" at index {index}"
            raise OutboxError(f"PCS seq {seq}{where} is not above the previous seq {state.next_seq - 1}")
        state.pending[seq] = data
        state.next_seq = max(state.next_seq, seq + 1)
    elif kind == ACK:
        state.pending.pop(seq, None)
    else:
        state.next_seq = max(state.next_seq, seq)


def fold(payloads) -> OutboxState:
    """The state after ``payloads`` (``bytes`` or ``(index, bytes)`` items)."""
    st = OutboxState()
    for item in payloads:
        index, p = item if isinstance(item, tuple) else (None, item)
        apply(st, p, index)
    return st


class Outbox:
    """Append PCS, ack them by sequence number, list what is pending, compact."""

    def __init__(
        self,
        directory: str,
        fs: FileSystem | None = None,
        durability: str = "always",
        max_delay_s: float = 0.002,
        segment_bytes: int = 4 * 1024 * 1024,
        auto_compact_after: int | None = 4096,
    ) -> None:
        if durability not in ("always", "group"):
            raise ValueError(f"durability must be 'always' or 'group', not {durability!r}")
        if auto_compact_after is not None and auto_compact_after < 1:
            raise ValueError("auto_compact_after must be >= 1 or None")
        self.durability = durability
        self.auto_compact_after = auto_compact_after
        self._acks_since_compact = 0
        self.log = SegmentedLog(directory, fs=fs, segment_bytes=segment_bytes)
        self._lock = threading.Lock()
        self._compact_lock = threading.Lock()
        self._state = fold(self.log.records())
        self._committer = GroupCommitter(self.log, max_delay_s=max_delay_s) if durability == "group" else None
        self.compactions = 0

    # -- writing ------------------------------------------------------------------
    def _durable(self, index: int) -> None:
        if self._committer is not None:
            self._committer.wait(index)
        else:
            self.log.sync()  # returns at once if a concurrent caller's fsync covered it

    def append(self, data: bytes) -> int:
        """Store ``data`` (a signed PCS, verbatim); returns its sequence number
        once the record is durable."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("outbox data must be bytes")
        with self._lock:
            seq = self._state.next_seq
            index = self.log.append(encode_record(PCS, seq, data))
            self._state.pending[seq] = bytes(data)
            self._state.next_seq = seq + 1
        if self._committer is not None:
            self._committer.notify_appended()
        self._durable(index)
        return seq

    def ack(self, seq: int) -> bool:
        """Mark ``seq`` delivered (durably). False if it is not pending."""
        with self._lock:
            if seq not in self._state.pending:
                return False
            index = self.log.append(encode_record(ACK, seq))
            del self._state.pending[seq]
            self._acks_since_compact += 1
            due = self.auto_compact_after is not None and self._acks_since_compact >= self.auto_compact_after
        if self._committer is not None:
            self._committer.notify_appended()
        self._durable(index)
        if due:
            self.compact(wait=False)
        return True

    # -- reading ------------------------------------------------------------------
    def pending(self) -> list[tuple[int, bytes]]:
        """Unacked records in append order as ``(seq, data)``."""
        with self._lock:
            return list(self._state.pending.items())

    def holds(self, seq: int) -> bool:
        """``seq`` is still pending (appended, not acked)."""
        with self._lock:
            return seq in self._state.pending

    def __len__(self) -> int:
        with self._lock:
            return len(self._state.pending)

    @property
    def next_seq(self) -> int:
        return self._state.next_seq

    def stats(self) -> dict:
        """Counts for metrics and ``flk agent`` (never payloads)."""
        segs = self.log.segments()
        with self._lock:
            pending = len(self._state.pending)
        return {"pending": pending, "next_seq": self._state.next_seq, "segments": len(segs),
                "bytes": sum(s.bytes for s in segs), "records": sum(s.count for s in segs),
                "compactions": self.compactions}

    # -- compaction -----------------------------------------------------------------
    def compact(self, min_gain: int = 1, wait: bool = True) -> dict:
        """Rewrite everything before the current segment as just the pending
        records (see the module docstring). Appends and acks from other threads
        may run concurrently. Returns ``{"compacted", "dropped", "kept"}``.
        With ``wait=False`` it returns at once if another compaction runs.
        ``ack`` calls it (``wait=False``) every ``auto_compact_after`` acks."""
        if not self._compact_lock.acquire(blocking=wait):
            return {"compacted": False, "dropped": 0, "kept": 0, "busy": True}
        try:
            return self._compact(min_gain)
        finally:
            self._compact_lock.release()

    def _compact(self, min_gain: int) -> dict:
        with self._lock:
            self._acks_since_compact = 0
            self.log.seal()
            end = self.log.next_index
            start = self.log.first_index
            snap = self._state.copy()
        keep = [encode_record(PCS, s, d) for s, d in snap.pending.items()]
        keep.append(encode_record(MARK, snap.next_seq))
        replaced = end - start
        if replaced - len(keep) < min_gain:
            return {"compacted": False, "dropped": 0, "kept": replaced}
        self.log.compact_prefix(end, keep)
        self.compactions += 1
        return {"compacted": True, "dropped": replaced - len(keep), "kept": len(keep)}

    def close(self) -> None:
        if self._committer is not None:
            self._committer.close()
        self.log.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
