"""Cross-region replication of the inbox WAL (SPEC.md section 11).

Why this module exists: every region must eventually see every request any
region accepted, and must process it exactly as its origin did, so that
identical payloads produce identical outcomes everywhere and conflicts are
detected and merged (``flk.impl.replication.reconcile``). We replicate the *input* (the
inbox WAL), not the dedup state: the receiving region replays each record
through the same verify pipeline (``Verifier.handle(..., replay=True)``), so a
forged or corrupted record can never bypass signature verification.

Theory of operation::

    region A                          object store                  region B
    inbox WAL --seal--> sealed seg --put--> A/seg-N.log           list A/ after watermark
                         + manifest --put--> A/seg-N.manifest.json --> get, check SHA-256,
    Shipper watermark (next index)                                    scan frames, decode,
                                                                      replay steps 3-8 as A,
                                                                      Reader watermark

* :class:`Shipper` (one per inbox WAL): ``step(now) -> next_wakeup``. Seals
  the active segment every ``interval_s``, uploads each sealed segment and
  then its manifest (the manifest is the commit marker: a reader ignores a
  segment without one) write-once under ``<stream>/<name>`` (the stream is
  the region id, ``<region>/w<k>`` for worker k > 0), persists its watermark
  (the next unshipped WAL index) atomically, backs off exponentially while the
  store is unreachable, and measures the replication lag (upload time minus
  ``received_at``) of every record it ships.
* :class:`Reader` (one per region): ``step(now) -> next_wakeup``. For each
  source region (a topology: every peer, a per-tenant filter, optionally the
  region itself so its reconciler sees its own outcomes), lists the streams
  and their manifests after the stream's watermark, in index order; verifies
  the manifest and the segment's SHA-256 and frames and every record's
  encoding; a bad segment is **rejected and reported** (``rejected``,
  ``on_reject``) and the stream stops there -- never applied, never skipped.
  Good records are replayed by :class:`ReplayApplier`; the watermark advances
  after the whole segment. Replaying a segment again is a no-op
  (INV-IDEMPOTENT-REPLAY: put-if-absent of the same outcome). A record whose
  replay raises unexpectedly (a bug, not a bad signature: that is a 4xx
  outcome) is *poison*: quarantined (``read-quarantine.jsonl`` beside the
  watermarks, :mod:`flk.impl.storage.quarantine`; ``on_quarantine`` for the
  driver's log line and audit entry; ``failures``/``last_error`` and
  ``quarantine`` in :meth:`Reader.metrics`) and the stream goes on past it. A
  store outage is not poison: the segment is retried after a backoff.
* :class:`ReplayApplier`: replays one record as its *origin* region did: a
  ``Verifier`` with the record's region, ``now = received_at``. It answers the
  pipeline's ``DedupGet`` with "absent" so that the pipeline always computes
  the origin outcome (steps 3, 4, 6 -- the signature is always checked) and
  performs the authoritative atomic ``put_if_absent`` (INV-FWW decides, so the
  local store ends exactly as with a plain replay). The computed origin
  outcome and the local winner are handed to the reconciler.

Sans-I/O: time is passed in, the store and files are interfaces
(``ObjectStore``, ``FileSystem``), there are no threads here
(``flk.impl.replication.service`` drives these from a thread; ``flk.sim`` from
simulated time).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import posixpath
import random
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.backoff import Backoff
from ..core.errors import InvalidInput
from ..dedup import StoredOutcome, StoreUnavailable
from ..storage.fs import FileSystem, OsFileSystem
from ..storage.objectstore import ObjectNotFound, ObjectStore, ObjectStoreUnavailable
from ..storage.quarantine import FILE_NAME as QUARANTINE_FILE
from ..storage.quarantine import Quarantine
from ..storage.wal import (
    LOG_SUFFIX,
    MANIFEST_SUFFIX,
    InboxRecord,
    WalError,
    check_manifest,
    decode_inbox_record,
    encode_inbox_record,
    manifest_name,
    parse_name,
    scan_segment,
)
from ..verifier.pipeline import DedupGet, DedupPut, Emit, Request, Response, Verifier, WalAppend

WATERMARK_FORMAT = "flk-crr-watermark/1"


class CrrError(Exception):
    """A replication problem that needs an operator (not a transient outage)."""


class SegmentRejected(CrrError):
    """A shipped segment failed verification; the stream stops at it."""

    def __init__(self, stream: str, segment: str, problems: list[str]) -> None:
        super().__init__(f"{stream}/{segment}: " + "; ".join(problems))
        self.stream, self.segment, self.problems = stream, segment, list(problems)


# -- small pure helpers --------------------------------------------------------------------

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
        doc = json.loads(self.fs.read(self.path))
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
        vals = [max(0.0, float(lag)) for lag in lags]
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


def verify_segment(stream: str, name: str, manifest_raw: bytes, data: bytes,
                   expect_first: int | None = None) -> tuple[dict, list[InboxRecord]]:
    """Check a downloaded segment against its manifest; decode its records.
    Raises :class:`SegmentRejected` naming every problem."""
    problems: list[str] = []
    try:
        m = json.loads(manifest_raw)
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
    records = []
    for k, (off, ln) in enumerate(res.spans):
        try:
            records.append(decode_inbox_record(bytes(data[off: off + ln])))
        except InvalidInput as exc:
            raise SegmentRejected(stream, name, [f"record {first + k}: {exc}"]) from None
    return m, records


# -- shipping ------------------------------------------------------------------------------

class Shipper:
    """Ships one inbox WAL's sealed segments to ``store`` under ``stream``."""

    def __init__(self, log: Any, store: ObjectStore, stream: str, state_path: str,
                 fs: FileSystem | None = None, interval_s: float = 1.0, backoff: Backoff = Backoff(),
                 rng: random.Random | None = None, memo: ReplayMemo | None = None) -> None:
        """``memo``: where the verification of a shipped segment is shared with readers of
        the same bytes (:class:`ReplayMemo`)."""
        self.log, self.store, self.stream = log, store, stream
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
        self.oldest_unshipped: float | None = None

    def lag_s(self, now: float) -> float:
        """Current replication lag: age of the oldest record not yet uploaded (0 if none)."""
        return 0.0 if self.oldest_unshipped is None else max(0.0, now - self.oldest_unshipped)

    def step(self, now: float) -> float:
        """Do what is due at ``now``; return when to call again. ``now`` is the region's wall
        clock, which may step back (NTP, a skewed clock corrected): a deadline further ahead than
        the longest wait this shipper ever sets is one the step left behind, due now; otherwise
        records acked after the step would wait for the clock to catch up (spec/SPEC.md 11.9)."""
        if self._next_seal is None or self._next_seal - now > self.interval_s:
            self._next_seal = now
        if self._retry_at - now > self.backoff.cap_s:
            self._retry_at = now
        if self.paused or now < self._retry_at:
            with contextlib.suppress(WalError, OSError):
                self._find_oldest_unshipped()  # the lag keeps growing while nothing ships
            return now + self.interval_s if self.paused else self._retry_at
        try:
            if now >= self._next_seal:
                self.log.seal()
                self._next_seal = now + self.interval_s
            self.ship_sealed(now)
        except (ObjectStoreUnavailable, WalError, OSError) as exc:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._retry_at = now + self.backoff.delay(self.failures, self.rng)
            return self._retry_at
        self.failures, self.last_error = 0, None
        return self._next_seal

    def _put_once(self, key: str, data: bytes, meta: Mapping[str, str] | None = None) -> None:
        if not self.store.put(key, data, meta):
            try:
                theirs = self.store.get(key)
            except ObjectNotFound:  # pragma: no cover - deleted between put and get
                theirs = b""
            if hashlib.sha256(theirs).digest() != hashlib.sha256(data).digest():
                raise CrrError(f"{key} already exists with other content (two regions share stream "
                               f"{self.stream!r}, or the WAL was recreated)")

    def ship_sealed(self, now: float) -> int:
        """Upload every sealed segment at or after the watermark; returns how many."""
        n = 0
        for seg in self.log.sealed_segments():
            if seg.end_index <= self.watermark or seg.count == 0:
                continue
            if seg.first_index != self.watermark:
                raise CrrError(f"{self.stream}: WAL segment {seg.name} starts at {seg.first_index}, "
                               f"watermark is {self.watermark} (records dropped before shipping)")
            path = posixpath.join(self.log.dir, seg.name)
            data = self.log.fs.read(path)[: seg.bytes]
            mraw = self.log.fs.read(posixpath.join(self.log.dir, manifest_name(seg.name)))
            # never ship local damage
            _, records = (verify_segment(self.stream, seg.name, mraw, data) if self.memo is None else
                          self.memo.verified(self.stream, seg.name, mraw, data, None))
            meta = {"first-index": str(seg.first_index), "count": str(seg.count),
                    "sha256": hashlib.sha256(data).hexdigest()}
            self._put_once(segment_key(self.stream, seg.name), data, meta)
            self._put_once(segment_key(self.stream, manifest_name(seg.name)), mraw)
            self.lag.add_many(now - rec.received_at for rec in records)
            self.watermark = seg.end_index
            self.state.save({self.stream: self.watermark})
            self.shipped_segments += 1
            self.shipped_records += seg.count
            n += 1
        if n:
            self.oldest_unshipped = None
        self._find_oldest_unshipped()
        return n

    def _find_oldest_unshipped(self) -> None:
        """``received_at`` of the first record at or after the watermark (read only
        while unknown: it cannot change until the watermark moves)."""
        if self.oldest_unshipped is not None:
            return
        for _, payload in self.log.records(self.watermark):
            self.oldest_unshipped = decode_inbox_record(payload).received_at
            break

    def metrics(self, now: float) -> dict[str, Any]:
        return {"stream": self.stream, "watermark": self.watermark, "shipped_segments": self.shipped_segments,
                "shipped_records": self.shipped_records, "lag_s": self.lag_s(now),
                "lag_p50_s": self.lag.quantile(0.5), "lag_p99_s": self.lag.quantile(0.99),
                "lag_max_s": self.lag.max_s, "failures": self.failures, "last_error": self.last_error,
                "paused": self.paused}


# -- applying ------------------------------------------------------------------------------

Observer = Callable[[str, str, StoredOutcome, float], Any]
HomeOutcome = Callable[[str, str, str], "StoredOutcome | None"]  # (home region, tenant, pcs_id)


def verifier_for_region(base: Verifier, region: str) -> Verifier:
    """The same verifier configuration answering as ``region`` (the record's origin)."""
    if region == base.region:
        return base
    return Verifier(base.tenants, base.policy, region, base.limits, base.hooks, base.limiter, base.reject_status)


@dataclass
class ApplyResult:
    response: Response
    candidate: StoredOutcome | None = None  # the origin outcome the pipeline computed
    winner: StoredOutcome | None = None  # what the local store holds afterwards
    stored: bool = False  # this replay stored it (first time here)
    tenant: str | None = None
    pcs_id: str | None = None
    home_rejected: bool = False  # the home region answered 409: not a write anywhere



_MISS = object()


class ReplayMemo:
    """The dedup writes replay computed, shared by appliers that replay the same records
    (a process driving several regions' appliers: the simulator).

    Replaying a record up to its dedup write reads no store (``DedupGet`` is answered
    "absent"): the write is a function of the record and the verifier's configuration
    (class, origin region, tenants, policy, limits, hooks, reject statuses). An applier
    that finds the record here under an equal configuration takes that write instead of
    verifying the record again. An entry is dropped after ``uses`` look-ups (one per
    applier reading the record) or once ``capacity`` newer entries came; a dropped entry
    is only computed again."""

    def __init__(self, uses: int, capacity: int = 1 << 16, segment_uses: int | None = None) -> None:
        """``segment_uses``: verifications of one shipped segment (default ``uses``)."""
        self.uses, self.capacity = int(uses), int(capacity)
        self.segment_uses = self.uses if segment_uses is None else int(segment_uses)
        self._d: dict[tuple, list] = {}  # key -> [write or None, look-ups left]
        self._segments: dict[tuple, list] = {}  # (stream, name) -> [manifest, data, result, first, left]
        self.hits = self.misses = 0

    def verified(self, stream: str, name: str, manifest_raw: bytes, data: bytes,
                 expect_first: int | None) -> tuple[dict, list[InboxRecord]]:
        """:func:`verify_segment`, reused for the very same (immutable) manifest and segment
        objects (a shipper, an object store and readers sharing bytes) when ``expect_first``
        is None or the segment's first index; a rejection is never memoised."""
        key = (stream, name)
        hit = self._segments.get(key)
        if (hit is not None and hit[0] is manifest_raw and hit[1] is data
                and (expect_first is None or expect_first == hit[3])):
            hit[4] -= 1
            if hit[4] <= 0:
                del self._segments[key]
            return hit[2]
        result = verify_segment(stream, name, manifest_raw, data, expect_first=expect_first)
        if self.segment_uses > 1 and isinstance(manifest_raw, bytes) and isinstance(data, bytes):
            self._segments[key] = [manifest_raw, data, result, int(result[0]["first_index"]), self.segment_uses - 1]
            if len(self._segments) > 256:
                del self._segments[next(iter(self._segments))]
        return result

    @staticmethod
    def config(v: Verifier) -> tuple:
        """What a replay's write depends on besides the record."""
        return (type(v), v.region, v.tenants, v.policy, v.limits, v.hooks, tuple(sorted(v.reject_status.items())))

    def get(self, key: tuple) -> Any:
        """The write memoised for ``key`` (None: no write), or ``_MISS``."""
        entry = self._d.get(key)
        if entry is None:
            self.misses += 1
            return _MISS
        self.hits += 1
        entry[1] -= 1
        if entry[1] <= 0:
            del self._d[key]
        return entry[0]

    def put(self, key: tuple, write: DedupPut | None) -> None:
        if self.uses > 1:
            self._d[key] = [write, self.uses - 1]
            if len(self._d) > self.capacity:
                del self._d[next(iter(self._d))]


class ReplayApplier:
    """Replays inbox records into the local dedup ``store`` as their origin
    region processed them; reports outcomes to ``observer(tenant, pcs_id,
    outcome, now)`` (the reconciler). ``StoreUnavailable`` propagates: the
    caller must not advance past a record that was not applied.

    ``home_outcome(home_region, tenant, pcs_id)`` answers what the record's home
    region stored for the key. With it, a record its home answered 409 (a
    different payload was stored there first) is replayed as that rejection:
    nothing is stored and the reconciler hears only the outcome the home held,
    so no conflict is flagged that no two regions acked. Without it (a driver
    that cannot ask the home) every record is replayed as the write it would
    have been alone, and such a record can be flagged as a conflict."""

    def __init__(self, verifier: Verifier, store: Any, observer: Observer | None = None,
                 sink: Callable[[Mapping[str, Any]], None] | None = None,
                 home_outcome: HomeOutcome | None = None, memo: ReplayMemo | None = None) -> None:
        """``memo``: writes shared with other appliers replaying the same records (used by
        the batch path when there is no ``sink``: that path emits nothing)."""
        self.verifier, self.store, self.observer, self.sink = verifier, store, observer, sink
        self.home_outcome = home_outcome  # the home region's stored outcome, where a driver can ask it
        self.memo = memo
        self.home_rejected = 0
        self._by_region: dict[str, Verifier] = {}
        self._config: dict[str, tuple] = {}  # origin region -> ReplayMemo.config of its verifier
        self.applied = 0
        self.stored = 0

    def _verifier(self, region: str) -> Verifier:
        v = self._by_region.get(region)
        if v is None:
            v = self._by_region[region] = verifier_for_region(self.verifier, region)
            self._config[region] = ReplayMemo.config(v)
        return v

    def _advance(self, gen, reply: Any, out: ApplyResult) -> DedupPut | None:
        """Run ``gen`` until it needs a dedup write (returned) or answers (None)."""
        while True:
            try:
                eff = gen.send(reply)
            except StopIteration as stop:
                out.response = stop.value
                return None
            reply = None
            if isinstance(eff, Emit):
                if self.sink is not None:
                    self.sink(eff.event)
            elif isinstance(eff, DedupGet):
                reply = None  # "absent": always compute the origin outcome; put-if-absent decides
            elif isinstance(eff, DedupPut):
                out.candidate, out.tenant, out.pcs_id = eff.outcome, eff.tenant, eff.pcs_id
                return eff
            elif isinstance(eff, WalAppend):  # pragma: no cover - replay never appends
                raise CrrError("replay yielded a WAL append")
            else:  # pragma: no cover
                raise TypeError(f"unknown effect {type(eff).__name__}")

    def _rejected_at_home(self, rec: InboxRecord, eff: DedupPut) -> StoredOutcome | None:
        """The home region's stored outcome when it shows that the home answered
        409 to ``rec``: first-write-wins never replaces a stored outcome, so a
        different payload digest there was stored before ``rec`` arrived. Asked
        before the write, so a rejected payload is never stored anywhere, and
        every region decides alike (the same question, the same answer)."""
        if self.home_outcome is None:
            return None
        held = self.home_outcome(rec.region, eff.tenant, eff.pcs_id)
        if held is None or held.payload_digest == eff.outcome.payload_digest:
            return None
        self.home_rejected += 1
        return held

    def _finish(self, out: ApplyResult, now: float) -> None:
        self.applied += 1
        if out.stored:
            self.stored += 1
        if out.home_rejected:
            out.candidate = None  # not a write: the reconciler hears what the home held
            if self.observer is not None:
                self.observer(out.tenant, out.pcs_id, out.winner, now)
        if self.observer is not None and out.candidate is not None:
            self.observer(out.tenant, out.pcs_id, out.candidate, now)
            if out.winner is not None and out.winner != out.candidate:
                self.observer(out.tenant, out.pcs_id, out.winner, now)

    def _gen(self, rec: InboxRecord):
        return self._verifier(rec.region).handle(Request(rec.body, rec.tenant or None), rec.received_at, replay=True)

    def apply(self, rec: InboxRecord, now: float) -> ApplyResult:
        """Replay one record; its put-if-absent uses ``now = received_at`` exactly."""
        gen, out = self._gen(rec), ApplyResult(Response(500, {}, b""))
        eff = self._advance(gen, None, out)
        if eff is not None:
            held = self._rejected_at_home(rec, eff)
            if held is not None:
                won, winner, out.home_rejected = False, held, True
            else:
                won, winner = self.store.put_if_absent(eff.tenant, eff.pcs_id, eff.outcome, eff.now, eff.ttl_s)
            out.winner, out.stored = winner, won
            if self._advance(gen, (won, winner), out) is not None:  # pragma: no cover
                raise CrrError("replay yielded a second dedup write")
        self._finish(out, now)
        return out

    def apply_many(self, recs: list[InboxRecord], now: float) -> list[ApplyResult]:
        """Replay several records with ONE ``put_many_if_absent`` (one store
        transaction; puts in record order, so an in-batch duplicate loses to the
        earlier record exactly as sequentially). The batch's store time is the
        latest ``received_at`` of the batch: entries and liveness checks use it
        for their TTL (a difference of at most the batch's time span on a
        14-day TTL); the stored outcomes are exactly those of :meth:`apply`."""
        outs = [ApplyResult(Response(500, {}, b"")) for _ in recs]
        gens = [self._gen(r) for r in recs]
        puts: list[tuple[int, DedupPut]] = []
        for i, g in enumerate(gens):
            eff = self._advance(g, None, outs[i])
            if eff is None:
                continue
            held = self._rejected_at_home(recs[i], eff)
            if held is None:
                puts.append((i, eff))
                continue
            outs[i].winner, outs[i].home_rejected = held, True
            if self._advance(g, (False, held), outs[i]) is not None:  # pragma: no cover
                raise CrrError("replay yielded a second dedup write")
        if puts:
            ttls = {e.ttl_s for _, e in puts}
            if len(ttls) != 1:  # pragma: no cover - one verifier configuration per applier
                raise CrrError("records of one batch with different TTLs")
            res = self.store.put_many_if_absent([(e.tenant, e.pcs_id, e.outcome) for _, e in puts],
                                                max(e.now for _, e in puts), puts[0][1].ttl_s)
            for (i, _), (won, winner) in zip(puts, res, strict=True):
                outs[i].winner, outs[i].stored = winner, won
                if self._advance(gens[i], (won, winner), outs[i]) is not None:  # pragma: no cover
                    raise CrrError("replay yielded a second dedup write")
        for out in outs:
            self._finish(out, now)
        return outs

    def _write_of(self, rec: InboxRecord) -> DedupPut | None:
        """The dedup write replaying ``rec`` asks for (None: it is answered without one, a 4xx),
        from the memo or by running the pipeline up to that write."""
        memo = self.memo
        v = self._verifier(rec.region)
        if memo is not None:
            key = (self._config[rec.region], rec.tenant, rec.received_at, rec.body)
            write = memo.get(key)
            if write is not _MISS:
                return write
        gen = v.handle(Request(rec.body, rec.tenant or None), rec.received_at, replay=True)
        write, reply = None, None
        try:
            while True:
                eff = gen.send(reply)
                if isinstance(eff, DedupPut):
                    write = eff
                    break
                if isinstance(eff, WalAppend):  # pragma: no cover - replay never appends
                    raise CrrError("replay yielded a WAL append")
                reply = None  # DedupGet: "absent"; Emit: this path has no sink
        except StopIteration:
            pass
        finally:
            gen.close()
        if memo is not None:
            memo.put(key, write)
        return write

    def replay_batch(self, recs: list[InboxRecord], now: float) -> None:
        """:meth:`apply_many` for a caller that needs neither answers nor events (no
        ``sink``): the same store transaction, store contents and reconciler reports, in
        the same order, without an :class:`ApplyResult` per record. The pipeline runs up
        to each record's dedup write (or the write comes from ``memo``); what it would do
        after the write only builds the answer and its events."""
        writes = [self._write_of(r) for r in recs]
        puts: list[tuple[int, DedupPut]] = []
        held: dict[int, StoredOutcome] = {}
        for i, eff in enumerate(writes):
            if eff is not None:
                home = self._rejected_at_home(recs[i], eff)
                if home is None:
                    puts.append((i, eff))
                else:
                    held[i] = home
        results: dict[int, tuple[bool, StoredOutcome]] = {}
        if puts:
            ttl = puts[0][1].ttl_s
            if any(e.ttl_s != ttl for _, e in puts):  # pragma: no cover - one verifier configuration
                raise CrrError("records of one batch with different TTLs")
            res = self.store.put_many_if_absent([(e.tenant, e.pcs_id, e.outcome) for _, e in puts],
                                                max(e.now for _, e in puts), ttl)
            results = {i: r for (i, _), r in zip(puts, res, strict=True)}
        observe = self.observer
        self.applied += len(recs)
        for i, eff in enumerate(writes):
            if eff is None:
                continue
            if i in held:
                if observe is not None:
                    observe(eff.tenant, eff.pcs_id, held[i], now)
                continue
            won, winner = results[i]
            self.stored += bool(won)
            if observe is not None:
                observe(eff.tenant, eff.pcs_id, eff.outcome, now)
                if winner is not None and winner is not eff.outcome and winner != eff.outcome:
                    observe(eff.tenant, eff.pcs_id, winner, now)

    def apply_isolating(self, recs: list[InboxRecord], now: float, batch: bool,
                        on_poison: Callable[[int, InboxRecord, Exception], None],
                        refusals_are_poison: bool = False) -> int:
        """Replay ``recs`` (in one transaction when ``batch``); when that raises
        unexpectedly, replay them one at a time and hand each record that raises to
        ``on_poison(position, record, error)``. ``StoreUnavailable`` propagates (an
        outage is not poison; re-applying is a no-op) -- unless
        ``refusals_are_poison``, the store answers a ping and it stored other
        records of ``recs``: then the refused ones are records the store refuses
        every time. Returns the poison count."""
        try:
            if batch and self.sink is None:
                self.replay_batch(recs, now)
            elif batch:
                self.apply_many(recs, now)
            else:
                for rec in recs:
                    self.apply(rec, now)
            return 0
        except StoreUnavailable:
            if not refusals_are_poison:
                raise
        except Exception:  # noqa: BLE001 -- find the poison record(s) one by one
            pass
        poisoned, wrote = 0, False
        refused: list[tuple[int, InboxRecord, StoreUnavailable]] = []
        for position, rec in enumerate(recs):
            try:
                wrote = self.apply(rec, now).winner is not None or wrote
            except StoreUnavailable as exc:
                if not refusals_are_poison:
                    raise
                refused.append((position, rec, exc))
            except Exception as exc:  # noqa: BLE001 -- a poison record: quarantined by the caller
                poisoned += 1
                on_poison(position, rec, exc)
        if refused and not (wrote and self._store_answers()):
            raise refused[0][2]  # the store stored nothing: an outage, not poison
        for position, rec, exc in refused:
            on_poison(position, rec, exc)
        return poisoned + len(refused)

    def _store_answers(self) -> bool:
        try:
            return bool(self.store.ping())
        except Exception:  # noqa: BLE001 -- any failure to ping is an outage
            return False


# -- reading -------------------------------------------------------------------------------

TenantFilter = frozenset[str] | None


@dataclass
class Topology:
    """Which sources a region reads. ``sources[region] = None`` reads every
    tenant of that region; a frozenset reads only those tenants (selective)."""

    sources: dict[str, TenantFilter] = field(default_factory=dict)

    @staticmethod
    def full_mesh(regions: Iterable[str], me: str, include_self: bool = True) -> Topology:
        return Topology({r: None for r in sorted(set(regions)) if include_self or r != me})

    @staticmethod
    def selective(me: str, peers: Mapping[str, Iterable[str] | None], include_self: bool = True) -> Topology:
        src: dict[str, TenantFilter] = {r: (None if t is None else frozenset(t)) for r, t in peers.items()}
        if include_self:
            src.setdefault(me, None)
        return Topology(dict(sorted(src.items())))

    @staticmethod
    def parse(text: str, me: str, include_self: bool = True) -> Topology:
        """``"eu,us"`` (full) or ``"eu:ta+tb,us"`` (eu only for tenants ta and tb)."""
        peers: dict[str, list[str] | None] = {}
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            region, _, tenants = part.partition(":")
            peers[region.strip()] = [t for t in tenants.split("+") if t] if tenants else None
        return Topology.selective(me, peers, include_self)


class Reader:
    """Reads the sources of a topology from ``store`` and applies their records."""

    def __init__(self, store: ObjectStore, topology: Topology, applier: ReplayApplier, state_path: str,
                 fs: FileSystem | None = None, interval_s: float = 1.0, backoff: Backoff = Backoff(),
                 rng: random.Random | None = None, on_reject: Callable[[SegmentRejected], None] | None = None,
                 strict: bool = False, batch: int = 256, quarantine: Quarantine | None = None,
                 on_quarantine: Callable[[dict[str, Any]], None] | None = None,
                 refusals_before_poison: int = 5) -> None:
        """``batch``: records replayed per store transaction (:meth:`ReplayApplier.apply_many`);
        0 replays one record at a time with its exact ``received_at`` as store time.
        ``quarantine``: where poison records go (default ``<state>-quarantine.jsonl``
        beside ``state_path``); ``on_quarantine(entry)`` gets each new one without payload.
        After ``refusals_before_poison`` polls in a row failed with ``StoreUnavailable``
        while the store answers pings, a record the store refuses is poison too."""
        self.store, self.topology, self.applier = store, topology, applier
        self.batch = int(batch)
        self.state = WatermarkFile(state_path, fs)
        self.watermarks: dict[str, int] = self.state.load()
        self.quarantine = quarantine if quarantine is not None else Quarantine(
            posixpath.splitext(state_path)[0] + "-" + QUARANTINE_FILE, self.state.fs)
        self.on_quarantine = on_quarantine
        self.refusals_before_poison = int(refusals_before_poison)
        self._store_failures = 0  # polls in a row that ended in StoreUnavailable
        self._poisoned_this_poll: str | None = None
        self.interval_s, self.backoff, self.rng = float(interval_s), backoff, rng
        self.on_reject, self.strict = on_reject, strict
        self.rejected: dict[str, SegmentRejected] = {}
        self.paused = False
        self.failures = 0
        self.last_error: str | None = None
        self._retry_at = 0.0
        self.applied_segments = 0
        self.applied_records = 0
        self.filtered_records = 0
        self.apply_lag = LagStats()

    def streams(self, source: str) -> dict[str, list[tuple[int, str]]]:
        """stream -> sorted [(first_index, segment log name)] with a manifest in the store."""
        out: dict[str, list[tuple[int, str]]] = {}
        for key in self.store.list(source + "/"):
            stream, _, name = key.rpartition("/")
            if not name.endswith(MANIFEST_SUFFIX) or not (stream == source or stream.startswith(source + "/w")):
                continue
            log_name = name[: -len(MANIFEST_SUFFIX)] + LOG_SUFFIX
            parsed = parse_name(log_name)
            if parsed is None or parsed[0] != "seg":
                continue
            out.setdefault(stream, []).append((parsed[1], log_name))
        return {s: sorted(v) for s, v in sorted(out.items())}

    def step(self, now: float) -> float:
        """Poll if due at ``now`` (the wall clock; a retry deadline left further ahead than the
        backoff cap by a clock stepping back is due now, as in :meth:`Shipper.step`)."""
        if self.paused:
            return now + self.interval_s
        if self._retry_at - now > self.backoff.cap_s:
            self._retry_at = now
        if now < self._retry_at:
            return self._retry_at
        self._poisoned_this_poll = None
        try:
            self.poll(now)
        except (ObjectStoreUnavailable, StoreUnavailable) as exc:
            self.failures += 1
            self._store_failures = self._store_failures + 1 if isinstance(exc, StoreUnavailable) else 0
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._retry_at = now + self.backoff.delay(self.failures, self.rng)
            return self._retry_at
        self._store_failures = 0
        if self._poisoned_this_poll is not None:  # went on past it, but say so
            self.failures += 1
            self.last_error = self._poisoned_this_poll
        else:
            self.failures, self.last_error = 0, None
        return now + self.interval_s

    def poll(self, now: float) -> int:
        """Apply every new verified segment of every source; returns segments applied."""
        n = 0
        for source, tenants in self.topology.sources.items():
            for stream, segs in self.streams(source).items():
                n += self._read_stream(stream, source, tenants, segs, now)
        return n

    def _read_stream(self, stream: str, source: str, tenants: TenantFilter, segs, now: float) -> int:
        n = 0
        for first, name in segs:
            wm = self.watermarks.get(stream, 0)
            if first < wm:
                continue
            try:
                try:
                    mraw = self.store.get(segment_key(stream, manifest_name(name)))
                except ObjectNotFound:
                    return n  # listed but gone (deleted meanwhile): look again next poll
                try:
                    data = self.store.get(segment_key(stream, name))
                except ObjectNotFound:
                    raise SegmentRejected(stream, name, ["manifest present but segment missing"]) from None
                memo = self.applier.memo
                m, records = (verify_segment(stream, name, mraw, data, expect_first=wm) if memo is None else
                              memo.verified(stream, name, mraw, data, wm))
                bad = [r.region for r in records if r.region != source]
                if bad:
                    raise SegmentRejected(stream, name, [f"record of region {bad[0]!r} in a stream of {source!r}"])
            except SegmentRejected as rej:
                if stream not in self.rejected or self.rejected[stream].segment != rej.segment:
                    self.rejected[stream] = rej
                    if self.on_reject is not None:
                        self.on_reject(rej)
                if self.strict:
                    raise
                return n  # the stream stops here: never applied, never skipped
            self.rejected.pop(stream, None)
            wanted = [(first + k, r) for k, r in enumerate(records)
                      if tenants is None or (r.tenant or "default") in tenants]
            self.filtered_records += len(records) - len(wanted)
            step = self.batch if self.batch > 0 else 1
            for i in range(0, len(wanted), step):
                chunk = wanted[i: i + step]

                def poison(position: int, rec: InboxRecord, error: Exception, chunk=chunk, name=name) -> None:
                    self._quarantine(stream, name, chunk[position][0], rec, error, now)

                bad = self.applier.apply_isolating([r for _, r in chunk], now, self.batch > 0, poison,
                                                   self._store_failures >= self.refusals_before_poison)
                self.apply_lag.add_many(now - rec.received_at for _, rec in chunk)
                self.applied_records += len(chunk) - bad
            self.watermarks[stream] = first + int(m["count"])
            self.state.save(self.watermarks)
            self.applied_segments += 1
            n += 1
        return n

    def _quarantine(self, stream: str, segment: str, index: int, rec: InboxRecord, error: Exception,
                    now: float) -> None:
        entry = self.quarantine.add(stream, index, segment, encode_inbox_record(rec), error, now,
                                    tenant=rec.tenant or None, region=rec.region)
        if entry is None:  # met before (a segment read again)
            return
        self._poisoned_this_poll = f"quarantined record {index} of {stream} ({segment}): {entry['reason']}"
        if self.on_quarantine is not None:
            self.on_quarantine(entry)

    def metrics(self) -> dict[str, Any]:
        return {"watermarks": dict(self.watermarks), "applied_segments": self.applied_segments,
                "applied_records": self.applied_records, "filtered_records": self.filtered_records,
                "rejected": {s: str(r) for s, r in sorted(self.rejected.items())},
                "apply_lag_p50_s": self.apply_lag.quantile(0.5), "apply_lag_max_s": self.apply_lag.max_s,
                "failures": self.failures, "last_error": self.last_error, "paused": self.paused,
                "quarantine": self.quarantine.status()}
