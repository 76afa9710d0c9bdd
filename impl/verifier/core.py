"""The verification core: the one code that decides what a submitted PCS is answered.

Why this module exists: every driver -- the server's submit batches
(:mod:`flk.impl.server.batchdriver`), the server's start-up WAL replay
(:mod:`flk.impl.server.pipeline`), cross-region replay
(:class:`flk.impl.replication.applying.ReplayApplier`) and the simulator's regions
(:mod:`flk.sim.region`) -- runs a :class:`VerifyBatch`. It is sans-I/O: it never
touches a disk, a socket, a thread or a clock. A driver calls its steps in order
and carries out the I/O between them (the WAL append and sync, one ``get_many``,
one ``put_many_if_absent``), synchronously (:func:`run_requests`,
:func:`replay_records`) or under simulated time (the simulator yields between
the steps).

Steps (SPEC.md section 8; one call per step for the whole batch)::

    admit(requests)      step 1: 413 / 431 / 429 answered; the inbox WAL records to append
    wal_written(first)   step 2 done: the records are durable at first, first+1, ...
      or wal_failed()    every admitted request answered 503 (nothing was recorded)
    verify()             steps 3-4 (and 6 when it is pure): 400 / 401 answered;
                         the dedup keys to look up (INV-VERIFY-BEFORE-DEDUP: no key
                         is handed out before its signature verified)
    found(outcomes)      step 5: replays and conflicts answered; step 6 for the rest
      or skip_lookup()   (no hooks -- needs_lookup is False -- or cross-region replay:
                         put-if-absent alone decides, a held key answered as a hit would be)
      or lookup_failed() 503
    writes()             step 7: what to put, in request order
      or fresh_writes()  the same, a fresh 200 outcome as (tenant, pcs_id, digest, body):
                         no StoredOutcome built (a store's put_many_fresh_if_absent)
    recorded(results)    step 7's answers (a lost race answers like a step-5 hit)
      or recorded_fresh(answers)
      or record_failed() 503
    responses            step 8: every request's answer, in request order
    notes()              the home answers, for the WAL segment's manifest

The items are typed (:class:`Item`); the verifier's steps are its public
methods (``refuse_before_wal``, ``parse``, ``authenticate``, ``decide``,
``settle``, ``existing``, ...). :meth:`flk.impl.verifier.pipeline.Verifier.handle`,
the generator pipeline, is kept as the slower readable *reference*: it decides
nothing in production and exists as the oracle of the differential tests
(tests/verifier/test_fastpath_differential.py checks that both answer alike:
responses, WAL records, store calls, events and their order).

Home answers (:class:`flk.impl.storage.walformat.AnswerNote`): after a batch, a driver
hands the WAL one answer per recorded request -- what this region answered it
(stored, duplicate, conflict with the held digest, rejected, store unavailable) --
and the manifest of the segment holding the records carries them, so that the
record's answer travels with it to the other regions (SPEC.md section 12.4): a
peer never replays a record its home refused.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..core import accel
from ..dedup import StoredOutcome, StoreUnavailable, answered_part
from ..dedup.base import float_repr
from ..storage.inbox import decode_inbox_record
from ..storage.wal import WalError
from ..storage.walformat import (
    A_CONFLICT,
    A_DUPLICATE,
    A_REJECTED,
    A_STORED,
    A_UNAVAILABLE,
    AnswerNote,
)
from . import accelerated
from .pipeline import (
    _FRESH_HEADERS,
    MAX_TENANT_HEADER,
    REASON_CODES,
    Request,
    Response,
    SignalCheck,
    Sink,
    Verifier,
    WalAppend,
    WalUnavailable,
    _Authenticated,
    _event,
    _recordable_header,
    append_inbox,
    wal_write,
)
from .tenants import Tenant

Latency = Callable[[str, float], None]
_NO_REASONS: tuple[str, ...] = ()  # a fresh 200 outcome's reasons (shared)

# steps 3, 4 and 6 of the common case in one compiled call; None on the pure path (flk.impl.core.accel)
_compiled_accept = accel.bind(accelerated.ACCEPT_V1, globals(), "_compiled_accept")
# the batch loop of the same steps, one call per tenant's requests of a batch (accept_v1 of each body)
_compiled_accept_batch = accel.bind(accelerated.ACCEPT_BATCH, globals(), "_compiled_accept_batch")
# the same loop with a receive time per record (a replay span: accept_v1 of each body at its own time)
_compiled_accept_each = accel.bind(accelerated.ACCEPT_EACH, globals(), "_compiled_accept_each")
# accept_v1's answer read off the body without a dict (None: the scanner gave up, accept_v1 decides)
_compiled_accept_scan = accel.bind(accelerated.ACCEPT_SCAN, globals(), "_compiled_accept_scan")
# the WAL frames of a batch's inbox records in one call (encode_frame of each payload)
_compiled_frame_records = accel.bind(accelerated.FRAME_RECORDS, globals(), "_compiled_frame_records")


@dataclass(slots=True, eq=False)
class Item:
    """One request's state in a :class:`VerifyBatch`."""

    pos: int  # its position in the batch (the index of its answer)
    label: str  # the tenant label of metrics and events ("_unknown": no such tenant)
    tenant: Tenant | None
    body: bytes
    wal_index: int = -1  # its inbox WAL record (-1: none, or not known to the driver)
    who: _Authenticated | None = None  # step 4's answer: who signed what
    pcs_id: str = ""
    doc: dict | None = None  # the parsed PCS, kept while step 6 is still to run
    outcome: StoredOutcome | None = None  # step 6's outcome to store (built lazily when fresh)
    fresh: bytes | None = None  # the common 200 outcome's body (accept_v1 wrote it; no StoredOutcome built)
    reasons: list[str] | None = None
    answer: int = -1  # the home answer (flk.impl.storage.walformat.A_*); -1: none yet
    answer_digest: str = ""  # the stored / held payload digest of the answer


class VerifyBatch:
    """The state of one batch through steps 1-8 (see the module docstring).

    All requests share ``now`` (one receive time per batch, as the server's batches
    have), the common case; or each record has its own (``times``: a replay span,
    :meth:`from_span` -- records of many submit batches, each verified, decided and
    answered at its own ``received_at``; ``now`` is then the latest of them, the time
    of the batch's store calls). ``replay``: the requests are inbox records read back
    (:meth:`from_records`): no step 1, no WAL record, no ``ingest`` event. ``sink`` gets every event (metrics, audit,
    history); ``latency(label, seconds)`` each request's time from the batch's
    start (the clock is :func:`time.perf_counter`, read only when it is given)."""

    def __init__(self, verifier: Verifier, now: float, *, sink: Sink | None = None,
                 latency: Latency | None = None, replay: bool = False) -> None:
        self.v = verifier
        self.now = now
        self.times: list[float] | None = None  # a receive time per request (by position), or None: all at now
        self.sink = sink
        self.latency = latency
        self.replay = replay
        self.started = time.perf_counter() if latency is not None else 0.0
        self.responses: list[Response | None] = []
        self.items: list[Item] = []  # admitted, in request order
        self._pending: list[Item] = []  # waiting for the next step
        self._parts: tuple[str, str, str] | None = None  # Verifier.answer_body's parts for accept_v1
        self._keys: dict[tuple[int, float], tuple[Tenant, list[bytes]]] = {}  # (id(tenant), time) -> keys
        self._parts_at: dict[float, tuple[str, str, str]] = {}  # time -> answer_body's parts (with times)
        self._all_decided = False  # after verify(): every pending item has its outcome (found() decides none)

    def at(self, item: Item) -> float:
        """``item``'s receive time: ``now``, or its own in a span (``times``)."""
        times = self.times
        return self.now if times is None else times[item.pos]

    @property
    def pending(self) -> list[Item]:
        """The items waiting for the next step (after :meth:`found`: those :meth:`writes` puts)."""
        return list(self._pending)

    # -- answers ----------------------------------------------------------------------
    def _finish(self, item: Item, resp: Response, event: Mapping[str, Any] | None, answer: int,
                digest: str = "") -> None:
        self.responses[item.pos] = resp
        item.answer, item.answer_digest = answer, digest
        if self.sink is not None and event is not None:
            self.sink(event)
        if self.latency is not None:
            self.latency(item.label, time.perf_counter() - self.started)

    def _existing(self, item: Item, stored: StoredOutcome) -> None:
        """A step-5 hit or a lost race: the stored answer (replay) or 409 (conflict)."""
        resp, event = self.v.existing(stored, item.who.digest, item.pcs_id, item.label)
        same = stored.payload_digest == item.who.digest
        self._finish(item, resp, event, A_DUPLICATE if same else A_CONFLICT, stored.payload_digest)

    def _unavailable(self, items: Iterable[Item]) -> None:
        for item in items:
            resp, event = self.v.unavailable(item.label)
            self._finish(item, resp, event, A_UNAVAILABLE)

    # -- step 1 -----------------------------------------------------------------------
    def admit(self, requests: Sequence[Request]) -> list[WalAppend]:
        """Step 1 for every request in order; the admitted ones' inbox WAL records."""
        v, now = self.v, self.now
        self.responses = responses = [None] * len(requests)
        appends: list[WalAppend] = []
        items = self.items
        region = v.region
        resolve, refuse, sink = v.tenants.resolve, v.refuse_before_wal, self.sink
        max_body, limiter = v.limits.max_body_bytes, v.limiter
        seen: dict[str | None, tuple[Tenant | None, str]] = {}  # X-Tenant-Id -> (tenant, label): recordable
        new_append = tuple.__new__  # WalAppend(...) without its Python-level __new__
        for pos, req in enumerate(requests):
            header, body = req.tenant, req.body
            known = seen.get(header) if type(header) is str or header is None else None
            if known is not None and len(body) <= max_body:
                # the common case of Verifier.refuse_before_wal: a body within the limit and a
                # header already found recordable in this batch; only the tenant's admission is left
                tenant, label = known
                refused = None
                if tenant is not None:
                    admission = limiter.admit(tenant, now)
                    if not admission.ok:
                        refused = v.admission_refused(admission)
            else:
                tenant = resolve(header)
                label = tenant.tenant_id if tenant is not None else "_unknown"
                refused = refuse(req, tenant, now)
                if (header is None or (type(header) is str and len(header) <= MAX_TENANT_HEADER
                                       and _recordable_header(header))):
                    seen[header] = (tenant, label)
            if refused is not None:
                responses[pos] = refused
                if sink is not None:
                    sink(_event(label, refused, "rejected"))
                if self.latency is not None:
                    self.latency(label, time.perf_counter() - self.started)
                continue
            items.append(Item(pos, label, tenant, body))
            appends.append(new_append(WalAppend, (header or "", now, region, bytes(body))))
        self._pending = list(items)
        return appends

    @classmethod
    def from_records(cls, verifier: Verifier, records: Sequence[Any], now: float, *,
                     indexes: Sequence[int] | None = None, sink: Sink | None = None,
                     latency: Latency | None = None) -> VerifyBatch:
        """A replay batch of inbox records (objects with ``tenant`` -- ``""`` for no
        ``X-Tenant-Id`` -- and ``body``), all received at ``now``; ``indexes``: their WAL
        indexes where the driver knows them (the notes name them)."""
        batch = cls(verifier, now, sink=sink, latency=latency, replay=True)
        batch.responses = [None] * len(records)
        resolve = verifier.tenants.resolve
        labels: dict[str, tuple[Tenant | None, str]] = {}  # rec.tenant -> (tenant, label)
        items = batch.items
        for pos, rec in enumerate(records):
            known = labels.get(rec.tenant)
            if known is None:
                tenant = resolve(rec.tenant or None)
                known = labels[rec.tenant] = (tenant, tenant.tenant_id if tenant is not None else "_unknown")
            items.append(Item(pos, known[1], known[0], rec.body, -1 if indexes is None else indexes[pos]))
        batch._pending = list(items)
        return batch

    @classmethod
    def from_span(cls, verifier: Verifier, records: Sequence[Any], *, indexes: Sequence[int] | None = None,
                  sink: Sink | None = None, latency: Latency | None = None) -> VerifyBatch:
        """A replay batch of inbox records (as for :meth:`from_records`, with ``received_at``)
        each verified, decided and answered at its own ``received_at`` (INV-IDEMPOTENT-REPLAY):
        a shipped span or a stretch of the WAL -- records of many submit batches -- in one
        batch (one compiled call per tenant, ``accept_each``). ``now``, the time of the
        batch's store calls, is the latest ``received_at``; records of one time make the
        common batch (no ``times``)."""
        times = [rec.received_at for rec in records]
        first = times[0] if times else 1.0
        if times.count(first) == len(times) and (first != 0.0 or len({repr(t) for t in times}) == 1):
            # one time (0.0 == -0.0, but their answers' first_seen differ)
            return cls.from_records(verifier, records, first, indexes=indexes, sink=sink, latency=latency)
        batch = cls.from_records(verifier, records, max(times), indexes=indexes, sink=sink, latency=latency)
        batch.times = times
        return batch

    # -- step 2 -----------------------------------------------------------------------
    def wal_written(self, first_index: int | None) -> None:
        """The admitted requests' records are durable at ``first_index``, +1, ...
        (None: the WAL gives no indexes, e.g. a memory WAL)."""
        if first_index is not None:
            for k, item in enumerate(self.items):
                item.wal_index = first_index + k

    def wal_failed(self) -> None:
        """The append or sync failed: every admitted request is answered the WAL's 503
        (nothing was recorded, so no note either)."""
        for item in self._pending:
            resp, event = self.v.wal_failed(item.label)
            self._finish(item, resp, event, -1)
        self._pending = []

    # -- steps 3, 4 (and 6 when it is pure) ---------------------------------------------
    def verify(self, fresh: bool = False) -> list[tuple[str, str]]:
        """Steps 3-4 (and 6 when there are no hooks: it is pure then) after the WAL
        append; the ``(tenant, pcs_id)`` keys to look up, one per item still pending.
        ``fresh``: the driver writes with :meth:`fresh_writes` -- a common 200 outcome is
        kept as its body (``Item.fresh``), no :class:`StoredOutcome` built; else every
        item's ``outcome`` is built here (the drivers that read it: the simulator, replay)."""
        v, now, sink, times = self.v, self.now, self.sink, self.times
        if times is not None:
            fresh = False  # a fresh write has one store time (fresh_writes): every outcome is built here
        early = not v.hooks
        fused = _compiled_accept if early and v.signal_params is not None else None
        accepted: list | None = None
        if fused is not None:
            if times is None:
                self._parts = self._answer_parts(now)
            accepted = self._accept_all()
        ingest = sink is not None and not self.replay
        region, version = v.region, v.policy.version
        new_who = tuple.__new__  # _Authenticated(...) without its Python-level __new__
        decided = True  # every pending item has its outcome to store (found() has nothing to decide)
        pending = []
        keys = []
        for k, item in enumerate(self._pending):
            if ingest:
                sink({"kind": "ingest", "tenant_label": item.label})
            if times is not None:
                now = times[item.pos]
            got = accepted[k] if accepted is not None else None
            if got is not None:
                pcs_id, digest, _, _, _, _, answer = got
                tenant = item.tenant
                who = item.who = new_who(_Authenticated, (tenant.tenant_id, "v1", digest))
                item.pcs_id = pcs_id
                if answer is not None:  # no reason: Verifier.settle's 200 outcome, its body written by accept_v1
                    if fresh:  # StoredOutcome(digest, 200, answer, now, region, version), not built
                        item.fresh, item.reasons = answer, _NO_REASONS
                    else:
                        item.outcome, item.reasons = StoredOutcome(digest, 200, answer, now, region, version), []
                else:
                    self._settle(item, who, got, now)
                    decided = decided and item.outcome is not None
                pending.append(item)
                keys.append((who.tenant_id, pcs_id))
                continue
            parsed = v.parse(item.body)
            if type(parsed) is not dict:
                self._finish(item, parsed, _event(item.label, parsed, "rejected"), A_REJECTED)
                continue
            who = v.authenticate(parsed, item.tenant, now)
            if type(who) is not _Authenticated:
                self._finish(item, who, _event(item.label, who, "signature_error"), A_REJECTED)
                continue
            item.who, item.pcs_id = who, parsed["pcs_id"]
            if early:
                self._decided(item, v.decide(parsed, who, now))
                decided = decided and item.outcome is not None
            else:
                item.doc = parsed
                decided = False
            pending.append(item)
            keys.append((who.tenant_id, item.pcs_id))
        self._pending = pending
        self._all_decided = decided
        return keys

    def _decided(self, item: Item, decided: tuple) -> None:
        if type(decided[0]) is Response:  # a hook reason that rejects: kept as (problem, event kind)
            item.outcome, item.reasons = None, decided  # type: ignore[assignment]
        else:
            item.outcome, item.reasons = decided

    def _accept_all(self) -> list | None:
        """``accept_v1``'s answer for each pending item (None: the reference steps decide it):
        steps 3, 4 and 6 of the common case (a valid v1 PCS signed by one of its HMAC
        tenant's active keys, float claims), one compiled call per tenant of the batch
        (``accept_batch``: each body read off its bytes without a dict where the scanner
        takes it, ``accept_scan``; else parsed, ``accept_v1``; a tenant's single body:
        ``accept_scan``, then ``accept_v1`` if it gave up)."""
        pending = self._pending
        if not pending:
            return None
        timed = self.times is not None
        tenant = pending[0].tenant
        if all(item.tenant is tenant for item in pending):  # one tenant (the common case): no grouping
            if tenant is None or tenant.alg != "hmac" or not tenant.allows("v1"):
                return None
            if timed:
                return self._accept_timed(tenant, pending)
            keys = self._active_keys(tenant)
            if not keys:
                return None
            return self._accept_bodies([item.body for item in pending], keys)
        groups: dict[int, tuple[Tenant, list[int], list]] = {}  # id(tenant) -> (tenant, positions, bodies)
        for k, item in enumerate(pending):
            tenant = item.tenant
            if tenant is not None and tenant.alg == "hmac" and tenant.allows("v1"):
                group = groups.get(id(tenant))
                if group is None:
                    group = groups[id(tenant)] = (tenant, [], [])
                group[1].append(k)
                group[2].append(item.body)
        if not groups:
            return None
        out: list = [None] * len(pending)
        for tenant, positions, bodies in groups.values():
            if timed:
                answers = self._accept_timed(tenant, [pending[k] for k in positions])
            else:
                keys = self._active_keys(tenant)
                if not keys:
                    continue
                answers = self._accept_bodies(bodies, keys)
            for k, answer in zip(positions, answers, strict=True):
                out[k] = answer
        return out

    def _accept_timed(self, tenant: Tenant, items: list[Item]) -> list:
        """``accept_v1`` of each of one tenant's ``items`` at its own receive time (``times``):
        one ``accept_each`` call -- each body with the tenant's keys active at its time and
        the answer parts of its time (records of one time share both objects)."""
        times, parts_at = self.times, self._parts_at
        bodies, keysets, partsets = [], [], []
        last = keys = parts = None  # the time of the previous item (a span holds runs of one time) and its objects
        for item in items:
            t = times[item.pos]
            if t != last or not t:  # 0.0 == -0.0: their parts differ, never shared
                keys = self._active_keys(tenant, t)
                parts = parts_at.get(t) if t else None
                if parts is None:
                    parts = self._answer_parts(t)
                    if t:
                        parts_at[t] = parts
                last = t
            bodies.append(item.body)
            keysets.append(keys)
            partsets.append(parts)
        params = self.v.signal_params
        got = _compiled_accept_each(bodies, keysets, params, partsets) if _compiled_accept_each is not None else None
        if got is None:
            got = [_compiled_accept(body, keys, params, parts) if keys else None
                   for body, keys, parts in zip(bodies, keysets, partsets, strict=True)]
        return got

    def _accept_bodies(self, bodies: list, keys: list[bytes]) -> list:
        """``accept_v1`` of each of one tenant's ``bodies``: one ``accept_batch`` call (one
        ``accept_scan`` call for a single body, ``accept_v1`` when the scanner gives up)."""
        params, parts = self.v.signal_params, self._parts
        if len(bodies) == 1 and _compiled_accept_scan is not None:
            got = _compiled_accept_scan(bodies[0], keys, params, parts)
            return [got if got is not None else _compiled_accept(bodies[0], keys, params, parts)]
        got = _compiled_accept_batch(bodies, keys, params, parts) if _compiled_accept_batch is not None else None
        if got is None:
            got = [_compiled_accept(body, keys, params, parts) for body in bodies]
        return got

    def _active_keys(self, tenant: Tenant, at: float | None = None) -> list[bytes]:
        """``tenant``'s keys active at ``at`` (default: ``now``), asked once per tenant and time."""
        t = self.now if at is None else at
        known = self._keys.get((id(tenant), t))
        if known is None or known[0] is not tenant:
            known = self._keys[(id(tenant), t)] = (tenant, tenant.active_keys(t))
        return known[1]

    def _answer_parts(self, t: float) -> tuple[str, str, str]:
        """:meth:`Verifier.answer_body`'s parts for ``accept_v1`` of a request received at ``t``."""
        v = self.v
        return float_repr(float(t)), v.policy_version_json, v.region_json

    def _settle(self, item: Item, who: _Authenticated, got: tuple, now: float) -> None:
        """Step 6 of an accepted PCS with reasons (``accept_v1`` wrote no body) received at
        ``now``: as :meth:`Verifier.settle` answers it."""
        pcs_id, _, bits, d_hat, budget_, regime_, _ = got
        reasons = [code for k, code in enumerate(REASON_CODES) if bits >> k & 1] if bits else []
        self._decided(item, self.v.settle(pcs_id, who, now, SignalCheck(reasons, d_hat, budget_, regime_), None))

    # -- step 5 (and 6) ---------------------------------------------------------------
    def found(self, outcomes: Sequence[StoredOutcome | None], failed: Collection[int] = ()) -> None:
        """Step 5's answers (replays, conflicts) for the keys :meth:`verify` returned, in
        that order; step 6 for the rest. ``failed``: positions the store did not answer (a
        shard down: :class:`flk.impl.dedup.base.PartialUnavailable`), each answered 503."""
        if failed:
            outcomes = self._drop_failed(outcomes, failed)
        v = self.v
        if self._all_decided and len(outcomes) == len(self._pending) and outcomes.count(None) == len(outcomes):
            return  # nothing found and every outcome decided: all of them are written (the common case)
        rest = []
        for item, stored in zip(self._pending, outcomes, strict=True):
            if stored is not None:
                self._existing(item, stored)
                continue
            if item.doc is not None:
                self._decided(item, v.decide(item.doc, item.who, self.at(item)))
                item.doc = None
            if item.outcome is None and item.fresh is None:  # a hook reason that rejects: nothing is stored
                resp, kind = item.reasons  # type: ignore[misc]
                self._finish(item, resp, _event(item.label, resp, kind, pcs_id=item.pcs_id), A_REJECTED)
                continue
            rest.append(item)
        self._pending = rest

    def skip_lookup(self) -> None:
        """Step 5 answered "absent" for every key: put-if-absent alone decides (a lost
        race answers exactly what a hit would have, so only hooks that reject see a
        difference: they are asked before the store)."""
        self.found([None] * len(self._pending))

    @property
    def needs_lookup(self) -> bool:
        """Whether step 5 can change an answer: only when the verifier has hooks (a hook is
        asked only for a key the store does not hold, and a hook's rejection stores
        nothing). Without hooks every pending outcome is decided and put-if-absent answers
        a held key exactly as a hit would (a lost race is answered like a step-5 hit,
        :meth:`recorded`), so a driver may :meth:`skip_lookup` instead of ``get_many``
        (tests/verifier/test_batch_differential.py proves the answers equal)."""
        return bool(self.v.hooks) or not self._all_decided

    def _drop_failed(self, answers: Sequence, failed: Collection[int]) -> list:
        """503 for the pending items at positions ``failed`` (the store did not answer them:
        a shard down), which leave the batch; the answers of the others, in order."""
        pending = self._pending
        self._unavailable([pending[k] for k in sorted(failed)])
        keep = [k for k in range(len(pending)) if k not in failed]
        self._pending = [pending[k] for k in keep]
        return [answers[k] for k in keep]

    def lookup_failed(self) -> None:
        """The store did not answer step 5: 503 for every pending request."""
        self._unavailable(self._pending)
        self._pending = []

    # -- step 7 -----------------------------------------------------------------------
    def writes(self) -> list[tuple[str, str, StoredOutcome]]:
        """What step 7 puts (put-if-absent, one transaction, request order); a fresh item's
        :class:`StoredOutcome` is built here (see :meth:`fresh_writes` for the form without it)."""
        region, version = self.v.region, self.v.policy.version
        out = []
        for item in self._pending:
            if item.fresh is not None and item.outcome is None:
                item.outcome = StoredOutcome(item.who.digest, 200, item.fresh, self.at(item), region, version)
            out.append((item.who.tenant_id, item.pcs_id, item.outcome))
        return out

    def fresh_writes(self) -> tuple[list[tuple], tuple[int, float, str, str]]:
        """:meth:`writes` without building the common outcomes: ``(items, fresh)``, an item
        ``(tenant, pcs_id, digest, body)`` for a fresh 200 outcome -- the outcome
        ``StoredOutcome(digest, 200, body, *fresh[1:])`` with ``fresh = (200, now, region,
        policy_version)`` -- else ``(tenant, pcs_id, outcome)``; for a store's
        ``put_many_fresh_if_absent`` (its answers go to :meth:`recorded_fresh`)."""
        new = tuple.__new__
        out = [new(tuple, (item.who.tenant_id, item.pcs_id, item.who.digest, item.fresh)) if item.fresh is not None
               else (item.who.tenant_id, item.pcs_id, item.outcome) for item in self._pending]
        return out, (200, self.now, self.v.region, self.v.policy.version)

    def recorded(self, results: Sequence[tuple[bool, StoredOutcome]], failed: Collection[int] = ()) -> None:
        """Step 7's answers: the recorded outcome, or the race winner's (replay or conflict);
        ``failed`` as in :meth:`found` (no write happened there: 503)."""
        if failed:
            results = self._drop_failed(results, failed)
        self.recorded_fresh([None if won else winner for won, winner in results])

    def recorded_fresh(self, results: Sequence[StoredOutcome | None], failed: Collection[int] = ()) -> None:
        """Step 7's answers from ``put_many_fresh_if_absent`` (None: recorded; else the race
        winner's outcome, a replay or a conflict), also for :meth:`recorded`; a fresh item's
        outcome is never built. ``failed`` as in :meth:`found`."""
        if failed:
            results = self._drop_failed(results, failed)
        v, sink, latency, responses = self.v, self.sink, self.latency, self.responses
        now = self.now
        # the batch's answers leave together: one clock read for the recorded ones' latency
        elapsed = time.perf_counter() - self.started if latency is not None else 0.0
        for item, winner in zip(self._pending, results, strict=True):
            if winner is not None:
                self._existing(item, winner)
                continue
            body = item.fresh
            if body is None:
                outcome = item.outcome
                status, body, first_seen, digest = outcome.status, outcome.body, outcome.first_seen, \
                    outcome.payload_digest
            else:
                status, first_seen, digest = 200, now if self.times is None else self.at(item), item.who.digest
            responses[item.pos] = Response(status, _FRESH_HEADERS, body)  # _outcome_response(outcome, False)
            item.answer, item.answer_digest = A_STORED, digest
            if sink is not None:
                sink(v.accepted_event(status, first_seen, item.reasons, item.pcs_id, item.who, item.label))
            if latency is not None:
                latency(item.label, elapsed)
        self._pending = []

    def record_failed(self) -> None:
        """The store did not answer step 7: 503 for every pending request."""
        self._unavailable(self._pending)
        self._pending = []

    # -- after the batch --------------------------------------------------------------
    def notes(self) -> list[AnswerNote]:
        """The home answer of every admitted request whose WAL index is known, in order."""
        return [AnswerNote(item.wal_index, item.answer, self.responses[item.pos].status, item.answer_digest)
                for item in self.items if item.wal_index >= 0 and item.answer >= 0]


def run_requests(verifier: Verifier, requests: Sequence[Request], now: float, wal: Any, store: Any,
                 sink: Sink | None = None, latency: Latency | None = None,
                 notes: list[AnswerNote] | None = None) -> list[Response]:
    """One batch of requests through the core, synchronously (the server's batch
    thread, ``flk bench verify``): one :func:`flk.impl.verifier.pipeline.wal_write`
    (append + ONE sync), one ``get_many`` (none without hooks: :attr:`VerifyBatch.needs_lookup`),
    one ``put_many_if_absent`` (``put_many_fresh_if_absent`` where the store has it). It answers
    exactly what ``run_batch([verifier.handle(r, now) for r in requests], ...)``
    answers -- the reference (tests/verifier/test_fastpath_differential.py).
    ``notes``: where the batch's home answers go (the caller appends them to the WAL)."""
    batch = VerifyBatch(verifier, now, sink=sink, latency=latency)
    appends = batch.admit(requests)
    if appends:
        try:
            indexes = wal_write(wal, appends)
        except WalUnavailable:
            batch.wal_failed()
            return batch.responses  # type: ignore[return-value]
        batch.wal_written(indexes[0] if indexes and isinstance(indexes[0], int) else None)
    _lookup_and_record(batch, store, now, verifier.limits.ttl_s, lookup=True)
    if notes is not None:
        notes.extend(batch.notes())
    return batch.responses  # type: ignore[return-value]


def serve_batch(verifier: Verifier, requests: Sequence[Request], now: float, wal: Any, store: Any,
                sink: Sink | None = None, latency: Latency | None = None) -> list[Response]:
    """A submit batch as ``flk serve`` runs it on its batch thread: the WAL segment rolls
    only between batches (``wal.roll_if_full()``), :func:`run_requests` appends and syncs
    the batch's records without rolling, and the batch's home answers go to the WAL
    (``wal.note_answers``) for the manifest of the segment that holds the records.
    ``wal``: a :class:`flk.impl.storage.wal.SegmentedLog` or a wrapper with
    ``roll_if_full``, ``append_many(payloads, roll)`` and ``note_answers``; any other
    WAL gets no answers."""
    noting = hasattr(wal, "note_answers")
    if noting:
        with contextlib.suppress(WalError, OSError):  # a failed log answers the batch its 503 below
            wal.roll_if_full()
    notes: list[AnswerNote] = []
    responses = run_requests(verifier, requests, now, _NoRoll(wal) if noting else wal, store, sink, latency,
                             notes=notes)
    if noting and notes:
        wal.note_answers(notes)
    return responses


def append_batch(verifier: Verifier, requests: Sequence[Request], now: float, wal: Any,
                 sink: Sink | None = None, latency: Latency | None = None) -> tuple[VerifyBatch, int, int]:
    """The first half of a *pipelined* submit batch (``flk serve``'s batch driver): step 1
    and the append of the admitted requests' inbox WAL records, WITHOUT the sync -- the
    driver syncs on another thread while it appends the next batch, and calls
    :func:`finish_batch` once a sync that began after this append succeeded (or failed).
    Nothing is parsed, verified or looked up here (INV-WAL-FIRST). Returns ``(batch,
    first, last)``: the records' first and last WAL index, or ``(batch, -1, -1)`` when
    there is nothing to sync (nothing admitted, or the append failed: every admitted
    request is answered the WAL's 503 already). ``wal``: as for :func:`serve_batch`
    (an ``append_many(payloads, roll)`` that never rolls the segment when it takes
    ``note_answers``); the driver rolls it between batches."""
    batch = VerifyBatch(verifier, now, sink=sink, latency=latency)
    appends = batch.admit(requests)
    if not appends:
        return batch, -1, -1
    try:
        first = append_inbox(wal, appends, False if hasattr(wal, "note_answers") else None)
    except (OSError, WalError, TimeoutError):
        batch.wal_failed()
        return batch, -1, -1
    return batch, first, first + len(appends) - 1


def finish_batch(batch: VerifyBatch, first: int, store: Any, wal: Any, synced: bool) -> list[Response]:
    """The second half of a pipelined submit batch, once the sync covering its records
    ended: ``synced`` -- steps 2-8 exactly as :func:`serve_batch` runs them (the WAL
    indexes, one ``get_many``, one ``put_many_if_absent``, the home answers to
    ``wal.note_answers``); not ``synced`` -- every admitted request is answered the
    WAL's 503. The driver finishes batches in WAL order, so that the first record of a
    key is the one that is stored (INV-FWW, INV-IDEMPOTENT-REPLAY)."""
    if not synced:
        batch.wal_failed()
        return batch.responses  # type: ignore[return-value]
    if first >= 0:
        batch.wal_written(first)
    _lookup_and_record(batch, store, batch.now, batch.v.limits.ttl_s, lookup=True)
    if hasattr(wal, "note_answers"):
        notes = batch.notes()
        if notes:
            wal.note_answers(notes)
    return batch.responses  # type: ignore[return-value]


class _NoRoll:
    """``wal`` whose ``append_many`` never rolls the segment (a batch's records and answers share one)."""

    __slots__ = ("wal",)

    def __init__(self, wal: Any) -> None:
        self.wal = wal

    def append_many(self, payloads: list) -> int:
        return self.wal.append_many(payloads, False)

    def append_framed(self, data: bytes, count: int) -> int:
        return self.wal.append_framed(data, count, False)

    def sync(self) -> Any:
        return self.wal.sync()


def _lookup_and_record(batch: VerifyBatch, store: Any, now: float, ttl_s: float, lookup: bool) -> None:
    """Steps 3-8 of ``batch`` against ``store``: one ``get_many`` (only when ``lookup`` and the
    batch needs it), one ``put_many_if_absent`` -- or ``put_many_fresh_if_absent`` when the store
    has it (the SQLite store: the common outcomes written without a StoredOutcome each; not for
    a span with a receive time per record: its outcomes' first_seen differ)."""
    put_fresh = getattr(store, "put_many_fresh_if_absent", None) if batch.times is None else None
    keys = batch.verify(fresh=put_fresh is not None)
    if not keys:
        return
    if lookup and batch.needs_lookup:
        try:
            found = store.get_many(keys, now)
        except StoreUnavailable as exc:
            part = answered_part(exc, keys)  # a shard down: the other keys are answered
            if part is None:
                batch.lookup_failed()
                return
            batch.found(*part)
        else:
            batch.found(found)
    else:  # no hooks: put-if-absent answers a held key as step 5 would (VerifyBatch.needs_lookup)
        batch.skip_lookup()
    if put_fresh is not None:  # the common outcomes handed over without a StoredOutcome each
        items, fresh = batch.fresh_writes()
    else:
        items = batch.writes()
    if not items:
        return
    failed: Collection[int] = ()
    try:
        answers = put_fresh(items, fresh, now, ttl_s) if put_fresh is not None \
            else store.put_many_if_absent(items, now, ttl_s)
    except StoreUnavailable as exc:
        part = answered_part(exc, items)  # a shard down: the other writes happened
        if part is None:
            batch.record_failed()
            return
        answers, failed = part
    (batch.recorded_fresh if put_fresh is not None else batch.recorded)(answers, failed)


REPLAY_SPAN = 512  # records per replay batch (:func:`replay_records`)


def same_time_runs(records: Sequence[Any], limit: int = REPLAY_SPAN) -> Iterable[tuple[int, int]]:
    """``(start, end)`` of each run of consecutive records with one ``received_at``
    (a server batch: one receive time), at most ``limit`` long: replay batches of one
    time (:meth:`VerifyBatch.from_records`; :meth:`VerifyBatch.from_span` takes records
    of any times in one batch)."""
    start, n = 0, len(records)
    while start < n:
        t = records[start].received_at
        end = start + 1
        while end < n and end - start < limit and records[end].received_at == t:
            end += 1
        yield start, end
        start = end


def replay_batch(verifier: Verifier, records: Sequence[Any], store: Any, *, lookup: bool = True,
                 indexes: Sequence[int] | None = None, sink: Sink | None = None,
                 core_cls: type[VerifyBatch] | None = None) -> VerifyBatch:
    """Steps 3-8 of inbox records, each at its own ``received_at`` (INV-IDEMPOTENT-REPLAY),
    through the core in ONE batch (:meth:`VerifyBatch.from_span`; records of one time: the
    common batch); ``lookup=False`` skips step 5 (cross-region replay: put-if-absent
    decides). The store calls are made at the latest ``received_at`` (a span's TTL
    decisions at its end: at most the span's length on the TTL). ``core_cls``: the core
    class (default :class:`VerifyBatch`; a driver's own, as the simulator's world passes).
    Returns the finished batch."""
    batch = (core_cls or VerifyBatch).from_span(verifier, records, indexes=indexes, sink=sink)
    _lookup_and_record(batch, store, batch.now, verifier.limits.ttl_s, lookup)
    return batch


def replay_records(verifier: Verifier, records: Any, store: Any, sink: Sink | None = None) -> list[Response]:
    """Run inbox records (objects with ``tenant``, ``received_at``, ``body``, e.g.
    :class:`flk.impl.storage.inbox.InboxRecord` or :class:`WalAppend`) through steps 3-8
    again, with ``now = received_at`` (INV-IDEMPOTENT-REPLAY), one core batch per
    :data:`REPLAY_SPAN` records (:func:`replay_batch`: each record at its own time). A
    ``tenant`` of ``""`` means the request had no ``X-Tenant-Id``. An unexpected error
    propagates: the drivers that must survive a poison record (start-up replay,
    cross-region replay) isolate it themselves."""
    records = list(records)
    out: list[Response] = []
    for start in range(0, len(records), REPLAY_SPAN):
        out.extend(replay_batch(verifier, records[start:start + REPLAY_SPAN], store, sink=sink).responses)
    return out


def replay_log(verifier: Verifier, log: Any, store: Any, sink: Sink | None = None,
               from_index: int = 0) -> list[Response]:
    """Replay the inbox records of a :class:`flk.impl.storage.wal.SegmentedLog` from ``from_index``."""
    return replay_records(verifier, [decode_inbox_record(p) for _, p in log.records(from_index)], store, sink)


