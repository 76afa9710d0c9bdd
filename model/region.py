"""One region of the protocol as an abstract state machine: inbox WAL, verifier, dedup.

Read this as the specification of what a region does; ``flk.impl.verifier.pipeline``,
``flk.impl.storage.wal`` and ``flk.impl.dedup`` refine it and ``flk.formal.verifier``
proves its safety invariants by k-induction over the same transitions.

Theory of operation
-------------------
* State is split by what survives a crash. **Durable**: the synced inbox WAL
  (``wal``), the key configuration, and -- if the dedup store is durable, as
  SQLite/Redis/Postgres are -- the dedup map, the authoritative map and the
  peer watermarks. **Volatile**: the unsynced WAL tail (``buffer``), the
  processing cursor, the set of clients still waiting for an answer, and the
  dedup/authoritative maps of a memory store. :meth:`Region.crash` keeps
  exactly the durable part.
* Every record is processed in WAL order, so the dedup state is a function of
  the processed WAL prefix (INV-IDEMPOTENT-REPLAY). Records received from a
  peer region are appended to the local WAL before they are processed, so a
  restart re-processes local and peer records in the original order.
* The pipeline for one record: verify the signature (key of the record's
  tenant), only then read and write dedup; a new key stores the record's
  outcome with ``put_if_absent``; an equal payload replays the stored outcome;
  a different payload is a conflict answered 409 and the stored outcome stays.
* ``history`` and ``first_stored`` are ghost state: they record what happened
  so invariants can be stated; the protocol never reads them.

Transitions name the invariants they preserve; the predicates are in
:mod:`flk.model.invariants`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .merge import Outcome, merge

Key = tuple[str, str]  # (tenant, pcs_id)


@dataclass(frozen=True)
class Submission:
    """A signed PCS as the model sees it: the fields that decide its fate."""

    rid: int  # request id (history only; never decides anything)
    tenant: str
    pcs_id: str
    payload_digest: str
    key_id: str  # the key that signed it; verifies iff it is one of the tenant's keys
    verdict: int = 200  # 200 accepted / 202 escalated, as the signal checks decide

    @property
    def key(self) -> Key:
        return (self.tenant, self.pcs_id)


@dataclass(frozen=True)
class Record:
    """An inbox WAL record: the submission, when and where it was received."""

    sub: Submission
    received_at: float
    origin: str

    def candidate(self) -> Outcome:
        """The outcome this record stores in a region where its key is new."""
        return Outcome(self.received_at, self.origin, self.sub.payload_digest, self.sub.verdict)


# History events (ghost). ``kind`` is one of: append, sync, verify, dedup_get,
# dedup_put, answer, crash, restart.
@dataclass(frozen=True)
class Event:
    kind: str
    rid: int = -1
    key: Key | None = None
    ok: bool = True
    status: int = 0
    digest: str = ""


@dataclass
class Region:
    name: str
    keys: dict[str, frozenset[str]]  # tenant -> key ids that verify (durable config)
    dedup_durable: bool = True
    # durable
    wal: list[Record] = field(default_factory=list)
    dedup: dict[Key, Outcome] = field(default_factory=dict)
    authoritative: dict[Key, Outcome] = field(default_factory=dict)
    watermarks: dict[str, int] = field(default_factory=dict)  # peer -> records taken
    # volatile
    buffer: list[Record] = field(default_factory=list)
    cursor: int = 0
    waiting: set[int] = field(default_factory=set)
    up: bool = True
    # ghost
    history: list[Event] = field(default_factory=list)
    first_stored: dict[Key, Outcome] = field(default_factory=dict)
    acked: dict[int, tuple[Key, Outcome]] = field(default_factory=dict)
    answers: dict[int, int] = field(default_factory=dict)
    conflicts: set[Key] = field(default_factory=set)

    # -- client-facing transitions ------------------------------------------
    def submit(self, sub: Submission, now: float) -> None:
        """Receive a request: append it to the WAL buffer; nothing else yet.

        Preserves INV-WAL-FIRST (no parse/verify/dedup/answer before durable).
        """
        if not self.up:
            return
        self.buffer.append(Record(sub, now, self.name))
        self.waiting.add(sub.rid)
        self.history.append(Event("append", sub.rid, sub.key))

    def sync(self) -> None:
        """fsync the WAL: the buffer becomes durable. Preserves INV-WAL-FIRST, INV-NO-ACKED-LOSS."""
        if not self.up or not self.buffer:
            return
        self.wal.extend(self.buffer)
        self.buffer.clear()
        self.history.append(Event("sync", len(self.wal)))

    def process(self) -> bool:
        """Run the pipeline on the next durable, unprocessed record.

        Preserves INV-WAL-FIRST, INV-VERIFY-BEFORE-DEDUP, INV-FWW,
        INV-NO-ACKED-LOSS, INV-TENANT-ISOLATION, INV-IDEMPOTENT-REPLAY.
        """
        if not self.up or self.cursor >= len(self.wal):
            return False
        rec = self.wal[self.cursor]
        self.cursor += 1
        status, outcome = self._pipeline(rec)
        rid = rec.sub.rid
        if rec.origin == self.name and rid in self.waiting:
            self.waiting.discard(rid)
            self.answers[rid] = status
            if status in (200, 202):
                self.acked[rid] = (rec.sub.key, outcome)
            self.history.append(Event("answer", rid, rec.sub.key, status=status))
        return True

    def _pipeline(self, rec: Record) -> tuple[int, Outcome | None]:
        sub = rec.sub
        ok = sub.key_id in self.keys.get(sub.tenant, frozenset())
        self.history.append(Event("verify", sub.rid, sub.key, ok=ok, digest=sub.payload_digest))
        if not ok:
            return 401, None  # INV-VERIFY-BEFORE-DEDUP: no dedup access follows
        self.history.append(Event("dedup_get", sub.rid, sub.key))
        stored = self.dedup.get(sub.key)
        if stored is None:
            cand = rec.candidate()
            # put_if_absent: atomic; the store is single-writer in the model
            self.dedup[sub.key] = cand
            self.first_stored.setdefault(sub.key, cand)
            self.history.append(Event("dedup_put", sub.rid, sub.key, digest=cand.payload_digest))
            stored = cand
        # the authoritative outcome is recorded beside the local one (INV-CONVERGENCE)
        self.authoritative[sub.key] = merge(self.authoritative.get(sub.key), rec.candidate())
        if stored.payload_digest == sub.payload_digest:
            return stored.status, stored  # new, or a duplicate: replay the stored outcome
        self.conflicts.add(sub.key)
        return 409, None  # INV-FWW: conflicting payload never overwrites

    # -- faults -------------------------------------------------------------
    def crash(self) -> None:
        """Lose everything volatile. Preserves every safety invariant (durable state kept)."""
        if not self.up:
            return
        self.up = False
        self.buffer.clear()
        self.cursor = 0
        self.waiting.clear()
        if not self.dedup_durable:
            self.dedup.clear()
            self.authoritative.clear()
            self.watermarks.clear()
        self.history.append(Event("crash"))

    def restart(self) -> None:
        """Come back up and re-process the whole durable WAL in order (recovery).

        Preserves INV-FWW and INV-NO-ACKED-LOSS via INV-IDEMPOTENT-REPLAY:
        re-processing a processed prefix changes nothing; with a volatile store
        it rebuilds exactly the state lost.
        """
        if self.up:
            return
        self.up = True
        self.history.append(Event("restart"))
        while self.process():
            pass

    def rotate_key(self, tenant: str, new_key: str) -> None:
        """Add a tenant key; old keys stay valid (grace), so replay outcomes do not change."""
        self.keys[tenant] = self.keys.get(tenant, frozenset()) | {new_key}

    # -- replication ----------------------------------------------------------
    def shippable(self) -> tuple[Record, ...]:
        """The sealed, durable records this region originated (what the shipper uploads)."""
        return tuple(r for r in self.wal if r.origin == self.name)

    def take_from_peer(self, peer: str, records: tuple[Record, ...]) -> int:
        """Append a peer's records after our watermark to the WAL (durably), advance it.

        Preserves INV-IDEMPOTENT-REPLAY: a re-delivered segment is skipped by the
        watermark, and a re-appended record (watermark lost) is a duplicate.
        Records are then processed by :meth:`process` like any other.
        """
        if not self.up:
            return 0
        start = self.watermarks.get(peer, 0)
        new = [r for r in records[start:] if r.origin == peer]
        self.wal.extend(new)
        self.watermarks[peer] = max(start, len(records))
        return len(new)

    def drain(self) -> None:
        while self.process():
            pass


def replay_state(records: list[Record], keys: dict[str, frozenset[str]]) -> tuple[dict, dict]:
    """(dedup, authoritative) after processing ``records`` in order on a fresh region."""
    r = Region("replay", dict(keys))
    r.wal = list(records)
    r.drain()
    return r.dedup, r.authoritative
