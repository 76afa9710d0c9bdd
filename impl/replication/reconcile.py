"""Convergent reconciliation: the authoritative outcome beside the local one (SPEC.md section 11).

Why this module exists: per region, first-write-wins is absolute (INV-FWW),
so after a partition two regions may keep different payloads under one
``(tenant, pcs_id)`` forever. Every region therefore also computes the
**authoritative outcome**: the merge (:func:`flk.model.merge.merge`, the
formal engineer's reference -- imported, not re-implemented) of every outcome
it has seen for the key. The merge is the minimum of a total order on
``(first_seen, region, payload_digest, status)``, hence commutative,
associative and idempotent: regions that have seen the same outcomes, in any
order and with any re-deliveries, hold the same authoritative outcome
(INV-CONVERGENCE).

The authoritative outcome is recorded in its own keyspace
(:class:`MemoryAuthoritativeStore`, :class:`SqliteAuthoritativeStore`),
**never** in the dedup store: the local outcome is not touched.

A **conflict** is a key seen with two or more payload digests. The
:class:`Reconciler` raises it (a conflict record, metrics, an audit entry) and,
by mode, either queues it for review (``manual``; ``auto-safe`` when the
conflicting outcomes disagree on the verdict, 200 vs 202) or resolves it
automatically (``auto-safe`` when every conflicting outcome has the same
status). Resolution never changes the authoritative outcome (that is fixed by
the merge so regions cannot diverge); it records that an operator or the
policy accepted it. Every decision is appended to the audit log.

Sans-I/O: time is passed in; audit through a callable.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Any, Protocol

from flk.model.merge import Outcome, merge

from ..core import textdata
from ..core.errors import InvalidInput
from ..dedup import StoredOutcome

MODES = ("manual", "auto-safe")
# conflict states
PENDING, AUTO, MANUAL, REJECTED = "pending_review", "resolved_auto", "resolved_manual", "rejected_review"


def to_model(o: StoredOutcome) -> Outcome:
    return Outcome(first_seen=float(o.first_seen), region=o.region, payload_digest=o.payload_digest,
                   status=int(o.status))


def full_key(o: StoredOutcome) -> tuple:
    """The merge order extended by the fields the model omits (only to make the
    choice between outcomes equal on the model's key deterministic)."""
    return (*to_model(o).order_key(), o.policy_version, o.body)


def merge_outcomes(a: StoredOutcome | None, b: StoredOutcome | None) -> StoredOutcome | None:
    """:func:`flk.model.merge.merge` lifted to full stored outcomes."""
    if a is None:
        return b
    if b is None:
        return a
    ma, mb = to_model(a), to_model(b)
    if ma == mb:  # equal for the model: break the tie on the remaining fields
        return a if full_key(a) <= full_key(b) else b
    return a if merge(ma, mb) is ma else b  # the model's pick (ma != mb: it is one of the two)


@dataclass(frozen=True)
class AuthRecord:
    """What a region knows about one key: the authoritative outcome, every
    (payload digest, status) seen, and the conflict's state (None = no conflict)."""

    authoritative: StoredOutcome
    seen: tuple[tuple[str, int], ...]
    state: str | None = None
    changed_at: float = 0.0
    decided_by: str | None = None

    @property
    def digests(self) -> tuple[str, ...]:
        return tuple(sorted({d for d, _ in self.seen}))

    @property
    def conflict(self) -> bool:
        seen = self.seen  # len(self.digests) > 1, without sorting
        return len(seen) > 1 and len({d for d, _ in seen}) > 1

    def as_dict(self) -> dict[str, Any]:
        a = self.authoritative
        return {"payload_digest": a.payload_digest, "status": a.status, "first_seen": a.first_seen,
                "region": a.region, "policy_version": a.policy_version, "conflict": self.conflict,
                "digests": list(self.digests), "state": self.state or "agreed", "decided_by": self.decided_by}


class AuthoritativeStore(Protocol):
    def get(self, tenant: str, pcs_id: str) -> AuthRecord | None: ...

    def put(self, tenant: str, pcs_id: str, rec: AuthRecord) -> None: ...

    def items(self) -> Iterator[tuple[str, str, AuthRecord]]: ...

    def count(self) -> int: ...


class MemoryAuthoritativeStore:
    def __init__(self) -> None:
        self._d: dict[tuple[str, str], AuthRecord] = {}
        self._lock = threading.Lock()

    def get(self, tenant: str, pcs_id: str) -> AuthRecord | None:
        return self._d.get((tenant, pcs_id))

    def put(self, tenant: str, pcs_id: str, rec: AuthRecord) -> None:
        with self._lock:
            self._d[(tenant, pcs_id)] = rec

    def items(self) -> Iterator[tuple[str, str, AuthRecord]]:
        with self._lock:
            snap = sorted(self._d.items())
        for (t, p), r in snap:
            yield t, p, r

    def count(self) -> int:
        return len(self._d)


def _rec_to_row(rec: AuthRecord) -> tuple:
    return (rec.authoritative.to_bytes(), json.dumps([list(x) for x in rec.seen]), rec.state, rec.changed_at,
            rec.decided_by)


def _row_to_rec(row) -> AuthRecord:
    seen = tuple((str(d), int(s)) for d, s in textdata.json_loads(row[1]))
    return AuthRecord(StoredOutcome.from_bytes(bytes(row[0])), seen, row[2], float(row[3]), row[4])


_GET_CHUNK = 200  # keys per SELECT of SqliteAuthoritativeStore.get_many


@functools.lru_cache(maxsize=_GET_CHUNK)
def _select_many(n: int) -> str:
    return ("SELECT a.tenant, a.pcs_id, a.outcome, a.seen, a.state, a.changed_at, a.decided_by FROM (VALUES "
            + ",".join(["(?, ?)"] * n)
            + ") AS k JOIN authoritative AS a ON a.tenant = k.column1 AND a.pcs_id = k.column2")


class SqliteAuthoritativeStore:
    """The authoritative keyspace in its own SQLite file (beside, not inside, the dedup store)."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS authoritative (tenant TEXT NOT NULL, pcs_id TEXT NOT NULL, "
                         "outcome BLOB NOT NULL, seen TEXT NOT NULL, state TEXT, changed_at REAL NOT NULL, "
                         "decided_by TEXT, PRIMARY KEY (tenant, pcs_id))")

    def get(self, tenant: str, pcs_id: str) -> AuthRecord | None:
        with self._lock:
            row = self._db.execute("SELECT outcome, seen, state, changed_at, decided_by FROM authoritative "
                                   "WHERE tenant=? AND pcs_id=?", (tenant, pcs_id)).fetchone()
        return None if row is None else _row_to_rec(row)

    def put(self, tenant: str, pcs_id: str, rec: AuthRecord) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO authoritative VALUES (?,?,?,?,?,?,?)",
                             (tenant, pcs_id, *_rec_to_row(rec)))

    def get_many(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], AuthRecord]:
        """The records of distinct ``keys`` that have one: one ``SELECT`` per chunk (a join on
        a VALUES list searches the primary key per key) instead of one per key."""
        out: dict[tuple[str, str], AuthRecord] = {}
        with self._lock:
            for i in range(0, len(keys), _GET_CHUNK):
                chunk = keys[i:i + _GET_CHUNK]
                params: list = []
                for t, p in chunk:
                    params += (t, p)
                for row in self._db.execute(_select_many(len(chunk)), params):
                    out[(row[0], row[1])] = _row_to_rec(row[2:])
        return out

    def put_many(self, rows: list[tuple[str, str, AuthRecord]]) -> None:
        """:meth:`put` of each ``(tenant, pcs_id, record)`` in order, in one ``executemany``."""
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO authoritative VALUES (?,?,?,?,?,?,?)",
                                 [(t, p, *_rec_to_row(rec)) for t, p, rec in rows])

    def items(self) -> Iterator[tuple[str, str, AuthRecord]]:
        with self._lock:
            rows = self._db.execute("SELECT tenant, pcs_id, outcome, seen, state, changed_at, decided_by "
                                    "FROM authoritative ORDER BY tenant, pcs_id").fetchall()
        for r in rows:
            yield r[0], r[1], _row_to_rec(r[2:])

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM authoritative").fetchone()[0]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The puts inside as ONE transaction (one commit, one sync of the log, instead of
        one per put): :meth:`Reconciler.observe_batch`. A crash inside loses the batch's
        puts together; replaying the batch again observes them again (observing is
        idempotent)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with self._lock:
                self._db.execute("ROLLBACK")
            raise
        with self._lock:
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()


AuditFn = Callable[..., Any]


def audit_log_fn(log: Any) -> AuditFn:
    """Adapts :class:`flk.impl.governance.audit.AuditLog` (``append(**entry)`` + ``sync``)."""

    def fn(**entry: Any) -> None:
        log.append(**entry)
        log.sync()

    return fn


class Reconciler:
    """Observes outcomes (local and replicated) and keeps the authoritative map.

    ``observe(tenant, pcs_id, outcome, now)`` is the only input; it is
    idempotent and order-insensitive in its effect on the authoritative
    outcome. ``audit(**entry)`` gets ``tenant, pcs_id, outcome, payload_digest,
    now, status, region`` (the keyword arguments of ``AuditLog.append``) for
    every decision. Thread-safe."""

    def __init__(self, region: str, store: AuthoritativeStore | None = None, mode: str = "auto-safe",
                 audit: AuditFn | None = None) -> None:
        if mode not in MODES:
            raise InvalidInput("mode", f"must be one of {', '.join(MODES)}")
        self.region, self.mode = region, mode
        self.store = store if store is not None else MemoryAuthoritativeStore()
        self.audit = audit
        self._lock = threading.RLock()
        self.counters = {"observed": 0, "authoritative_changes": 0, "conflicts": 0, "auto_resolved": 0,
                         "manual_resolved": 0, "review_rejected": 0}

    def _audit(self, tenant: str, pcs_id: str, kind: str, rec: AuthRecord, now: float) -> None:
        if self.audit is not None:
            a = rec.authoritative
            self.audit(tenant=tenant, pcs_id=pcs_id, outcome=kind, payload_digest=a.payload_digest, now=now,
                       status=a.status, region=self.region)

    def _safe(self, rec: AuthRecord) -> bool:
        return len({s for _, s in rec.seen}) == 1

    def observe(self, tenant: str, pcs_id: str, outcome: StoredOutcome, now: float) -> AuthRecord:
        with self._lock:
            self.counters["observed"] += 1
            old = self.store.get(tenant, pcs_id)
            seen_pair = (outcome.payload_digest, int(outcome.status))
            if old is None:
                rec = AuthRecord(outcome, (seen_pair,), None, now)
                self.store.put(tenant, pcs_id, rec)
                return rec
            return self._observe_known(tenant, pcs_id, outcome, now, old, seen_pair)

    def observe_batch(self, reports: list[tuple[str, str, StoredOutcome]], now: float) -> list[tuple[str, str]]:
        """:meth:`observe` of every ``(tenant, pcs_id, outcome)`` in order, under one lock;
        the keys whose record is a conflict after their observation (in order, once per
        such observation). The store's batch forms, when it has them, give the same records:

        * ``observe_plain(reports, start, now) -> int`` (the simulator's compact store): the
          reports from ``start`` on that leave their record plain -- a key seen for the first
          time (the record :meth:`observe` would put, without building it) or a re-delivery
          of the one outcome a plain record holds (nothing changes) -- taken in order, in one
          call; it answers the position of the first report that is not (``len(reports)``:
          none), which the caller merges as :meth:`observe` does before asking again;
        * else ``put_first(tenant, pcs_id, outcome, now)``: a key seen for the first time;
        * ``get_many(keys)`` and ``put_many(rows)`` (the service's SQLite store): the batch's
          records read in one query, merged in order, the changed ones written in one call;
        * a store with a ``transaction()`` takes the batch's puts in one."""
        store = self.store
        transaction = getattr(store, "transaction", None)
        with self._lock, (transaction() if transaction is not None else nullcontext()):
            self.counters["observed"] += len(reports)
            if hasattr(store, "get_many") and hasattr(store, "put_many"):
                return self._observe_read_ahead(reports, now)
            return self._observe_each(reports, now)

    def _observe_each(self, reports: list[tuple[str, str, StoredOutcome]], now: float) -> list[tuple[str, str]]:
        """:meth:`observe_batch` with one store call (or two) per report (the lock held); a
        store's ``observe_plain`` takes each run of plain reports in one call."""
        conflicts: list[tuple[str, str]] = []
        store = self.store
        get = store.get
        plain = getattr(store, "observe_plain", None)
        put_first = getattr(store, "put_first", None)
        i, n = 0, len(reports)
        while i < n:
            if plain is not None:
                i = plain(reports, i, now)
                if i >= n:
                    break
            tenant, pcs_id, outcome = reports[i]
            i += 1
            old = get(tenant, pcs_id)
            if old is None:
                if put_first is not None:
                    put_first(tenant, pcs_id, outcome, now)
                else:
                    store.put(tenant, pcs_id, AuthRecord(outcome, ((outcome.payload_digest, int(outcome.status)),),
                                                         None, now))
                continue
            rec = self._observe_known(tenant, pcs_id, outcome, now, old,
                                      (outcome.payload_digest, int(outcome.status)))
            if rec.conflict:
                conflicts.append((tenant, pcs_id))
        return conflicts

    def _observe_read_ahead(self, reports: list[tuple[str, str, StoredOutcome]],
                            now: float) -> list[tuple[str, str]]:
        """:meth:`observe_batch` on a store with ``get_many``/``put_many`` (the lock held):
        every key's record read at once, the reports merged in order over them (a later
        report of a key sees the earlier one's record), each changed record written once."""
        conflicts: list[tuple[str, str]] = []
        known = self.store.get_many(list(dict.fromkeys([(t, p) for t, p, _ in reports])))
        changed: dict[tuple[str, str], AuthRecord] = {}
        for tenant, pcs_id, outcome in reports:
            key = (tenant, pcs_id)
            old = known.get(key)
            seen_pair = (outcome.payload_digest, int(outcome.status))
            if old is None:
                rec = AuthRecord(outcome, (seen_pair,), None, now)
            else:
                rec = self._merged(tenant, pcs_id, outcome, now, old, seen_pair)
                if rec.conflict:
                    conflicts.append(key)
                if rec is old:
                    continue
            known[key] = changed[key] = rec
        if changed:
            self.store.put_many([(t, p, rec) for (t, p), rec in changed.items()])
        return conflicts

    def _observe_known(self, tenant: str, pcs_id: str, outcome: StoredOutcome, now: float, old: AuthRecord,
                       seen_pair: tuple[str, int]) -> AuthRecord:
        """:meth:`observe` of a key with a record (the lock held)."""
        rec = self._merged(tenant, pcs_id, outcome, now, old, seen_pair)
        if rec is not old:
            self.store.put(tenant, pcs_id, rec)
        return rec

    def _merged(self, tenant: str, pcs_id: str, outcome: StoredOutcome, now: float, old: AuthRecord,
                seen_pair: tuple[str, int]) -> AuthRecord:
        """The record of a key that had ``old`` after observing ``outcome`` (``old`` itself when
        nothing changes; counters and audit entries as the observation makes them); not put."""
        if (outcome is old.authoritative or outcome == old.authoritative) and seen_pair in old.seen:
            return old  # a re-delivery of the authoritative outcome (what the merge below finds)
        auth = merge_outcomes(old.authoritative, outcome)
        seen = old.seen if seen_pair in old.seen else tuple(sorted({*old.seen, seen_pair}))
        if auth == old.authoritative and seen == old.seen:
            return old  # a re-delivery: nothing changes (idempotent)
        rec = replace(old, authoritative=auth, seen=seen, changed_at=now)
        changed = auth != old.authoritative
        if changed:
            self.counters["authoritative_changes"] += 1
        if rec.conflict and old.state is None:
            self.counters["conflicts"] += 1
            self._audit(tenant, pcs_id, "reconcile_conflict", rec, now)
            if self.mode == "auto-safe" and self._safe(rec):
                rec = replace(rec, state=AUTO, decided_by="auto-safe")
                self.counters["auto_resolved"] += 1
                self._audit(tenant, pcs_id, "reconcile_auto_resolved", rec, now)
            else:
                rec = replace(rec, state=PENDING)
        elif rec.conflict and (changed or seen != old.seen):
            # new evidence on a known conflict: re-decide
            self._audit(tenant, pcs_id, "reconcile_authoritative_changed", rec, now)
            if rec.state == AUTO and not self._safe(rec):
                rec = replace(rec, state=PENDING, decided_by=None)
                self.counters["auto_resolved"] -= 1
            elif rec.state in (MANUAL, REJECTED):
                rec = replace(rec, state=PENDING, decided_by=None)
        return rec

    def observe_many(self, items: Mapping[tuple[str, str], StoredOutcome] | list, now: float) -> None:
        it = items.items() if isinstance(items, Mapping) else items
        for (tenant, pcs_id), o in it:
            self.observe(tenant, pcs_id, o, now)

    # -- queries
    def authoritative(self, tenant: str, pcs_id: str) -> AuthRecord | None:
        return self.store.get(tenant, pcs_id)

    def authoritative_map(self) -> dict[tuple[str, str], StoredOutcome]:
        return {(t, p): r.authoritative for t, p, r in self.store.items()}

    def conflicts(self, state: str | None = None) -> list[tuple[str, str, AuthRecord]]:
        return [(t, p, r) for t, p, r in self.store.items() if r.conflict and (state is None or r.state == state)]

    def review_queue(self) -> list[tuple[str, str, AuthRecord]]:
        return self.conflicts(PENDING)

    def decide(self, tenant: str, pcs_id: str, approve: bool, by: str, now: float) -> AuthRecord:
        """An operator's decision on a queued conflict (manual mode, or an unsafe
        one in auto-safe mode): approve = accept the authoritative outcome;
        reject = keep it flagged for follow-up. Audited either way."""
        if not isinstance(by, str) or not by:
            raise InvalidInput("by", "who decided must be named")
        with self._lock:
            rec = self.store.get(tenant, pcs_id)
            if rec is None or rec.state != PENDING:
                raise InvalidInput("pcs_id", "no conflict awaiting review for this key")
            rec = replace(rec, state=MANUAL if approve else REJECTED, decided_by=by, changed_at=now)
            self.counters["manual_resolved" if approve else "review_rejected"] += 1
            self.store.put(tenant, pcs_id, rec)
            self._audit(tenant, pcs_id, "reconcile_approved" if approve else "reconcile_rejected", rec, now)
            return rec

    def metrics(self) -> dict[str, int]:
        with self._lock:
            out = dict(self.counters)
        states: dict[str, int] = {}
        for _, _, r in self.conflicts():
            states[r.state or "agreed"] = states.get(r.state or "agreed", 0) + 1
        out["open_conflicts"] = states.get(PENDING, 0)
        out["keys"] = self.store.count()
        return out


# -- HTTP (an ASGI sub-app the server mounts) ----------------------------------------------

def problem_response(slug: str, detail: str):
    """A Starlette problem+json response of catalog ``slug`` (flk.impl.verifier.problems)."""
    from starlette.responses import Response

    from ..verifier.problems import CONTENT_TYPE, problem_body, problem_type

    return Response(problem_body(slug, detail), status_code=problem_type(slug).status, media_type=CONTENT_TYPE)


def authoritative_app(reconciler_getter: Callable[[], Reconciler | None]):
    """A Starlette app: ``GET /v1/pcs/{pcs_id}/authoritative`` (header
    ``X-Tenant-Id``, default ``default``) -> 200 JSON (``local`` is not
    included: the dedup store answers that) or problem+json 404 / 503;
    ``GET /v1/crr/conflicts`` -> the open and resolved conflicts."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def get_auth(request: Request) -> Response:
        rec_ = reconciler_getter()
        if rec_ is None:
            return problem_response("replication-disabled", "cross-region replication is not configured")
        pcs_id = request.path_params["pcs_id"]
        tenant = request.headers.get("x-tenant-id") or "default"
        if len(pcs_id) != 64 or any(c not in "0123456789abcdef" for c in pcs_id):
            return problem_response("invalid-pcs-id", "pcs_id must be 64 lowercase hex digits")
        rec = rec_.authoritative(tenant, pcs_id)
        if rec is None:
            return problem_response("not-found", "no outcome seen for this pcs_id")
        return JSONResponse({"pcs_id": pcs_id, "tenant": tenant, **rec.as_dict()})

    async def get_conflicts(request: Request) -> Response:
        rec_ = reconciler_getter()
        if rec_ is None:
            return problem_response("replication-disabled", "cross-region replication is not configured")
        items = [{"tenant": t, "pcs_id": p, **r.as_dict()} for t, p, r in rec_.conflicts()]
        return JSONResponse({"conflicts": items, "metrics": rec_.metrics()})

    return Starlette(routes=[Route("/v1/pcs/{pcs_id}/authoritative", get_auth, methods=["GET"]),
                             Route("/v1/crr/conflicts", get_conflicts, methods=["GET"])])
