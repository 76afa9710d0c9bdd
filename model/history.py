"""A black-box checker of client-observed histories (Jepsen/Elle style).

Why this module exists: the simulator's checkers (``flk.sim.checkers``) look
inside the system -- WAL records, dedup puts, stores. A real deployment offers
no such view. This checker judges only what clients saw: per operation (one
HTTP attempt) the request -- tenant, pcs_id, payload digest (hex SHA-256 of
the v1 canonical bytes of the signed subset) -- its invoke and complete
times, the answer (status, ``Idempotent-Replayed``, or a transport error /
timeout) and the region it went to; optionally, what each region's store
holds at the end (final reads). So the same check runs on simulator runs,
on ``flk agent load --history`` against one ``flk serve`` and on several
regions.

Answers are classified: 200/202 **acknowledged**; 409 **conflict**; any other
4xx **rejected** (certainly no effect: refused before or without a write);
5xx and transport errors **indeterminate** (the request may take effect at
any time after it was sent -- a 503 after the WAL append is applied by the
next replay). A status outside 100-599 is no HTTP answer: the record is invalid input
(named by file and line), never an indeterminate answer. Checks, per key (tenant, pcs_id), named by the invariant IDs of
spec/INVARIANTS.md:

* INV-FWW -- no key is acknowledged with two payload digests; a 409 only when
  another payload was acknowledged, or could have been stored (acknowledged
  or indeterminate, sent before the 409 arrived); a payload refused with 409
  is never acknowledged by a later request to the same region.
* INV-IDEMPOTENT-REPLAY -- a duplicate of an acknowledged payload sent after
  the acknowledgement to the same region is answered 200/202 as a replay,
  never 409; one region answers a payload fresh (not replayed) at most once;
  a replay answer needs an earlier request with that payload that could have
  stored it.
* INV-NO-ACKED-LOSS -- every acknowledged payload is in the final read of
  the region it was acknowledged by (and in a region-less final read) with
  the acknowledged digest and status.

Every anomaly carries the minimal set of operations that proves it: the
checker run on the witness alone reports the same anomaly, and on the
witness less any one operation does not. Pure: no I/O, no clock, nothing of
``flk.impl`` (spec/ARCHITECTURE.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

INV_FWW = "INV-FWW"
INV_IDEMPOTENT_REPLAY = "INV-IDEMPOTENT-REPLAY"
INV_NO_ACKED_LOSS = "INV-NO-ACKED-LOSS"
INVARIANTS = (INV_FWW, INV_IDEMPOTENT_REPLAY, INV_NO_ACKED_LOSS)

ACKED, CONFLICT, REJECTED, INDETERMINATE = "acked", "conflict", "rejected", "indeterminate"


@dataclass(frozen=True)
class Op:
    """One request as a client observed it. ``status`` None: transport error or timeout."""

    id: str
    tenant: str
    pcs_id: str
    digest: str
    invoke: float
    complete: float
    status: int | None
    replay: bool | None = None
    region: str = ""
    error: str | None = None

    @property
    def outcome(self) -> str:
        if self.status in (200, 202):
            return ACKED
        if self.status == 409:
            return CONFLICT
        if self.status is not None and 400 <= self.status < 500:
            return REJECTED
        return INDETERMINATE

    @property
    def fresh(self) -> bool:
        """Acknowledged and not answered as a replay."""
        return self.outcome == ACKED and not self.replay

    def could_store(self) -> bool:
        """Whether this request may have stored its payload (acknowledged or indeterminate)."""
        return self.outcome in (ACKED, INDETERMINATE)

    def answer(self) -> str:
        if self.status is None:
            return f"no answer ({self.error or 'transport error'})"
        if self.outcome == ACKED:
            return f"{self.status} {'replay' if self.replay else 'fresh'}"
        if self.outcome == INDETERMINATE:
            return f"{self.status} (indeterminate)"
        return str(self.status)

    def witness(self) -> dict:
        return {"op": self.id, "region": self.region, "digest": self.digest, "invoke": self.invoke,
                "complete": self.complete, "answer": self.answer()}


@dataclass(frozen=True)
class Anomaly:
    """One violated invariant and the operations that prove it."""

    invariant: str
    kind: str
    key: tuple[str, ...]
    message: str
    ops: tuple[Op, ...]
    final: dict | None = None

    def as_dict(self) -> dict:
        out = {"invariant": self.invariant, "kind": self.kind, "key": list(self.key), "message": self.message,
               "witness": [op.witness() for op in self.ops]}
        if self.final is not None:
            out["final_read"] = dict(self.final)
        return out

    def describe(self) -> str:
        lines = [f"{self.invariant} [{self.kind}] {'/'.join(self.key)}: {self.message}"]
        for op in self.ops:
            w = op.witness()
            lines.append(f"    op {w['op']} -> {w['region'] or '-'} digest {w['digest'][:16]}... "
                         f"invoke {w['invoke']:.6f} complete {w['complete']:.6f} answer {w['answer']}")
        if self.final is not None:
            lines.append(f"    final read of {self.final['region'] or 'every region'}: "
                         f"{self.final.get('digest') or 'absent'}")
        return "\n".join(lines)


@dataclass
class HistoryReport:
    """The checker's verdict: anomalies (sorted) and what was checked."""

    anomalies: list[Anomaly] = field(default_factory=list)
    ops: int = 0
    keys: int = 0
    acked: int = 0
    indeterminate: int = 0
    final_checked: int = 0
    # with final reads: regions a read names that no operation went to (a label that matches
    # nothing: --region spelled otherwise than the load's URLs), and regions with acknowledged
    # operations that no read covers (not checked for loss)
    final_unmatched: list[str] = field(default_factory=list)
    final_unread: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.anomalies

    def by_invariant(self) -> dict[str, int]:
        return {inv: sum(1 for a in self.anomalies if a.invariant == inv) for inv in INVARIANTS}

    def as_dict(self) -> dict:
        return {"valid": self.ok, "ops": self.ops, "keys": self.keys, "acked": self.acked,
                "indeterminate": self.indeterminate, "final_checked": self.final_checked,
                "final_unmatched": self.final_unmatched, "final_unread": self.final_unread,
                "anomalies_by_invariant": self.by_invariant(),
                "anomalies": [a.as_dict() for a in self.anomalies]}


# --------------------------------------------------------------------------- checks per key


def _order(op: Op) -> tuple:
    return (op.complete, op.invoke, op.id)


def _two_acked_digests(key: tuple, ops: list[Op], per_region: bool) -> list[Anomaly]:
    first: dict[tuple[str, str], Op] = {}
    for op in sorted((o for o in ops if o.outcome == ACKED), key=_order):
        first.setdefault((op.region if per_region else "", op.digest), op)
    out = []
    for scope in sorted({s for s, _ in first}):
        winners = sorted((op for (s, _), op in first.items() if s == scope), key=_order)
        out.extend(Anomaly(INV_FWW, "two-acked-digests", key,
                           "acknowledged with two different payload digests"
                           + (" by one region" if per_region else ""), (winners[0], other))
                   for other in winners[1:])
    return out


def _conflict_anomalies(key: tuple, ops: list[Op], op: Op) -> list[Anomaly]:
    """What is wrong with the 409 answer ``op`` (empty when it is justified)."""
    earlier_ack = [p for p in ops if p.outcome == ACKED and p.digest == op.digest and p.region == op.region
                   and p.complete < op.invoke]
    if earlier_ack:
        p = min(earlier_ack, key=_order)
        return [Anomaly(INV_IDEMPOTENT_REPLAY, "409-after-ack", key,
                        "a duplicate of an acknowledged payload was answered 409 instead of a replay", (p, op))]
    rivals = [q for q in ops if q.digest != op.digest and q.could_store() and q.invoke < op.complete]
    if not rivals:
        return [Anomaly(INV_FWW, "unjustified-409", key,
                        "answered 409 though no other payload was acknowledged or could have been stored",
                        (op,))]
    later = [p for p in ops if p.outcome == ACKED and p.digest == op.digest and p.region == op.region
             and p.invoke > op.complete]
    if later:
        rival, p = min(rivals, key=lambda q: (q.invoke, q.id)), min(later, key=_order)
        return [Anomaly(INV_FWW, "refused-then-acked", key,
                        "a payload refused with 409 (another was stored) was acknowledged later by the "
                        "same region: the stored outcome changed", (rival, op, p))]
    return []


def _replay_anomalies(key: tuple, ops: list[Op], may_repeat: bool) -> list[Anomaly]:
    out = []
    fresh: dict[tuple[str, str], Op] = {}
    for op in sorted((o for o in ops if o.fresh), key=_order):
        first = fresh.setdefault((op.region, op.digest), op)
        if first is not op:
            out.append(Anomaly(INV_IDEMPOTENT_REPLAY, "two-fresh-acks", key,
                               "one region answered the same payload fresh twice (the second must be a replay)",
                               (first, op)))
    for op in ops:
        if op.outcome != ACKED or not op.replay or may_repeat:
            continue
        if not any(q is not op and q.digest == op.digest and q.could_store() and q.invoke < op.complete
                   for q in ops):
            out.append(Anomaly(INV_IDEMPOTENT_REPLAY, "phantom-replay", key,
                               "answered as a replay though no earlier request with this payload could have "
                               "stored it", (op,)))
    return out


def _check_key(key: tuple, ops: list[Op], per_region: bool, may_repeat: bool) -> list[Anomaly]:
    out = _two_acked_digests(key, ops, per_region)
    for op in ops:
        if op.outcome == CONFLICT:
            out.extend(_conflict_anomalies(key, ops, op))
    out.extend(_replay_anomalies(key, ops, may_repeat))
    return out


# --------------------------------------------------------------------------- final reads


FinalReads = Mapping[str | None, Mapping[tuple[str, str], tuple[str, int | None]]]


def _lost(ops: list[Op], final: FinalReads) -> tuple[list[Anomaly], int]:
    """INV-NO-ACKED-LOSS: each acknowledged payload in every final read covering its region."""
    out: list[Anomaly] = []
    checked = 0
    reported: set[tuple] = set()
    for op in sorted((o for o in ops if o.outcome == ACKED), key=_order):
        for region in (op.region, None):
            source = final.get(region)
            if source is None:
                continue
            checked += 1
            stored = source.get((op.tenant, op.pcs_id))
            kind = None
            if stored is None:
                kind, why = "acked-absent", "acknowledged but absent from the final read"
            elif stored[0] != op.digest:
                kind, why = "acked-differs", "acknowledged but the final read holds another payload digest"
            elif stored[1] is not None and stored[1] != op.status:
                kind, why = "acked-status-differs", f"acknowledged {op.status} but the final read holds {stored[1]}"
            if kind is None or (op.tenant, op.pcs_id, region, op.digest) in reported:
                continue
            reported.add((op.tenant, op.pcs_id, region, op.digest))
            read = {"region": region, "digest": None if stored is None else stored[0],
                    "status": None if stored is None else stored[1]}
            out.append(Anomaly(INV_NO_ACKED_LOSS, kind, (op.tenant, op.pcs_id), why, (op,), read))
    return out, checked


# --------------------------------------------------------------------------- entry point


def check(ops: Iterable[Op], final_reads: FinalReads | None = None, per_region: bool = False,
          requests_may_repeat: bool = False) -> HistoryReport:
    """Check a client-observed history.

    ``final_reads`` maps a region (the ``Op.region`` values; ``None`` = a read
    that covers every region) to ``{(tenant, pcs_id): (digest, status or None)}``
    -- what that region's store holds at the end; a region not in the map is
    not checked for loss. ``per_region``: first-write-wins is promised per
    region only (asynchronous replication: during a partition two regions may
    each acknowledge their own payload), so only acknowledgements by one region
    must agree; a write sent to any region still justifies a 409 or a replay
    elsewhere (replication carries it). By default one key spans all regions.
    ``requests_may_repeat``: the network may deliver one request twice (the
    simulator's duplicating network; not HTTP over TCP), so a replay answer can
    be explained by the request's own first delivery -- no phantom-replay check.
    """
    ops = list(ops)
    ids = [op.id for op in ops]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[0]
        raise ValueError(f"operation id {dup!r} occurs twice; ids must be unique across the history")
    groups: dict[tuple, list[Op]] = {}
    for op in sorted(ops, key=lambda o: (o.invoke, o.complete, o.id)):
        groups.setdefault((op.tenant, op.pcs_id), []).append(op)
    report = HistoryReport(ops=len(ops), keys=len(groups),
                           acked=sum(1 for o in ops if o.outcome == ACKED),
                           indeterminate=sum(1 for o in ops if o.outcome == INDETERMINATE))
    for key in sorted(groups):
        report.anomalies.extend(_check_key(key, groups[key], per_region, requests_may_repeat))
    if final_reads is not None:
        lost, report.final_checked = _lost(ops, final_reads)
        report.anomalies.extend(lost)
        sent = {op.region for op in ops}
        report.final_unmatched = sorted(r for r in final_reads if r is not None and r not in sent)
        if None not in final_reads:
            report.final_unread = sorted({op.region for op in ops if op.outcome == ACKED} - set(final_reads))
    report.anomalies.sort(key=lambda a: (a.invariant, a.key, a.kind, tuple(o.id for o in a.ops)))
    return report


# --------------------------------------------------------------------------- input formats


def _field(rec: Mapping, name: str, types: tuple, where: str, optional: bool = False):
    value = rec.get(name)
    if value is None and optional:
        return None
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        wanted = " or ".join(t.__name__ for t in types) + (" or null" if optional else "")
        raise ValueError(f"{where}: field {name!r} must be {wanted}, got {value!r:.60}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: field {name!r} must be a finite number")
    return value


HTTP_STATUS = range(100, 600)  # what an HTTP answer's status can be (RFC 9110, section 15)


def _status(rec: Mapping, where: str) -> int | None:
    """A record's ``status``: an HTTP status (100 to 599), or null for no answer."""
    status = _field(rec, "status", (int,), where, optional=True)
    if status is not None and status not in HTTP_STATUS:
        raise ValueError(f"{where}: field 'status' must be an HTTP status (100 to 599) or null, got {status}")
    return status


def region_of_url(url: str) -> str:
    """The region an HTTP request went to: its scheme://host:port."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url


def op_from_load_record(rec: Mapping, where: str, client: str = "") -> Op:
    """One line of ``flk agent load --history`` (see ``flk.impl.agent.loadgen``) as an :class:`Op`.
    ``client`` prefixes the id, so histories of several load runs can be merged."""
    if not isinstance(rec, Mapping):
        raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    req_id = _field(rec, "req_id", (str, int), where)
    status = _status(rec, where)
    replay = _field(rec, "replay", (bool,), where, optional=True)
    t_send = _field(rec, "t_send", (int, float), where)
    t_recv = _field(rec, "t_recv", (int, float), where)
    if t_recv < t_send:
        raise ValueError(f"{where}: t_recv {t_recv} is before t_send {t_send}")
    return Op(id=f"{client}{req_id}", tenant=_field(rec, "tenant", (str,), where),
              pcs_id=_field(rec, "pcs_id", (str,), where), digest=_field(rec, "digest", (str,), where),
              invoke=float(t_send), complete=float(t_recv), status=status, replay=replay,
              region=region_of_url(_field(rec, "url", (str,), where)),
              error=_field(rec, "error", (str,), where, optional=True))


def final_reads_from_records(records: Iterable[tuple[str, Mapping]]) -> dict:
    """Final reads from JSON objects ``{"region"?, "tenant", "pcs_id", "digest", "status"?}``.

    A record without ``region`` (or null) covers every region; ``{"region": R}``
    alone declares region R read and empty. No record at all: one empty read
    covering every region (nothing survived)."""
    final: dict[str | None, dict] = {}
    for where, rec in records:
        if not isinstance(rec, Mapping):
            raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        region = _field(rec, "region", (str,), where, optional=True)
        source = final.setdefault(region, {})
        if set(rec) <= {"region"}:
            continue
        key = (_field(rec, "tenant", (str,), where), _field(rec, "pcs_id", (str,), where))
        value = (_field(rec, "digest", (str,), where), _status(rec, where))
        if source.get(key, value) != value:
            raise ValueError(f"{where}: region {region or '*'} read {key} twice with different outcomes")
        source[key] = value
    return final or {None: {}}


def final_read_record(tenant: str, pcs_id: str, digest: str, status: int | None = None,
                      region: str | None = None) -> dict:
    """One line of a final read, as :func:`final_reads_from_records` reads it back: what a
    region's store holds for (tenant, pcs_id). ``region`` (a URL: reduced to the
    scheme://host:port the load generator's history names) or None: the read covers every
    region."""
    rec: dict = {} if region is None else {"region": region_of_url(region)}
    rec.update(tenant=tenant, pcs_id=pcs_id, digest=digest)
    if status is not None:
        rec["status"] = status
    return rec


def empty_read_record(region: str) -> dict:
    """The line that declares ``region`` read and empty (see :func:`final_reads_from_records`)."""
    return {"region": region_of_url(region)}
