"""Replaying shipped inbox records as their origin region processed them.

Why this module exists: a record shipped from another region must end in the
local dedup store exactly as a plain replay at its origin would leave it, and
the reconciler must hear both the origin outcome and the local winner, without
ever bypassing signature verification.

:class:`ReplayApplier`: replays records as their *origin* region did, through
the verification core (:class:`flk.impl.verifier.core.VerifyBatch`) with a
``Verifier`` of the record's region (:func:`verifier_for_region`) and ``now =
received_at`` -- a whole shipped span in one core batch, each record at its own
time (:meth:`~flk.impl.verifier.core.VerifyBatch.from_span`). Step 5 is skipped so that the core always computes the origin
outcome (steps 3, 4, 6 -- the signature is always checked) and the
authoritative atomic ``put_if_absent`` decides (INV-FWW, so the local store ends
exactly as with a plain replay). The computed origin outcome and the local
winner are handed to the reconciler. The home region's answer travels with the
record (in the segment's manifest, SPEC.md section 12.4): a record its home
answered 409 or refused is written nowhere. Replaying a segment again is a
no-op (INV-IDEMPOTENT-REPLAY: put-if-absent of the same outcome).
:meth:`ReplayApplier.apply_isolating` finds the poison records of a batch
(the reader quarantines them).

:class:`ReplayMemo` shares the verification of a shipped segment and the dedup
writes replay computed between appliers that replay the same records (the
simulator drives several regions in one process).

Sans-I/O: time is passed in, the store is an interface; there are no threads here.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from itertools import compress
from typing import Any

from ..dedup import StoredOutcome, StoreUnavailable, answered_part
from ..storage.inbox import InboxRecord
from ..storage.walformat import A_CONFLICT, A_REJECTED
from ..verifier.core import VerifyBatch
from ..verifier.pipeline import Response, Verifier, problem
from ..verifier.poison import DONE, STORED, PoisonPolicy
from .stream import verify_segment

__all__ = ["ApplyResult", "ReplayApplier", "ReplayMemo", "verifier_for_region", "Observer", "BatchObserver"]

Observer = Callable[[str, str, StoredOutcome, float], Any]
# ``observe_batch(reports, now)``: the observer's calls of one batch, ``(tenant, pcs_id, outcome)`` in order
BatchObserver = Callable[[list[tuple[str, str, StoredOutcome]], float], Any]
_REFUSED = (A_CONFLICT, A_REJECTED)  # AnswerNote.refused
_REGION = operator.attrgetter("region")
_FIRST, _SECOND, _THIRD = operator.itemgetter(0), operator.itemgetter(1), operator.itemgetter(2)
# ReplayApplier._plan of a batch: (its dedup writes in record order, records refused at home, store time)
Plan = tuple[list[tuple[str, str, StoredOutcome]], int, float]


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


class ReplayMemo:
    """The dedup writes replay computed, shared by appliers that replay the same records
    (a process driving several regions' appliers: the simulator).

    Replaying a record up to its dedup write reads no store (step 5 is skipped): the
    write is a function of the record and the verifier's configuration (class, region,
    tenants, policy, limits, hooks, reject statuses; an origin region's verifier is
    made from them). An applier that replays the very same list of record objects -- the
    records of a shipped segment :meth:`verified` shares, in the same chunk -- under an
    equal configuration takes that batch's writes instead of verifying the records
    again. An entry is dropped after ``uses`` look-ups (one per applier reading the
    records) or once ``capacity`` newer entries came; a dropped entry, or records in
    another chunking (a reader with a tenant filter), are only computed again."""

    def __init__(self, uses: int, capacity: int = 512, segment_uses: int | None = None) -> None:
        """``segment_uses``: verifications of one shipped segment (default ``uses``);
        ``capacity``: batches kept."""
        self.uses, self.capacity = int(uses), int(capacity)
        self.segment_uses = self.uses if segment_uses is None else int(segment_uses)
        self._runs: dict[tuple, list] = {}  # (token, id(first record), count) -> [records, plan, look-ups left]
        self._segments: dict[tuple, list] = {}  # (stream, name) -> [manifest, data, result, first, left]
        self._tokens: dict[tuple, int] = {}  # config -> its small token (the keys hold it, not the config)
        self.hits = self.misses = 0  # records whose writes were taken from here / computed

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

    def token(self, v: Verifier) -> int:
        """A small number naming :meth:`config` of ``v``: equal configurations get the same
        one (a key holds the token, so a look-up does not hash the whole configuration)."""
        return self._tokens.setdefault(self.config(v), len(self._tokens))

    def plan(self, token: tuple, recs: list[InboxRecord]) -> Plan | None:
        """The plan memoised for these very record objects (in this order) under the
        configurations ``token`` (the tokens of their origin regions' verifiers), or None."""
        key = (token, id(recs[0]), len(recs))
        entry = self._runs.get(key)
        if entry is None or not all(map(operator.is_, entry[0], recs)):
            self.misses += len(recs)
            return None
        self.hits += len(recs)
        entry[2] -= 1
        if entry[2] <= 0:
            del self._runs[key]
        return entry[1]

    def keep(self, token: tuple, recs: list[InboxRecord], plan: Plan) -> None:
        """Memoise ``plan`` for ``recs`` (kept alive here, so their ids stay theirs)."""
        if self.uses > 1:
            self._runs[(token, id(recs[0]), len(recs))] = [list(recs), plan, self.uses - 1]
            if len(self._runs) > self.capacity:
                del self._runs[next(iter(self._runs))]


class ReplayApplier:
    """Replays inbox records into the local dedup ``store`` as their origin
    region processed them, through the verification core
    (:class:`flk.impl.verifier.core.VerifyBatch`, step 5 skipped: put-if-absent
    decides); reports outcomes to ``observer(tenant, pcs_id, outcome, now)`` (the
    reconciler). ``StoreUnavailable`` propagates: the caller must not advance
    past a record that was not applied.

    The home answer travels with the record (``rec.home``, the
    :class:`flk.impl.storage.walformat.AnswerNote` its region's manifest of the
    segment carries, SPEC.md section 12.4): a record its home answered 409 (another
    payload was held there) or refused (4xx) is not a write anywhere -- nothing
    is stored, nothing is verified again and the reconciler hears nothing of it
    (the held outcome reaches it through its own record), so no conflict is
    flagged that no two regions acked. A record without a note (a WAL written
    before notes existed, or a home answer of 503: undecided) is replayed as the
    write it would have been alone."""

    def __init__(self, verifier: Verifier, store: Any, observer: Observer | None = None,
                 sink: Callable[[Mapping[str, Any]], None] | None = None,
                 memo: ReplayMemo | None = None, observe_batch: BatchObserver | None = None) -> None:
        """``memo``: writes shared with other appliers replaying the same records
        (:meth:`replay_batch`, when there is no ``sink``: that path emits nothing).
        ``observe_batch``: takes :meth:`replay_batch`'s reports in one call, the calls
        ``observer`` would get in the same order (e.g. :meth:`Reconciler.observe_batch
        <flk.impl.replication.reconcile.Reconciler.observe_batch>`)."""
        self.verifier, self.store, self.observer, self.sink = verifier, store, observer, sink
        self.observe_batch = observe_batch
        self.memo = memo
        self.home_rejected = 0
        self._by_region: dict[str, Verifier] = {}
        self._tokens: dict[str, int] = {}  # origin region -> ReplayMemo.token of its verifier
        self.applied = 0
        self.stored = 0

    def set_verifier(self, verifier: Verifier) -> None:
        """Replay with ``verifier`` from the next batch on (a reload of the tenants file:
        :meth:`Verifier.with_tenants`); the origin regions' verifiers are made anew from it.
        Call it on the thread that replays (the replication service's ``call_soon``)."""
        self.verifier = verifier
        self._by_region = {}
        self._tokens = {}

    def _verifier(self, region: str) -> Verifier:
        v = self._by_region.get(region)
        if v is None:
            v = self._by_region[region] = verifier_for_region(self.verifier, region)
        return v

    def _refused_at_home(self, rec: InboxRecord) -> ApplyResult:
        self.home_rejected += 1
        note = rec.home
        if note.answer == A_CONFLICT:
            resp = problem("conflict", "this pcs_id was recorded with a different signed payload at the "
                           "record's home region")
        else:
            resp = Response(note.status, (), b"")
        return ApplyResult(resp, home_rejected=True)

    def _batches(self, recs: list[InboxRecord], positions: list[int]) -> list[tuple[list[int], VerifyBatch]]:
        """Core batches (steps 3-6, no lookup) of ``recs[positions]``: one per run of records
        of one origin region -- a shipped span is one: its stream holds one region's records --
        each record verified and decided at its own ``received_at``
        (:meth:`VerifyBatch.from_span`), in record order."""
        out: list[tuple[list[int], VerifyBatch]] = []
        k, n = 0, len(positions)
        while k < n:
            region = recs[positions[k]].region
            end = k + 1
            while end < n and recs[positions[end]].region == region:
                end += 1
            run = positions if k == 0 and end == n else positions[k:end]
            batch = VerifyBatch.from_span(self._verifier(region), [recs[p] for p in run], sink=self.sink)
            batch.verify()
            batch.skip_lookup()
            out.append((run, batch))
            k = end
        return out

    def _put(self, writes: list[tuple[str, str, StoredOutcome]], nows: list[float]) -> list:
        """ONE ``put_many_if_absent`` (one transaction, record order). The store time is the
        latest ``received_at`` of the writes: entries and liveness checks use it for their TTL
        (at most the batch's time span on a 14-day TTL); the stored outcomes are exact."""
        if not writes:
            return []
        return self.store.put_many_if_absent(writes, max(nows), self.verifier.limits.ttl_s)

    def apply(self, rec: InboxRecord, now: float) -> ApplyResult:
        """Replay one record; its put-if-absent uses ``now = received_at`` exactly."""
        return self.apply_many([rec], now)[0]

    def apply_many(self, recs: list[InboxRecord], now: float) -> list[ApplyResult]:
        """Replay several records with ONE ``put_many_if_absent`` (puts in record order, so
        an in-batch duplicate loses to the earlier record exactly as sequentially)."""
        outs: list[ApplyResult | None] = [None] * len(recs)
        todo = []
        for pos, rec in enumerate(recs):
            if rec.home is not None and rec.home.refused:
                outs[pos] = self._refused_at_home(rec)
            else:
                todo.append(pos)
        batches = self._batches(recs, todo)
        writers = [(run, batch, batch.pending) for run, batch in batches]
        writes = [w for _, batch, _ in writers for w in batch.writes()]
        nows = [batch.at(item) for _, batch, items in writers for item in items]
        results = self._put(writes, nows)
        k = 0
        for run, batch, items in writers:
            mine = results[k:k + len(items)]
            k += len(items)
            if items:
                batch.recorded(mine)
            won = {id(item): result for item, result in zip(items, mine, strict=True)}
            for item in batch.items:
                out = ApplyResult(batch.responses[item.pos], tenant=item.who.tenant_id if item.who else None,
                                  pcs_id=item.pcs_id or None)
                result = won.get(id(item))
                if result is not None:
                    out.candidate, out.stored, out.winner = item.outcome, result[0], result[1]
                outs[run[item.pos]] = out
        for out in outs:
            self._finish(out, now)
        return outs  # type: ignore[return-value]

    def _finish(self, out: ApplyResult, now: float) -> None:
        self.applied += 1
        if out.stored:
            self.stored += 1
        if out.candidate is not None:
            reports = [(out.tenant, out.pcs_id, out.candidate)]
            if out.winner is not None and out.winner != out.candidate:
                reports.append((out.tenant, out.pcs_id, out.winner))
            self._report(reports, now)

    def _report(self, reports: list[tuple[str, str, StoredOutcome]], now: float) -> None:
        """The reconciler hears ``reports`` in order: in one ``observe_batch`` call, or one
        ``observer`` call each."""
        if self.observe_batch is not None:
            self.observe_batch(reports, now)
        elif self.observer is not None:
            observe = self.observer
            for tenant, pcs_id, outcome in reports:
                observe(tenant, pcs_id, outcome, now)

    def _writes_of(self, recs: list[InboxRecord]) -> tuple[list[tuple[str, str, StoredOutcome] | None], int]:
        """The dedup write replaying each record asks for (None: none -- a 4xx, or refused
        at home), through the core; and how many were refused at home."""
        writes: list[tuple[str, str, StoredOutcome] | None] = [None] * len(recs)
        todo = [pos for pos, rec in enumerate(recs) if rec.home is None or rec.home.answer not in _REFUSED]
        for run, batch in self._batches(recs, todo):
            for item in batch.pending:
                writes[run[item.pos]] = (item.who.tenant_id, item.pcs_id, item.outcome)
        return writes, len(recs) - len(todo)

    def _plan(self, recs: list[InboxRecord]) -> Plan:
        """``(puts, refused, latest)`` of ``recs``: their dedup writes in record order,
        how many records were refused at home, and the latest ``received_at`` of a record
        with a write (the store time of the transaction); from the memo when it has it."""
        memo = self.memo
        token = None
        if memo is not None:
            token = self._token_of(set(map(_REGION, recs)))
            plan = memo.plan(token, recs)
            if plan is not None:
                return plan
        writes, refused = self._writes_of(recs)
        puts = [w for w in writes if w is not None]
        latest = max([rec.received_at for rec, w in zip(recs, writes, strict=True) if w is not None], default=0.0)
        plan = (puts, refused, latest)
        if memo is not None:
            memo.keep(token, recs, plan)
        return plan

    def _token_of(self, regions: set[str]) -> tuple:
        """The memo tokens of the verifiers replaying records of ``regions`` (their origin
        regions): what a plan of such records depends on besides the records."""
        tokens = self._tokens
        out = []
        for region in regions:
            t = tokens.get(region)
            if t is None:
                t = tokens[region] = self.memo.token(self._verifier(region))
            out.append(t)
        return tuple(sorted(out))

    def replay_batch(self, recs: list[InboxRecord], now: float,
                     hold: Container[tuple[str, str]] = ()) -> list[tuple[int, tuple[str, str]]]:
        """:meth:`apply_many` for a caller that needs neither answers nor events (no
        ``sink``): the same store transaction, store contents and reconciler reports, in
        the same order, without an :class:`ApplyResult` per record. The core runs up to
        each record's dedup write (or the writes come from ``memo``); what it would do
        after the write only builds the answer and its events. The reports go to
        ``observe_batch`` in one call when it is given.

        Returns the records whose writes did not happen, ``(position in recs, (tenant,
        pcs_id))`` in record order: a write to a key in ``hold`` (an earlier record of that
        key still waits: it is not made, so a key's records are written in order), and the
        writes a partial store answer refused (:class:`flk.impl.dedup.PartialUnavailable`:
        one shard of a sharded store down; the other writes happened and are reported).
        Empty in the common case; a whole refusal raises ``StoreUnavailable``."""
        if not recs:
            return []
        puts, refused, latest = self._plan(recs)
        self.home_rejected += refused
        self.applied += len(recs)
        if not puts:
            return []
        held = [i for i, w in enumerate(puts) if (w[0], w[1]) in hold] if hold else []
        if held:
            kept = set(held)
            todo = [w for i, w in enumerate(puts) if i not in kept]
        else:
            todo = puts
        try:
            results = self.store.put_many_if_absent(todo, latest, self.verifier.limits.ttl_s) if todo else []
            failed: frozenset[int] = frozenset()
        except StoreUnavailable as exc:
            part = answered_part(exc, todo)
            if part is None:
                raise
            results, failed = part
        if results.__class__ is not list:
            results = list(results)
        if len(results) != len(todo):
            raise ValueError(f"the store answered {len(results)} of {len(todo)} writes")
        if held or failed:
            return self._partly(recs, puts, held, todo, results, failed, now)
        self._reported(puts, results, now)
        return []

    def _reported(self, puts: list, results: list, now: float) -> None:
        """Count and report the answered writes ``puts`` (their ``results``, same order)."""
        self.stored += sum(map(_FIRST, results))
        winners = list(map(_SECOND, results))
        # each write, followed by the winner its key held when that is another outcome; the
        # writes whose winner is their own outcome object (most) are copied in runs
        reports: list = []
        k = 0
        for i in compress(range(len(puts)), map(operator.is_not, winners, map(_THIRD, puts))):
            winner, write = winners[i], puts[i]
            if winner is not None and winner != write[2]:
                reports += puts[k:i + 1]
                reports.append((write[0], write[1], winner))
                k = i + 1
        reports += puts[k:]
        self._report(reports, now)

    def _partly(self, recs: list[InboxRecord], puts: list, held: list[int], todo: list, results: list,
                failed: frozenset[int], now: float) -> list[tuple[int, tuple[str, str]]]:
        """:meth:`replay_batch`'s end when writes were held or refused: the answered ones are
        counted and reported; the others' records (their positions found again through the
        core: a rare path) are returned, and count as not applied."""
        writes, _ = self._writes_of(recs)
        positions = [pos for pos, w in enumerate(writes) if w is not None]
        kept = set(held)
        sent = [i for i in range(len(puts)) if i not in kept]
        missing = sorted(kept | {sent[j] for j in failed})
        answered = [j for j in range(len(todo)) if j not in failed]
        self._reported([todo[j] for j in answered], [results[j] for j in answered], now)
        self.applied -= len(missing)
        return [(positions[i], (puts[i][0], puts[i][1])) for i in missing]

    def apply_isolating(self, recs: list[InboxRecord], now: float, batch: bool,
                        on_poison: Callable[[int, InboxRecord, Exception], None],
                        on_refused: Callable[[int, tuple[str, str]], None] | None = None,
                        hold: Container[tuple[str, str]] = ()) -> int:
        """Replay ``recs`` (in one transaction when ``batch``) under the poison-record
        replay policy of :class:`flk.impl.verifier.poison.PoisonPolicy` (the one owner,
        shared with the server's start-up replay): when the replay raises, the records
        are replayed one at a time and each one that raises alone goes to
        ``on_poison(position, record, error)``; the others are applied. A store
        refusal (``StoreUnavailable``, of any cause, however often) is never poison:
        it propagates and the caller retries (re-applying is a no-op). Returns the
        poison count.

        ``on_refused(position, key)`` (batch replay without a sink only: :meth:`replay_batch`):
        takes each record a partial store answer refused, and each record of a key in
        ``hold``, instead of failing the whole replay; the caller retries them later (the
        reader parks them). Without it a partial answer fails the replay as a whole."""
        parking = on_refused is not None and batch and self.sink is None

        def run_batch(items: list) -> list[str]:
            todo = recs if items is every else [rec for _, rec in items]
            if batch and self.sink is None:
                missing = self.replay_batch(todo, now, hold if parking else ())
                if missing and not parking:
                    raise StoreUnavailable(f"the dedup store refused {len(missing)} of the replayed writes")
                for pos, key in missing:
                    on_refused(items[pos][0], key)  # type: ignore[misc]
            elif batch:
                self.apply_many(todo, now)
            else:
                for rec in todo:
                    self.apply(rec, now)
            return [DONE] * len(items)

        def run_one(item: tuple) -> str:
            if parking:  # the record alone, its key's order kept as in the batch
                for _, key in self.replay_batch([item[1]], now, hold):
                    on_refused(item[0], key)  # type: ignore[misc]
                return DONE
            return STORED if self.apply(item[1], now).winner is not None else DONE

        policy = PoisonPolicy(self._store_answers, lambda item, exc: on_poison(item[0], item[1], exc))
        every = list(enumerate(recs))
        policy.run(every, run_batch, run_one)
        return policy.poisoned

    def _store_answers(self) -> bool:
        try:
            return bool(self.store.ping())
        except Exception:  # noqa: BLE001 -- any failure to ping is an outage
            return False
