"""Trace validation: is a simulator history a behaviour of the protocol model?

Why this module exists: the simulator's checkers (:mod:`flk.sim.checkers`) judge
a run by invariant-specific rules over its events, and the black-box checker
(:mod:`flk.sim.observed`) by what clients saw. Neither asks the question a model
answers: could the protocol of :mod:`flk.model.region` have produced exactly
these steps and these answers? This module maps a history onto the model's
actions (one :class:`flk.model.region.Region` per simulated region) and checks,
step by step, that every step is *enabled* in the model and that every
observable answer is the one the model gives. A bug that no checker rule names
-- a restart whose replay stores what the live path refused, say -- shows up as
a step the model cannot take or an answer it would not give.

Mapping (history event -> model action; what is compared):

* ``srv.wal_durable`` -> ``submit`` + ``sync`` of that delivery (tenant from
  ``srv.recv``, pcs_id / digest / kind from the request's ``client.send``; a
  ``bad_sig`` request carries a key no tenant holds). Enabled only while the
  region is up; its WAL index must be the model's count of the region's own
  records (nothing durable was lost or reordered).
* ``srv.respond`` (not 413/429 before the WAL) -> ``process`` of that record:
  it must be the next durable unprocessed record, and the status and the
  replay flag must be the model's answer.
* ``fault.start`` crash -> ``crash``; ``srv.wal_recovered`` -> ``restart``:
  the recovered record count must equal the model's durable count, and the
  ``srv.replay`` events up to ``srv.recovered`` must be exactly the model's
  re-processing of the region's own records whose signature verifies
  (tenant, pcs_id, status, stored), in WAL order, from the region's WAL
  checkpoint (``replay_from``); the model's re-processing of the records below
  it must store nothing (their outcomes are in the store, as the checkpoint says).
* Replication is not observed record by record (the reader reports counts), so
  a peer record is taken by a region as a *hidden* step, and only when the
  region's next answer needs it: a ``replay`` of a record durable at its origin
  (the model's enabling condition) is inserted when, and only when, the answer
  the model gives without it differs and the answer with it is the one
  observed. At the end the remaining peer records are taken (the model's
  ``quiesce``) and every region's ``final.entry`` set must equal the model's
  dedup map, and every ``final.auth`` outcome the merge of the stored outcomes
  (compared where the earliest write is earlier than the next by more than
  :data:`AUTH_GAP_S`: the batch's receive time is not in the history). A
  region takes its peers' streams in any order, so where none of its own
  records decided a key first, the first verified record of any peer may be
  the one it holds.

Inputs the model leaves open are taken from the history: the signal checks'
verdict (200 or 202) of a payload, and a ``valid`` request answered 401 after a
key rotation (its key left the overlap window) counts as signed with a retired
key. Not mapped (the verdict is then ``unknown``): 503 answers (store or WAL
outages), WAL corruption, clock faults, shard loss and migration.

Violations are named by the invariant the failed comparison stands for
(spec/INVARIANTS.md); after a region's first one its later steps are not
judged. The model sees statuses, replay flags, digests and stored flags, not
response bodies (a replay that re-serialises an answer is the in-sim
checkers' to find). Pure: events in, a :class:`TraceReport` out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from flk.model.merge import Outcome, merge_all
from flk.model.region import Record, Region, Submission

GOOD, FORGED, RETIRED = "k", "forged", "retired"
AUTH_GAP_S = 0.05
UNMAPPED_FAULTS = ("clock_skew", "clock_jump", "shard_down", "cold_down", "migrate", "bitflip_wal",
                   "bitflip_shipped")


@dataclass
class TraceReport:
    """The model's verdict on one history."""

    verdict: str = "behaviour"  # behaviour | not a behaviour | unknown
    steps: int = 0  # model actions the history mapped onto
    hidden: int = 0  # replication steps inserted (peer records taken)
    violations: list[dict] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    auth_compared: int = 0
    auth_ambiguous: int = 0
    replicated: bool = False  # INV-CONVERGENCE is compared only then
    reordered: int = 0  # final outcomes explained by taking peers' streams in another order

    @property
    def ok(self) -> bool:
        return not self.violations

    def by_invariant(self) -> dict[str, dict]:
        """``{INV-ID: {"ok", "violations", "first"}}`` for every invariant a comparison stands for."""
        out: dict[str, dict] = {inv: {"ok": True, "violations": 0, "first": None} for inv in INVARIANTS}
        if not self.replicated:
            out["INV-CONVERGENCE"]["note"] = "not exercised: no replication"
        for v in self.violations:
            row = out[v["invariant"]]
            row["ok"] = False
            row["violations"] += 1
            if row["first"] is None:
                row["first"] = v
        return out

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "steps": self.steps, "hidden_replication_steps": self.hidden,
                "peer_order_explained": self.reordered,
                "unmapped": self.unmapped, "auth_compared": self.auth_compared,
                "auth_ambiguous": self.auth_ambiguous, "invariants": self.by_invariant(),
                "violations": self.violations[:20], "violation_count": len(self.violations)}


INVARIANTS = ("INV-WAL-FIRST", "INV-VERIFY-BEFORE-DEDUP", "INV-FWW", "INV-NO-ACKED-LOSS", "INV-IDEMPOTENT-REPLAY",
              "INV-TENANT-ISOLATION", "INV-CONVERGENCE")


def _status_of(m: Region, rec: Record, before: Outcome | None) -> tuple[int, bool]:
    """The model's answer to ``rec`` processed on ``m`` whose store held ``before``: (status, replay)."""
    sub = rec.sub
    if sub.key_id not in m.keys.get(sub.tenant, frozenset()):
        return 401, False
    stored = before if before is not None else rec.candidate()
    if stored.payload_digest != sub.payload_digest:
        return 409, False
    return stored.status, before is not None


class _Checker:
    def __init__(self, events: list[dict], report: TraceReport) -> None:
        self.events, self.rep = events, report
        self.models: dict[str, Region] = {}
        self.sends: dict[int, dict] = {}
        self.recv: dict[tuple[str, int], tuple[int, str]] = {}
        self.rid: dict[tuple[str, int], int] = {}
        self.verdicts: dict[tuple[str, str, str], int] = {}
        self.rotated = False
        self.clock_moved = False
        self.dead: set[str] = set()  # regions whose model stopped (an unmapped step)
        self.durable_at: dict[int, float] = {}
        self.replaying: dict[str, list[tuple]] = {}
        self.own: dict[str, int] = defaultdict(int)  # per region: its own durable records in the model
        self.taken: dict[str, set[int]] = defaultdict(set)  # per region: the records in its model WAL
        self.by_key: dict[tuple, list[Record]] = defaultdict(list)  # durable records per key, in durable order
        for e in events:
            if e["type"] == "client.send":
                self.sends.setdefault(e["req"], e)
            elif e["type"] in ("srv.dedup_put", "srv.replay") and e["status"] in (200, 202) \
                    and e.get("digest") is not None:
                self.verdicts.setdefault((e["tenant"], e["pcs_id"], e["digest"]), e["status"])

    def model(self, region: str) -> Region:
        m = self.models.get(region)
        if m is None:
            tenants = {e["tenant"] for e in self.sends.values()}
            m = self.models[region] = Region(region, {t: frozenset({GOOD}) for t in tenants})
        return m

    def bad(self, inv: str, e: dict, why: str, **fields) -> None:
        """A step the model cannot take or an answer it would not give. The region's model
        and the run have parted there: its later steps are not judged (they would only
        repeat the first difference under other names)."""
        region = e.get("region", e.get("target"))
        self.rep.violations.append({"invariant": inv, "t_us": e["t_us"], "event": e["type"], "region": region,
                                    "why": why, **fields})
        if region in self.models and e["type"] not in ("final.entry", "final.auth"):
            self.dead.add(region)

    def unmapped(self, what: str, region: str | None = None) -> None:
        if what not in self.rep.unmapped:
            self.rep.unmapped.append(what)
        if region is not None:
            self.dead.add(region)

    # -- local steps ------------------------------------------------------------------
    def durable(self, e: dict) -> None:
        r = e["region"]
        m = self.model(r)
        req, tenant = self.recv[(r, e["d"])]
        send = self.sends[req]
        if not m.up:
            self.bad("INV-WAL-FIRST", e, "a record became durable on a region the model has down")
            return
        own = self.own[r]
        if e["idx"] != own:
            self.bad("INV-WAL-FIRST", e, f"WAL index {e['idx']}, the model's durable count is {own}")
        rid = len(self.rid)
        self.rid[(r, e["d"])] = rid
        key_id = FORGED if send["kind"] == "bad_sig" else GOOD
        verdict = self.verdicts.get((tenant, send["pcs_id"], send["digest"]), 200)
        m.submit(Submission(rid, tenant, send["pcs_id"], send["digest"], key_id, verdict), e["t_us"] / 1e6)
        m.sync()
        self.own[r] = own + 1
        self.taken[r].add(rid)
        self.by_key[(tenant, send["pcs_id"])].append(m.wal[-1])
        self.durable_at[rid] = e["t_us"]
        self.rep.steps += 2

    def respond(self, e: dict) -> None:
        r = e["region"]
        if e.get("before_wal") or e["status"] in (413, 429):
            return
        if e["status"] == 503:
            self.unmapped("503 answers (store or WAL outage)", r)
            return
        m = self.model(r)
        rid = self.rid.get((r, e["d"]))
        nxt = m.wal[m.cursor] if m.cursor < len(m.wal) else None
        if rid is None or nxt is None or nxt.sub.rid != rid:
            self.bad("INV-WAL-FIRST", e, "answered a request that is not the next durable unprocessed record")
            return
        want = self._answer(m, nxt, e)
        self.rep.steps += 1
        if want != (e["status"], bool(e["replay"])):
            self.bad(_classify(want, e["status"]), e, "the model answers otherwise", model=list(want),
                     simulator=[e["status"], bool(e["replay"])], pcs_id=nxt.sub.pcs_id)

    def _answer(self, m: Region, rec: Record, e: dict) -> tuple[int, bool]:
        """Process ``rec`` on ``m``; with hidden replication steps when they explain the answer."""
        got = (e["status"], bool(e["replay"]))
        if got[0] == 401 and rec.sub.key_id == GOOD and self.rotated:
            rec = self._retire(m, rec)  # signed with a key that left its overlap window
        before = m.dedup.get(rec.sub.key)
        want = _status_of(m, rec, before)
        if want != got and before is None:  # a peer's record, taken first, would be what is stored
            for peer in self._peer_records(m.name, rec.sub.key, e["t_us"]):
                if peer.sub.key_id in m.keys.get(peer.sub.tenant, ()) \
                        and _status_of(m, rec, peer.candidate()) == got:
                    m.wal.insert(m.cursor, peer)
                    self.taken[m.name].add(peer.sub.rid)
                    m.process()
                    self.rep.hidden += 1
                    want = got
                    break
        m.process()
        return want

    def _retire(self, m: Region, rec: Record) -> Record:
        sub = rec.sub
        retired = Record(Submission(sub.rid, sub.tenant, sub.pcs_id, sub.payload_digest, RETIRED, sub.verdict),
                         rec.received_at, rec.origin)
        m.wal[m.cursor] = retired
        return retired

    def _peer_records(self, region: str, key, t_us: int) -> list[Record]:
        """Records of ``key`` durable at their origin before ``t_us`` that ``region`` has not taken."""
        have = self.taken[region]
        return [rec for rec in self.by_key.get(key, ()) if rec.origin != region and rec.sub.rid not in have
                and self.durable_at[rec.sub.rid] < t_us]

    # -- crash and restart ------------------------------------------------------------
    def crash(self, e: dict) -> None:
        r = e["target"]
        m = self.model(r)
        if not m.up:
            self.bad("INV-WAL-FIRST", e, "crashed a region the model has down")
        m.crash()
        self.rep.steps += 1

    def recovered(self, e: dict) -> None:
        r = e["region"]
        m = self.model(r)
        own = self.own[r]
        if e["next_index"] != own:
            inv = "INV-NO-ACKED-LOSS" if e["next_index"] < own else "INV-WAL-FIRST"
            self.bad(inv, e, f"recovered {e['next_index']} WAL records, the model holds {own} durable ones")
        m.up = True
        expected = []
        # the replay begins at the region's WAL checkpoint (``replay_from``; flk serve's start): its
        # own records below it are not replayed -- the model re-processes them, which must change
        # nothing (the checkpoint says their outcomes are in the store)
        skip, own_index = int(e.get("replay_from", 0)), 0
        while m.cursor < len(m.wal):
            rec = m.wal[m.cursor]
            before = m.dedup.get(rec.sub.key)
            status, _ = _status_of(m, rec, before)
            m.process()
            if rec.origin != r:
                continue
            own_index += 1
            if own_index <= skip:
                if status != 401 and before is None:
                    self.bad("INV-IDEMPOTENT-REPLAY", e, "the restart's checkpoint skipped a record whose outcome the "
                             "model does not hold", model=[rec.sub.tenant, rec.sub.pcs_id, status])
                continue
            if status != 401:
                expected.append((rec.sub.tenant, rec.sub.pcs_id, status, before is None))
        self.replaying[r] = expected
        self.rep.steps += 1

    def replayed(self, e: dict) -> None:
        r = e["region"]
        queue = self.replaying.get(r, [])
        got = (e["tenant"], e["pcs_id"], e["status"], bool(e["stored"]))
        if not queue:
            self.bad("INV-VERIFY-BEFORE-DEDUP", e, "the restart replay reached the store with a record the model "
                     "does not verify (or has no such record)", simulator=list(got))
            return
        want = queue.pop(0)
        if want != got:
            if (want[0], want[1]) != (got[0], got[1]):
                queue.insert(0, want)
                self.bad("INV-VERIFY-BEFORE-DEDUP", e, "the restart replay reached the store with a record where "
                         "the model's next verified record is another (one the model does not verify, or out of "
                         "WAL order)", model=list(want), simulator=list(got))
                return
            inv = "INV-IDEMPOTENT-REPLAY" if want[3] == got[3] else "INV-FWW"
            self.bad(inv, e, "the restart replay differs from the model's", model=list(want), simulator=list(got))

    def replay_done(self, e: dict) -> None:
        left = self.replaying.pop(e["region"], [])
        if left:
            self.bad("INV-IDEMPOTENT-REPLAY", e, f"the restart replay skipped {len(left)} records the model "
                     "re-processes", model=[list(x) for x in left[:3]])

    # -- the end ----------------------------------------------------------------------
    def quiesce(self) -> None:
        """Every region takes every peer record it has not taken yet (in durable order)."""
        for name in sorted(self.models):
            m = self.models[name]
            if name in self.dead:
                continue
            m.up = True
            have = {rec.sub.rid for rec in m.wal}
            peers = [rec for o, pm in sorted(self.models.items()) if o != name for rec in pm.wal
                     if rec.origin == o and rec.sub.rid not in have]
            for rec in sorted(peers, key=lambda rec: self.durable_at.get(rec.sub.rid, 0)):
                m.wal.append(rec)
            m.drain()

    def final(self, entries: list[dict], auths: list[dict], replicated: bool) -> None:
        for e in entries + auths:
            self.model(e["region"])
        self.quiesce()
        sim: dict[str, dict] = defaultdict(dict)
        for e in entries:
            sim[e["region"]][(e["tenant"], e["pcs_id"])] = (e["digest"], e["status"], e)
        good = {(rec.sub.tenant, rec.sub.pcs_id, rec.sub.payload_digest) for m in self.models.values()
                for rec in m.wal if rec.sub.key_id == GOOD}
        good_any = {(p, d) for _, p, d in good}
        self.rep.replicated = replicated
        for name, m in sorted(self.models.items()):
            if name in self.dead:
                continue
            have = sim.get(name, {})
            for key, (digest, _status, e) in sorted(have.items()):
                o = m.dedup.get(key)
                if o is not None and o.payload_digest != digest and self._peer_order(m, key, digest):
                    self.rep.reordered += 1
                    continue
                if o is None or o.payload_digest != digest:
                    inv = ("INV-FWW" if (key[0], key[1], digest) in good else
                           "INV-TENANT-ISOLATION" if (key[1], digest) in good_any else "INV-VERIFY-BEFORE-DEDUP")
                    self.bad(inv, e, "the final store holds an outcome the model does not", pcs_id=key[1],
                             model=None if o is None else o.payload_digest, simulator=digest)
            for key in sorted(m.dedup):
                if key not in have:
                    e = {"t_us": entries[0]["t_us"] if entries else 0, "type": "final.entry", "region": name}
                    self.bad("INV-CONVERGENCE" if replicated else "INV-NO-ACKED-LOSS", e,
                             "the model's store holds an outcome the final store lacks", pcs_id=key[1])
        if replicated and not self.clock_moved:  # first_seen is a region's wall clock: skewed, the order is not ours
            self._auth(auths)

    def _peer_order(self, m: Region, key, digest: str) -> bool:
        """The model takes its peers' streams in any order: when no record of ``m``'s own
        decided ``key`` first, the first verified record of any peer may be the one stored."""
        verified = [rec for rec in m.wal if rec.sub.key == key and rec.sub.key_id in m.keys.get(key[0], ())]
        if not verified or verified[0].origin == m.name:
            return False
        return any(rec.origin != m.name and rec.sub.payload_digest == digest for rec in verified)

    def _auth(self, auths: list[dict]) -> None:
        stored: dict = defaultdict(list)
        for name, m in self.models.items():
            if name not in self.dead:
                for key, o in m.dedup.items():
                    stored[key].append(o)
        for e in auths:
            outs = sorted(stored.get((e["tenant"], e["pcs_id"]), []), key=Outcome.order_key)
            if not outs:
                continue
            if len(outs) > 1 and outs[1].first_seen - outs[0].first_seen < AUTH_GAP_S \
                    and outs[1].payload_digest != outs[0].payload_digest:
                self.rep.auth_ambiguous += 1
                continue
            self.rep.auth_compared += 1
            want = merge_all(outs)
            if (want.payload_digest, want.region) != (e["digest"], e["origin"]):
                self.bad("INV-CONVERGENCE", e, "the authoritative outcome is not the merge of the stored ones",
                         pcs_id=e["pcs_id"], model=[want.payload_digest, want.region],
                         simulator=[e["digest"], e["origin"]])


def _classify(want: tuple[int, bool], got: int) -> str:
    if want[0] == 401 or got == 401:
        return "INV-VERIFY-BEFORE-DEDUP"
    if want[0] == 409 or got == 409:
        return "INV-FWW"
    return "INV-IDEMPOTENT-REPLAY"


def check_trace(events: Iterable[dict], scenario: dict | None = None) -> TraceReport:
    """Map ``events`` (a kept simulator history) onto the model; see the module docstring."""
    events = list(events)
    rep = TraceReport()
    c = _Checker(events, rep)
    entries, auths = [], []
    for e in events:
        kind = e["type"]
        if kind == "srv.recv":
            c.recv[(e["region"], e["d"])] = (e["req"], e["tenant"])
        elif kind in ("srv.wal_durable", "srv.respond", "srv.wal_recovered", "srv.replay", "srv.recovered") \
                and e["region"] in c.dead:
            continue
        elif kind == "srv.wal_durable":
            c.durable(e)
        elif kind == "srv.respond":
            c.respond(e)
        elif kind == "srv.wal_recovered":
            c.recovered(e)
        elif kind == "srv.replay":
            c.replayed(e)
        elif kind == "srv.recovered":
            c.replay_done(e)
        elif kind == "srv.wal_corrupt":
            c.unmapped("WAL corruption", e["region"])
        elif kind == "fault.start":
            if e["kind"] == "crash":
                if e["target"] not in c.dead:
                    c.crash(e)
            elif e["kind"] == "rotate_key":
                c.rotated = True
            elif e["kind"] in UNMAPPED_FAULTS:
                c.unmapped(f"fault {e['kind']}")
                c.clock_moved = c.clock_moved or e["kind"] in ("clock_skew", "clock_jump")
        elif kind == "final.entry":
            entries.append(e)
        elif kind == "final.auth":
            auths.append(e)
    replicated = bool(auths) or bool(scenario and scenario.get("replication", {}).get("enabled")
                                     and len(scenario.get("regions", [])) > 1)
    c.final(entries, auths, replicated)
    if rep.violations:
        rep.verdict = "not a behaviour"
    elif rep.unmapped:
        rep.verdict = "unknown"
    return rep


def three_verdicts(events: list[dict], scenario: dict, invariants: list[dict]) -> dict:
    """One seed, three judges, by INV-ID: the in-sim checkers (``invariants``: the run's
    ``results["invariants"]``), the black-box history checker (:mod:`flk.sim.observed`) and
    the model (:func:`check_trace`). A judge that does not speak to an invariant is absent
    from its row; ``ok`` is False when any judge finds a violation (``unknown`` from the
    model counts as no finding, and says so)."""
    from .observed import check_run

    model = check_trace(events, scenario)
    black = check_run(events)
    rows: dict[str, dict] = {}
    for c in invariants:
        if c["id"].startswith("INV-"):
            rows.setdefault(c["id"], {})["in_sim"] = ("VIOLATED" if not c["ok"] else
                                                      "ok" if c.get("exercised", True) else "n/a")
    for inv, n in black.by_invariant().items():
        rows.setdefault(inv, {})["black_box"] = "ok" if n == 0 else "VIOLATED"
    for inv, row in model.by_invariant().items():
        rows.setdefault(inv, {})["model"] = ("VIOLATED" if not row["ok"] else "n/a" if row.get("note") else
                                             "unknown" if model.verdict == "unknown" else "ok")
    ok = all(v != "VIOLATED" for row in rows.values() for v in row.values())
    return {"ok": ok, "by_invariant": dict(sorted(rows.items())), "model": model.as_dict(),
            "black_box": {k: v for k, v in black.as_dict().items() if k != "anomalies"}
            | {"anomalies": [a.as_dict() for a in black.anomalies[:10]]}}
