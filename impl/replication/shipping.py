"""Shipping one inbox WAL's sealed segments to an object store (SPEC.md section 11.1).

Why this module exists: a region's requests reach its peers only as sealed
segments of its inbox WAL in a shared object store; something must seal,
upload, remember how far it got and say how far behind it is.

:class:`Shipper` (one per inbox WAL): ``step(now) -> next_wakeup``. Seals
the active segment every ``interval_s``, uploads each sealed segment and
then its manifest (the manifest is the commit marker: a reader ignores a
segment without one) write-once under ``<stream>/<name>`` (the stream is
the region id, ``<region>/w<k>`` for worker k > 0), persists its watermark
(the next unshipped WAL index) atomically, backs off exponentially while the
store is unreachable, and measures the replication lag (upload time minus
``received_at``) of every record it ships, and the age of the oldest record not yet
uploaded (:meth:`Shipper.lag_s`, the ``flk_crr_replication_lag_seconds`` gauge) on the
driver's monotonic clock, so a step of the wall clock does not move it (SPEC 11.9 rule 7). It never ships local damage: a
segment is checked as a reader will check it
(:func:`flk.impl.replication.stream.verify_segment`) before it is uploaded.

Sans-I/O: time is passed in (the wall clock ``now``; the monotonic clock ``mono`` where
the driver has one: ``flk serve`` passes ``time.monotonic()``, the simulator its simulated
time), the store and files are interfaces
(``ObjectStore``, ``FileSystem``), there are no threads here
(``flk.impl.replication.service`` drives it from a thread; ``flk.sim`` from
simulated time).
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..core.backoff import Backoff
from ..storage.fs import FileSystem
from ..storage.inbox import decode_inbox_record
from ..storage.objectstore import ObjectNotFound, ObjectStore, ObjectStoreUnavailable
from ..storage.walformat import WalError, manifest_name
from .stream import CrrError, LagStats, WatermarkFile, lags_since, segment_key, verify_segment

if TYPE_CHECKING:
    from .applying import ReplayMemo

__all__ = ["Shipper", "SEAL_RETRY_S", "SEAL_LOCK_TIMEOUT_S"]

SEAL_RETRY_S = 0.01  # a seal deferred by a running batch is tried again this much later
SEAL_LOCK_TIMEOUT_S = 5.0  # the longest a seal waits for a batch (a thread driver)


class Shipper:
    """Ships one inbox WAL's sealed segments to ``store`` under ``stream``."""

    def __init__(self, log: Any, store: ObjectStore, stream: str, state_path: str,
                 fs: FileSystem | None = None, interval_s: float = 1.0, backoff: Backoff = Backoff(),
                 rng: random.Random | None = None, memo: ReplayMemo | None = None,
                 seal_lock: Any = None) -> None:
        """``memo``: where the verification of a shipped segment is shared with readers of
        the same bytes (:class:`ReplayMemo`). ``seal_lock``: held by the driver that
        appends to ``log`` for each batch (a batch's inbox records and their answer notes
        must reach the same manifest); a seal waits for it (``acquire(True, timeout)``; a lock
        whose ``acquire`` answers False at once -- the simulator's -- defers the seal)."""
        self.log, self.store, self.stream = log, store, stream
        self.seal_lock = seal_lock
        self.memo = memo
        self.interval_s = float(interval_s)
        self.backoff, self.rng = backoff, rng
        self.state = WatermarkFile(state_path, fs or log.fs)
        self.watermark = self.state.load().get(stream, 0)
        self.paused = False
        self.failures = 0
        self.last_error: str | None = None
        self._next_seal: float | None = None
        self._retry_at = 0.0
        self.lag = LagStats()
        self.shipped_segments = 0
        self.shipped_records = 0
        # the oldest record not yet uploaded, as this shipper first saw it: (its ``received_at``,
        # the monotonic clock at its receipt as estimated at that sight, or None without one) --
        # one tuple, so the metrics thread never pairs one record's stamp with another's time
        self._oldest: tuple[float, float | None] | None = None

    def persisted_watermark(self) -> int:
        """The watermark as persisted: no record at or above it has surely left the region, so
        no WAL segment at or above it may leave the log (WAL retention); 0 when it cannot be read."""
        try:
            return int(self.state.load().get(self.stream, 0))
        except Exception:  # noqa: BLE001 -- an unreadable watermark retires nothing
            return 0

    @property
    def oldest_unshipped(self) -> float | None:
        """``received_at`` of the oldest record not yet uploaded (None: none, or not looked at yet)."""
        oldest = self._oldest
        return None if oldest is None else oldest[0]

    def lag_s(self, now: float, mono: float | None = None) -> float:
        """Current replication lag: age of the oldest record not yet uploaded (0 if none).

        With ``mono`` (the driver's monotonic clock, as passed to :meth:`step`) the age is
        ``mono`` minus the record's receipt on that clock, estimated when the shipper first saw
        the record (``mono - (now - received_at)`` then): a later step of the wall clock, forward
        or back, does not move it (SPEC 11.9 rule 7). A step between a record's receipt and that
        first sight -- at most one ship interval -- is the one it cannot see. Without ``mono``:
        ``now - received_at`` (a forward step adds itself, a step back hides the lag)."""
        oldest = self._oldest
        if oldest is None:
            return 0.0
        stamp, since = oldest
        if mono is None or since is None:
            return max(0.0, now - stamp)
        return max(0.0, mono - since)

    def step(self, now: float, mono: float | None = None) -> float:
        """Do what is due at ``now``; return when to call again. ``now`` is the region's wall
        clock, which may step back (NTP, a skewed clock corrected): a deadline further ahead than
        the longest wait this shipper ever sets is one the step left behind, due now; otherwise
        records acked after the step would wait for the clock to catch up (spec/SPEC.md 11.9).
        ``mono``: the driver's monotonic clock at the same moment (:meth:`lag_s`)."""
        if self._next_seal is None or self._next_seal - now > self.interval_s:
            self._next_seal = now
        if self._retry_at - now > self.backoff.cap_s:
            self._retry_at = now
        if self.paused or now < self._retry_at:
            with contextlib.suppress(WalError, OSError):
                self._find_oldest_unshipped(now, mono)  # the lag keeps growing while nothing ships
            return now + self.interval_s if self.paused else self._retry_at
        retry = None
        try:
            if now >= self._next_seal:
                if self._seal():
                    self._next_seal = now + self.interval_s
                else:  # a batch is between its records and their answers: seal right after it
                    retry = now + SEAL_RETRY_S
            self.ship_sealed(now, mono)
        except (ObjectStoreUnavailable, WalError, OSError) as exc:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._retry_at = now + self.backoff.delay(self.failures, self.rng)
            return self._retry_at
        self.failures, self.last_error = 0, None
        return self._next_seal if retry is None else retry

    def _seal(self) -> bool:
        """Seal the active segment between two batches; False: not now (the lock is held)."""
        lock = self.seal_lock
        if lock is None:
            self.log.seal()
            return True
        if not lock.acquire(True, SEAL_LOCK_TIMEOUT_S):
            return False
        try:
            self.log.seal()
        finally:
            lock.release()
        return True

    def _put_once(self, key: str, data: bytes, meta: Mapping[str, str] | None = None) -> None:
        if not self.store.put(key, data, meta):
            try:
                theirs = self.store.get(key)
            except ObjectNotFound:  # pragma: no cover - deleted between put and get
                theirs = b""
            if hashlib.sha256(theirs).digest() != hashlib.sha256(data).digest():
                raise CrrError(f"{key} already exists with other content (two regions share stream "
                               f"{self.stream!r}, or the WAL was recreated)")

    def ship_sealed(self, now: float, mono: float | None = None) -> int:
        """Upload every sealed segment at or after the watermark; returns how many."""
        n = 0
        for seg in self.log.sealed_segments(self.watermark):  # each ends after the watermark
            if seg.count == 0:
                continue
            if seg.first_index != self.watermark:
                raise CrrError(f"{self.stream}: WAL segment {seg.name} starts at {seg.first_index}, "
                               f"watermark is {self.watermark} (records dropped before shipping)")
            path = posixpath.join(self.log.dir, seg.name)
            data = self.log.fs.read(path)[: seg.bytes]
            mraw = self.log.fs.read(posixpath.join(self.log.dir, manifest_name(seg.name)))
            # never ship local damage
            m, records = (verify_segment(self.stream, seg.name, mraw, data) if self.memo is None else
                          self.memo.verified(self.stream, seg.name, mraw, data, None))
            # the verified manifest's sha256 is the segment's (verify_segment compared them): not hashed again
            meta = {"first-index": str(seg.first_index), "count": str(seg.count), "sha256": m["sha256"]}
            self._put_once(segment_key(self.stream, seg.name), data, meta)
            self._put_once(segment_key(self.stream, manifest_name(seg.name)), mraw)
            self.lag.add_many(lags_since(now, records))
            self.watermark = seg.end_index
            self.state.save({self.stream: self.watermark})
            self.shipped_segments += 1
            self.shipped_records += seg.count
            n += 1
        if n:
            self._oldest = None
        self._find_oldest_unshipped(now, mono)
        return n

    def _find_oldest_unshipped(self, now: float, mono: float | None) -> None:
        """``received_at`` of the first record at or after the watermark, and its receipt on the
        monotonic clock (``mono`` less its age on the wall clock now; a stamp in this clock's
        future: received now). Read only while unknown: it cannot change until the watermark moves."""
        if self._oldest is not None:
            return
        for _, payload in self.log.records(self.watermark):
            stamp = decode_inbox_record(payload).received_at
            self._oldest = (stamp, None if mono is None else mono - max(0.0, now - stamp))
            break

    def metrics(self, now: float, mono: float | None = None) -> dict[str, Any]:
        return {"stream": self.stream, "watermark": self.watermark, "shipped_segments": self.shipped_segments,
                "shipped_records": self.shipped_records, "lag_s": self.lag_s(now, mono),
                "lag_p50_s": self.lag.quantile(0.5), "lag_p99_s": self.lag.quantile(0.99),
                "lag_max_s": self.lag.max_s, "failures": self.failures, "last_error": self.last_error,
                "paused": self.paused}
