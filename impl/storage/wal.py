"""The segmented, checksummed, append-only write-ahead log (SPEC.md section 12).

Why this module exists: the verifier answers nothing before a request is in
the inbox WAL (INV-WAL-FIRST), and the agent forgets nothing it has not been
told was delivered (outbox, :mod:`flk.impl.agent.outbox`). Both sit on this log.

:class:`SegmentedLog` carries the pure format logic of
:mod:`flk.impl.storage.walformat` (frames, segment names, layout, manifests)
out through a :class:`flk.impl.storage.fs.FileSystem`. It holds locks (it is
shared by request threads and a commit thread) but starts no thread and reads no
clock. Its neighbours: the inbox record codec (:mod:`flk.impl.storage.inbox`),
read-only inspection (:mod:`flk.impl.storage.walinspect`) and the group-commit
thread driver (:mod:`flk.impl.storage.groupcommitter`). The log's errors
(:class:`WalError`, :class:`WalCorruption`) are defined with the format and are
part of this module's API.

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
import posixpath
import threading
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from operator import attrgetter

from .fs import FileSystem, OsFileSystem
from .walformat import (
    FRAME_OVERHEAD,
    SEG_PREFIX,
    AnswerNote,
    WalCorruption,
    WalError,
    build_manifest,
    check_manifest,
    compact_name,
    encode_answers,
    encode_frame,
    manifest_bytes,
    manifest_name,
    plan_layout,
    scan_segment,
    segment_name,
)

__all__ = ["SegmentInfo", "SegmentedLog", "WalError", "WalCorruption"]


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


# the bisection key of a log's segments (consecutive: their end indexes never decrease)
_end_index = attrgetter("end_index")


# flk serve's WAL_PREALLOCATE default: bytes of zeros written ahead of the active segment's records
# (2 workers, 32 connections, 4 interleaved rounds: 1 MiB 14,799 req/s, 4 MiB 14,357, 256 KiB 14,434)
DEFAULT_PREALLOCATE = 1 << 20


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
        preallocate: int = 0,
    ) -> None:
        """``preallocate`` > 0: the active segment is written into zeros written that many bytes
        ahead (a file system with ``open_preallocated``, the real disk's; any other appends):
        an fdatasync then commits no size change (:mod:`flk.impl.storage.fs`). The zeros are
        cut off when the segment is sealed or the log closed, and read as the log's end
        after a crash (:func:`flk.impl.storage.walformat.scan_segment`)."""
        if segment_bytes < FRAME_OVERHEAD + 1:
            raise WalError("segment_bytes too small")
        self.dir = directory
        self.fs: FileSystem = fs if fs is not None else OsFileSystem()
        self.segment_bytes = segment_bytes
        self.flush_bytes = flush_bytes
        self.preallocate = preallocate if preallocate > 0 and hasattr(self.fs, "open_preallocated") else 0
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
        zero_tail = 0
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
                if res.zero_tail:  # zeros written ahead of the records (preallocate): no record's bytes
                    zero_tail += res.size - res.valid_end
                else:
                    torn = {"segment": name, "offset": res.valid_end, "dropped_bytes": res.size - res.valid_end,
                            "reason": res.reason}
                fs.truncate(self._path(name), res.valid_end)
            segments.append(SegmentInfo(name, kind, first, res.count, size, sealed))
            expected_first = first + res.count
        self.recovery = {"removed": removed, "torn_tail": torn, "zero_tail_bytes": zero_tail,
                         "segments": len(segments)}
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
        self._handle = self._open_active(active)
        if active.count == 0:
            fs.fsync_dir(self.dir)
        self._handle.fsync()
        self._next = active.end_index
        self._durable = self._next
        self._durable_bytes = active.bytes  # bytes of the active segment known to be on disk

    def _open_active(self, active: SegmentInfo):
        """The handle that appends to ``active`` (holding ``active.bytes``): into zeros
        written ahead when ``preallocate`` says so."""
        path = self._path(active.name)
        if self.preallocate:
            return self.fs.open_preallocated(path, active.bytes, self.preallocate)  # type: ignore[attr-defined]
        return self.fs.open_append(path)

    def _cut_zeros(self, seg: SegmentInfo) -> None:
        """(Preallocating, the segment's handle closed.) The zeros written ahead of ``seg``'s
        records cut off, durably: a sealed segment ends with its last record."""
        if self.preallocate:
            self.fs.truncate(self._path(seg.name), seg.bytes)

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
        return self.append_framed(b"".join(frames), len(frames), roll)

    def append_framed(self, data: bytes, count: int, roll: bool = True) -> int:
        """:meth:`append_many` of ``count`` records already framed: ``data`` is the
        :func:`encode_frame` of each payload, concatenated (the verifier's compiled
        ``frame_records`` writes it); returns the index of the first."""
        with self._lock:
            self._check_ok()
            first = self._next
            self._next += count
            active = self._segments[-1]
            self._buf += data
            active.bytes += len(data)
            active.count += count
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

    @property
    def active_full(self) -> bool:
        """The active segment reached ``segment_bytes`` (:meth:`roll_if_full` would seal it)."""
        return self._segments[-1].bytes >= self.segment_bytes

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
                    self._cut_zeros(active)
                    self._write_manifest(active, self._active_sha.hexdigest())
                    self._active_sha = hashlib.sha256()
                    new = SegmentInfo(segment_name(active.end_index), "seg", active.end_index, 0, 0, False)
                    self._handle = self._open_active(new)
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

    def sealed_segments(self, end_after: int = -1) -> list[SegmentInfo]:
        """The sealed segments, oldest first; only those holding an index above ``end_after``
        (``end_index > end_after``: a shipper's watermark), found by bisection -- a long-lived
        log holds many segments and a shipper asks at every step."""
        with self._lock:
            segments = self._segments
            start = bisect_right(segments, end_after, key=_end_index)
            return [SegmentInfo(**s.__dict__) for s in segments[start:] if s.sealed]

    # -- reading ------------------------------------------------------------------
    def records(self, from_index: int = 0) -> Iterator[tuple[int, bytes]]:
        """Every record with index >= ``from_index`` as ``(index, payload)``, in
        order, as of the call (later appends are not included)."""
        with self._lock:
            self._check_ok()
            self._flush_locked()
            segments = self._segments
            start = bisect_right(segments, from_index, key=_end_index)
            snap = [(s.name, s.first_index, s.count, s.bytes) for s in segments[start:]]
        for name, first, count, nbytes in snap:  # each ends after from_index (the bisection)
            if count == 0:
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
        return self.retire_sealed_before(index)

    def retire_sealed_before(self, index: int, archive_dir: str | None = None) -> list[str]:
        """Take sealed segments all of whose records are below ``index`` out of the log
        (oldest first): deleted, or -- with ``archive_dir`` -- moved there with their
        manifests (which keep the home answers). Never touches the active segment.

        Crash-safe in either form: the segment leaves the log's directory first (then
        its manifest is an orphan, removed on the next open); an archived segment's
        manifest is copied into ``archive_dir`` before the segment is moved, so the
        archive never holds a segment without its manifest."""
        retired = []
        fs = self.fs
        if archive_dir is not None:
            fs.makedirs(archive_dir)
        with self._maint_lock:
            while True:
                with self._lock:
                    s = self._segments[0]
                    if len(self._segments) < 2 or not s.sealed or s.end_index > index:
                        break
                    self._segments.pop(0)
                mpath = self._path(manifest_name(s.name))
                if archive_dir is None:
                    fs.remove(self._path(s.name))
                else:
                    fs.write_atomic(posixpath.join(archive_dir, manifest_name(s.name)), fs.read(mpath))
                    fs.rename(self._path(s.name), posixpath.join(archive_dir, s.name))
                    fs.fsync_dir(archive_dir)
                fs.fsync_dir(self.dir)
                fs.remove(mpath)
                fs.fsync_dir(self.dir)
                retired.append(s.name)
        return retired

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
                handle = self._open_active(active)
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
                if self._failed is None:  # a clean stop leaves the active segment without zeros
                    with contextlib.suppress(OSError):
                        self._cut_zeros(self._segments[-1])

    def __enter__(self) -> SegmentedLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
