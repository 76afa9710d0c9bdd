"""Reading the shipped streams of a topology and applying their records (SPEC.md section 11).

Why this module exists: a region must apply every record its sources shipped,
in index order, exactly once in effect, and must neither apply nor skip a
segment that fails verification.

:class:`Reader` (one per region): ``step(now) -> next_wakeup``. For each
source region (a :class:`Topology`: every peer, a per-tenant filter, optionally
the region itself so its reconciler sees its own outcomes), lists the streams
and their manifests after the stream's watermark, in index order; verifies
the manifest and the segment's SHA-256 and frames and every record's
encoding (:func:`flk.impl.replication.stream.verify_segment`); a bad segment is
**rejected and reported** (``rejected``, ``on_reject``) and the stream stops
there -- never applied, never skipped. Good records are replayed by
:class:`flk.impl.replication.applying.ReplayApplier`; the watermark advances
after the whole segment. A record whose replay raises unexpectedly (a bug,
not a bad signature: that is a 4xx outcome; never a store refusal) is *poison*: quarantined
(``read-quarantine.jsonl`` beside the watermarks,
:mod:`flk.impl.storage.quarantine`; ``on_quarantine`` for the driver's log
line and audit entry; ``failures``/``last_error`` and ``quarantine`` in
:meth:`Reader.metrics`) and the stream goes on past it. A store outage
(``StoreUnavailable`` of any cause -- a down shard, an open breaker, a timeout --
for as many polls as it lasts) is never poison (SPEC.md section 11.2): the
segment is retried after a bounded backoff and nothing is skipped. So a store
that keeps refusing stalls the reader: ``stalled_since`` is the time of the
first refused poll since the last poll that went through (records were waiting
to be applied and the store refused them), :meth:`Reader.stalled_s` the stall's
length (``flk_crr_read_stalled_seconds``, alert FlkCrrReaderStalled). A *partial*
refusal (one shard of a sharded store down: ``PartialUnavailable``) parks the refused
records (:attr:`Reader.parked`, and every later record of their keys in the stream)
and the stream goes on; a poll applies them again first (after a backoff while they
are refused); the durable watermark
stays at the segment of the earliest parked one (SPEC.md section 11.2).

Sans-I/O: time is passed in, the store and files are interfaces
(``ObjectStore``, ``FileSystem``), there are no threads here
(``flk.impl.replication.service`` drives it from a thread; ``flk.sim`` from
simulated time).
"""

from __future__ import annotations

import operator
import posixpath
import random
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from ..core.backoff import Backoff
from ..dedup import StoreUnavailable
from ..storage.fs import FileSystem
from ..storage.inbox import InboxRecord, encode_inbox_record
from ..storage.objectstore import ObjectNotFound, ObjectStore, ObjectStoreUnavailable
from ..storage.quarantine import FILE_NAME as QUARANTINE_FILE
from ..storage.quarantine import Quarantine
from ..storage.walformat import LOG_SUFFIX, MANIFEST_SUFFIX, manifest_name, parse_name
from .applying import ReplayApplier
from .stream import (
    LagStats,
    SegmentRejected,
    WatermarkFile,
    lags_since,
    segment_key,
    verify_segment,
)

__all__ = ["Reader", "Topology", "TenantFilter"]

TenantFilter = frozenset[str] | None
PARK_MAX = 100_000  # records a partial store answer may leave waiting while the reader goes on
# how long a stream waits for the segment at its watermark while a later one is already listed:
# copies between object stores (S3 replication, a copier that retries) need not land in order, so
# such a gap is first a copy on its way; one that lasts longer is rejected (reported, SPEC 11.2)
GAP_PATIENCE_S = 30.0


@dataclass
class Topology:
    """Which sources a region reads. ``sources[region] = None`` reads every
    tenant of that region; a frozenset reads only those tenants (selective)."""

    sources: dict[str, TenantFilter] = field(default_factory=dict)

    def reads(self, source: str, tenant: str) -> bool:
        """The one rule of selective replication: this region replays ``source``'s records of
        ``tenant`` (the reader's filter; the divergence detector scopes its comparison by it)."""
        if source not in self.sources:
            return False
        f = self.sources[source]
        return f is None or tenant in f

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


def _index_of(rec: InboxRecord, first: int, records: list[InboxRecord]) -> int:
    """``rec``'s WAL index: the one its segment's reader set, else ``first`` + its position."""
    if rec.index >= 0:
        return rec.index
    return first + next(k for k, r in enumerate(records) if r is rec)


_UNPARSED = object()
_REGION = operator.attrgetter("region")


def _of_source(stream: str, source: str) -> bool:
    """``stream`` is one of ``source``'s: the region's own or one of its ``/w<n>`` workers'."""
    return stream == source or stream.startswith(source + "/w")


def _segment_of(key: str, source: str) -> tuple[str, int, str] | None:
    """``(stream, first index, segment log name)`` of a listed manifest key of ``source``'s
    streams (the stream itself or its ``/w<n>`` workers); None for any other key."""
    stream, _, name = key.rpartition("/")
    if not name.endswith(MANIFEST_SUFFIX) or not _of_source(stream, source):
        return None
    log_name = name[: -len(MANIFEST_SUFFIX)] + LOG_SUFFIX
    parsed = parse_name(log_name)
    if parsed is None or parsed[0] != "seg":
        return None
    return stream, parsed[1], log_name


class Reader:
    """Reads the sources of a topology from ``store`` and applies their records."""

    def __init__(self, store: ObjectStore, topology: Topology, applier: ReplayApplier, state_path: str,
                 fs: FileSystem | None = None, interval_s: float = 1.0, backoff: Backoff = Backoff(),
                 rng: random.Random | None = None, on_reject: Callable[[SegmentRejected], None] | None = None,
                 strict: bool = False, batch: int = 256, quarantine: Quarantine | None = None,
                 on_quarantine: Callable[[dict[str, Any]], None] | None = None,
                 park_max: int = PARK_MAX, gap_patience_s: float = GAP_PATIENCE_S) -> None:
        """``batch``: records replayed per store transaction (:meth:`ReplayApplier.apply_many`);
        0 replays one record at a time with its exact ``received_at`` as store time.
        ``quarantine``: where poison records go (default ``<state>-quarantine.jsonl``
        beside ``state_path``); ``on_quarantine(entry)`` gets each new one without payload.
        A store refusal is never poison: the poll stops and is retried after a backoff.
        ``park_max``: records a partial store answer may leave waiting (:attr:`parked`)
        while the reader goes on; at that many it stops as at a whole refusal. ``gap_patience_s``:
        how long a stream waits for the segment at its watermark while a later one is listed
        before that gap is rejected (:data:`GAP_PATIENCE_S`)."""
        self.store, self.topology, self.applier = store, topology, applier
        self.batch = int(batch)
        self.state = WatermarkFile(state_path, fs)
        self.watermarks: dict[str, int] = self.state.load()
        self.rewinds = 0  # rewind() calls (this process)
        # stream -> (its watermark, the frontier): every record below the frontier is applied or
        # parked, below the watermark applied; only while records of the stream are parked and
        # nobody moved its watermark (a rewind: :meth:`_position`)
        self._ahead: dict[str, tuple[int, int]] = {}
        # stream -> WAL index -> a record a partial store answer refused:
        # (index, segment log name, the segment's first index, (tenant, pcs_id))
        self.parked: dict[str, dict[int, tuple[int, str, int, tuple[str, str]]]] = {}
        # stream -> key -> its parked records there (a later record of the key in the stream waits
        # too; streams are read in turn, so no order holds between two streams' records anyway)
        self._held: dict[str, dict[tuple[str, str], int]] = {}
        self.park_max = int(park_max)
        self.gap_patience_s = float(gap_patience_s)
        self._gap_since: dict[str, float] = {}  # stream -> when its listing first skipped its watermark
        self._park_retry: dict[str, tuple[float, int]] = {}  # stream -> (next retry of its parked records, tries)
        self.quarantine = quarantine if quarantine is not None else Quarantine(
            posixpath.splitext(state_path)[0] + "-" + QUARANTINE_FILE, self.state.fs)
        self.on_quarantine = on_quarantine
        self._poisoned_this_poll: str | None = None
        self.interval_s, self.backoff, self.rng = float(interval_s), backoff, rng
        self.on_reject, self.strict = on_reject, strict
        self.rejected: dict[str, SegmentRejected] = {}
        self.paused = False
        self.failures = 0
        self.last_error: str | None = None
        self.stalled_since: float | None = None  # first store refusal since the last poll that went through
        self._retry_at = 0.0
        self.applied_segments = 0
        self.applied_records = 0
        self.last_applied_at: float | None = None  # the driver's clock at the last record applied
        self.filtered_records = 0
        self.apply_lag = LagStats()  # records applied when first read (a parked one: at its retry, below)
        self.parked_lag = LagStats()  # parked records, when applied at last
        # source -> listed key -> what it names (:func:`_segment_of`): a poll lists every
        # segment a stream ever shipped, so each key is parsed once, not once per poll
        self._names: dict[str, dict[str, tuple[str, int, str] | None]] = {}
        self._listed: dict[str, tuple[list[str], dict[str, list[tuple[int, str]]]]] = {}  # source -> last listing, answer

    def streams(self, source: str) -> dict[str, list[tuple[int, str]]]:
        """stream -> sorted [(first_index, segment log name)] with a manifest in the store
        (the caller does not change it). A poll lists every segment a stream ever shipped:
        a listing equal to the last one of ``source`` answers the last answer, one that
        only adds keys after it adds their entries to it (:meth:`_listed_more`)."""
        keys = self.store.list(source + "/")
        last = self._listed.get(source)
        if last is not None:
            n = len(last[0])
            if len(keys) == n and keys == last[0]:
                return last[1]
            if len(keys) > n and keys[:n] == last[0]:
                out = self._listed_more(source, keys, n, last[1])
                if out is not None:
                    self._listed[source] = (keys, out)
                    return out
        out = self._parsed(source, keys)
        self._listed[source] = (keys, out)
        return out

    def _listed_more(self, source: str, keys: list[str], n: int,
                     before: dict[str, list[tuple[int, str]]]) -> dict[str, list[tuple[int, str]]] | None:
        """:meth:`_parsed` of ``keys`` from the answer ``before`` for ``keys[:n]``: the entries
        of the new keys appended where each comes after its stream's last (None when one
        does not: :meth:`_parsed` then sorts them all)."""
        added = self._by_stream(source, keys[n:])
        if not added:
            return before
        out = dict(before)
        for stream, more in added.items():
            old = out.get(stream)
            if old is None:
                return None  # a new stream: its place in the sorted order (rare)
            if any(map(operator.ge, [old[-1], *more], more)):
                return None  # not after the last one, or not in order
            out[stream] = old + more
        return out

    def _parsed(self, source: str, keys: list[str]) -> dict[str, list[tuple[int, str]]]:
        """stream -> sorted [(first_index, segment log name)] of the listed ``keys``."""
        return {s: sorted(v) for s, v in sorted(self._by_stream(source, keys).items())}

    def _by_stream(self, source: str, keys: list[str]) -> dict[str, list[tuple[int, str]]]:
        """stream -> [(first_index, segment log name)] of the manifests among ``keys``, in their order."""
        out: dict[str, list[tuple[int, str]]] = {}
        names = self._names.setdefault(source, {})
        for key in keys:
            entry = names.get(key, _UNPARSED)
            if entry is _UNPARSED:
                entry = names[key] = _segment_of(key, source)
            if entry is not None:
                stream, first, log_name = entry
                got = out.get(stream)
                if got is None:
                    got = out[stream] = []
                got.append((first, log_name))
        return out

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
            self.last_error = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, StoreUnavailable) and self.stalled_since is None:
                self.stalled_since = now  # a verified segment waits and the dedup store refuses it
            self._retry_at = now + self.backoff.delay(self.failures, self.rng)
            return self._retry_at
        waiting = self.parked_count
        if not waiting:
            self.stalled_since = None
        elif self.stalled_since is None:
            self.stalled_since = now  # records wait for the part of the store that refused them
        if self._poisoned_this_poll is not None:  # went on past it, but say so
            self.failures += 1
            self.last_error = self._poisoned_this_poll
        else:
            self.failures = 0
            self.last_error = None if not waiting else (
                f"{waiting} records wait for the dedup store (a partial answer: part of it refused them; "
                "retried with a backoff, the others applied)")
        return now + self.interval_s

    @property
    def parked_count(self) -> int:
        """Records a partial store answer left waiting (:meth:`_read_stream`)."""
        return sum(map(len, self.parked.values()))

    def poll(self, now: float) -> int:
        """Apply every new verified segment of every source; returns segments applied."""
        n = 0
        for source, tenants in self.topology.sources.items():
            for stream, segs in self.streams(source).items():
                n += self._read_stream(stream, source, tenants, segs, now)
        return n

    def _read_stream(self, stream: str, source: str, tenants: TenantFilter, segs, now: float) -> int:
        """Apply the stream's parked records again (when due), then its new segments past the frontier."""
        if self.parked.get(stream):
            due, tries = self._park_retry.get(stream, (now, 0))
            if now >= due or due - now > self.backoff.cap_s:  # due (a clock stepped back: due now)
                self._retry_parked(stream, source, now)
                if self.parked.get(stream):  # refused again: the next try after a backoff
                    self._park_retry[stream] = (now + self.backoff.delay(tries + 1, self.rng), tries + 1)
                else:
                    self._park_retry.pop(stream, None)
        n = 0
        # ``segs`` is sorted: start at the first segment at or past the frontier (a poll lists
        # every segment the stream ever shipped; those below were applied or parked before)
        for first, name in islice(segs, bisect_left(segs, (self._position(stream),)), None):
            at = self._position(stream)
            if first < at:
                continue
            if first > at:
                if not self._gap_waited(stream, now):
                    return n  # the segment at the watermark is on its way: this stream waits for it
            else:
                self._gap_since.pop(stream, None)
            if self.parked_count >= self.park_max:
                raise StoreUnavailable(f"{self.parked_count} replicated records wait for the dedup store "
                                       f"(the reader's cap, {self.park_max}): reading stops until it takes them")
            got = self._segment(stream, source, name, at)
            if got is None:
                return n  # gone meanwhile, or rejected: the stream stops here
            m, records = got
            wanted = records if tenants is None else [r for r in records
                                                      if self.topology.reads(source, r.tenant or "default")]
            self.filtered_records += len(records) - len(wanted)
            self._apply(stream, name, first, records, wanted, now, self.apply_lag)
            self._advance(stream, first + int(m["count"]))
            self.applied_segments += 1
            n += 1
        return n

    def _gap_waited(self, stream: str, now: float) -> bool:
        """The stream's listing skips its watermark: True once that has lasted ``gap_patience_s``
        (then the later segment is read and rejected for the gap), False while it may still be a
        copy on its way. A start further ahead than the patience was left by a clock step back:
        it starts again now (SPEC 11.9 rule 5)."""
        since = self._gap_since.get(stream)
        if since is None or since - now > self.gap_patience_s:
            self._gap_since[stream] = since = now
        return now - since >= self.gap_patience_s

    def _segment(self, stream: str, source: str, name: str, first: int | None
                 ) -> tuple[dict, list[InboxRecord]] | None:
        """The verified segment ``name`` of ``stream`` (its manifest, its records); None when
        it is listed but gone, or rejected (reported: the stream stops there, never applied,
        never skipped)."""
        try:
            try:
                mraw = self.store.get(segment_key(stream, manifest_name(name)))
            except ObjectNotFound:
                return None  # listed but gone (deleted meanwhile): look again next poll
            try:
                data = self.store.get(segment_key(stream, name))
            except ObjectNotFound:
                raise SegmentRejected(stream, name, ["manifest present but segment missing"]) from None
            memo = self.applier.memo
            m, records = (verify_segment(stream, name, mraw, data, expect_first=first) if memo is None else
                          memo.verified(stream, name, mraw, data, first))
            regions = set(map(_REGION, records))  # one pass at C speed; the common answer: {source}
            if regions and regions != {source}:
                bad = next(r.region for r in records if r.region != source)
                raise SegmentRejected(stream, name, [f"record of region {bad!r} in a stream of {source!r}"])
        except SegmentRejected as rej:
            if stream not in self.rejected or self.rejected[stream].segment != rej.segment:
                self.rejected[stream] = rej
                if self.on_reject is not None:
                    self.on_reject(rej)
            if self.strict:
                raise
            return None
        self.rejected.pop(stream, None)
        return m, records

    def _apply(self, stream: str, name: str, first: int, records: list[InboxRecord],
               wanted: list[InboxRecord], now: float, lags: LagStats) -> None:
        """Replay ``wanted`` (records of segment ``name``) in chunks of ``batch``: poison
        records are quarantined, records a partial store answer refused (and later records of
        their keys) are parked (:attr:`parked`); a whole refusal raises."""
        step = self.batch if self.batch > 0 else 1
        for i in range(0, len(wanted), step):
            chunk = wanted[i: i + step]

            def poison(position: int, rec: InboxRecord, error: Exception) -> None:
                self._quarantine(stream, name, _index_of(rec, first, records), rec, error, now)

            parked: list[int] = []

            def park(position: int, key: tuple[str, str], chunk=chunk, parked=parked) -> None:
                parked.append(position)
                self._park(stream, (_index_of(chunk[position], first, records), name, first, key))

            bad = self.applier.apply_isolating(chunk, now, self.batch > 0, poison, park,
                                               self._held.setdefault(stream, {}))
            if parked:  # their lag counts when they are applied
                skip = set(parked)
                chunk = [rec for k, rec in enumerate(chunk) if k not in skip]
            lags.add_many(lags_since(now, chunk))
            self.applied_records += len(chunk) - bad
            if len(chunk) > bad:
                self.last_applied_at = now

    def _park(self, stream: str, entry: tuple[int, str, int, tuple[str, str]]) -> None:
        """Park ``entry`` (once: a segment read again after a whole refusal met it before)."""
        parked = self.parked.setdefault(stream, {})
        if entry[0] in parked:
            return
        parked[entry[0]] = entry
        held = self._held.setdefault(stream, {})
        held[entry[3]] = held.get(entry[3], 0) + 1

    def _position(self, stream: str) -> int:
        """Where the stream's reading goes on: its frontier while records of it are parked,
        else its watermark. A watermark moved by someone else (a rewind, an operator's
        backfill) drops what was parked of the stream: it is read again from there."""
        mark = self.watermarks.get(stream, 0)
        ahead = self._ahead.get(stream)
        if ahead is None:
            return mark
        if ahead[0] == mark:
            return ahead[1]
        del self._ahead[stream]
        self._park_retry.pop(stream, None)
        self._release(stream, list(self.parked.pop(stream, {}).values()))
        return mark

    def _release(self, stream: str, entries: list[tuple[int, str, int, tuple[str, str]]]) -> None:
        """Drop the holds ``entries`` (parked records of ``stream``) had on their keys."""
        held = self._held.get(stream, {})
        for *_, key in entries:
            left = held[key] - 1
            if left:
                held[key] = left
            else:
                del held[key]

    def _retry_parked(self, stream: str, source: str, now: float) -> None:
        """Replay the stream's parked records again, in index order (a key's later records
        after its earlier ones: the ones refused again stay parked, with every later record
        of their keys)."""
        frontier = self._position(stream)
        waiting = sorted(self.parked.pop(stream, {}).values())
        self._release(stream, waiting)
        done = 0
        try:
            while done < len(waiting):
                name, first = waiting[done][1], waiting[done][2]
                end = done
                while end < len(waiting) and waiting[end][1] == name:
                    end += 1
                got = self._segment(stream, source, name, first)
                if got is None:
                    break  # gone or rejected: kept parked, retried next poll
                records = got[1]
                self._apply(stream, name, first, records, [records[idx - first] for idx, *_ in waiting[done:end]],
                            now, self.parked_lag)
                done = end
        finally:
            again = list(self.parked.pop(stream, {}).values())
            self._release(stream, again)
            for entry in sorted(set(again) | set(waiting[done:])):  # a failed group's records: both
                self._park(stream, entry)
            self._advance(stream, frontier)

    def _advance(self, stream: str, frontier: int) -> None:
        """The watermark: ``frontier`` (every record below it applied or parked), or the first
        index of the segment of the stream's earliest parked record (a restart reads again from
        there: re-applying is a no-op)."""
        parked = self.parked.get(stream)
        mark = parked[min(parked)][2] if parked else frontier
        if mark != frontier:
            self._ahead[stream] = (mark, frontier)
        else:
            self._ahead.pop(stream, None)
        if self.watermarks.get(stream) != mark:
            self.watermarks[stream] = mark
            self.state.save(self.watermarks)

    def _quarantine(self, stream: str, segment: str, index: int, rec: InboxRecord, error: Exception,
                    now: float) -> None:
        entry = self.quarantine.add(stream, index, segment, encode_inbox_record(rec), error, now,
                                    tenant=rec.tenant or None, region=rec.region)
        if entry is None:  # met before (a segment read again)
            return
        self._poisoned_this_poll = f"quarantined record {index} of {stream} ({segment}): {entry['reason']}"
        if self.on_quarantine is not None:
            self.on_quarantine(entry)

    def stalled_s(self, now: float) -> float:
        """How long the store has refused the records waiting here (0 when the last poll went
        through, when only the object store failed -- the shipping side's alerts cover that --
        and while the reader is paused on purpose: ``flk_crr_paused``)."""
        if self.stalled_since is None or self.paused:
            return 0.0
        return max(0.0, now - self.stalled_since)

    def rewind(self, sources: Iterable[str] | None = None) -> None:
        """Forget the watermarks (saved at once) of every stream, or only of ``sources``'
        streams (a region's own and its ``/w<n>`` workers'): the next polls re-read those
        shipped segments from the start and apply each record again, which changes no stored
        answer (INV-IDEMPOTENT-REPLAY). All of them: an operator's repair after a restored
        dedup store (``DATA_DIR/crr.rewind`` of ``flk serve``) and the ``reader_rewind``
        fault, counted in ``rewinds``; some: the backfill of a CRR policy that widened
        (:func:`flk.impl.operator.crr.apply`)."""
        if sources is None:
            self.watermarks = {}
            self.rewinds += 1
        else:
            chosen = tuple(sources)
            self.watermarks = {k: (0 if any(_of_source(k, src) for src in chosen) else v)
                               for k, v in self.watermarks.items()}
        self.state.save(self.watermarks)

    def metrics(self, now: float | None = None) -> dict[str, Any]:
        """``now`` (the driver's clock) gives ``stalled_s``; without it only ``stalled_since``."""
        return {"stalled_since": self.stalled_since,
                "stalled_s": None if now is None else self.stalled_s(now),
                "watermarks": dict(self.watermarks), "applied_segments": self.applied_segments,
                "applied_records": self.applied_records, "filtered_records": self.filtered_records,
                "rewinds": self.rewinds, "last_applied_at": self.last_applied_at,
                "rejected": {s: str(r) for s, r in sorted(self.rejected.items())},
                "apply_lag_p50_s": self.apply_lag.quantile(0.5), "apply_lag_max_s": self.apply_lag.max_s,
                "parked": self.parked_count, "parked_lag_max_s": self.parked_lag.max_s,
                "failures": self.failures, "last_error": self.last_error, "paused": self.paused,
                "quarantine": self.quarantine.status()}
