"""Checkers over a recorded history (Jepsen/Maelstrom style).

Each checker is a pure function ``(events) -> CheckResult`` named by the
invariant it checks (``INV-...`` from spec/INVARIANTS.md). Safety checkers are
paired with "sometimes" checks proving that the situation they guard really
occurred in the run (a partition that cut no message, a crash with nothing in
flight, a bad-signature workload that sent no bad signature: each fails the
run, so a checker cannot pass because nothing happened).

History vocabulary (fields beyond ``t_us`` and ``type``):

* ``client.send``  req, attempt, agent, tenant, pcs_id, digest, kind, region
* ``client.recv``  req, attempt, status, replay, body_sha, region
* ``client.skip`` agent (an arrival the load generator did not send: ``workload.max_in_flight``
  submissions were open); ``client.give_up`` req, reason; ``client.resubmit`` req, agent, seq (from the outbox after a restart);
  ``client.timeout`` req, attempt, region, [error] (no answer: the timeout, or with ``error`` a
  refused or reset connection)
* ``srv.recv``     region, d (delivery id), req, attempt, tenant
* ``srv.wal_durable`` region, d, idx (WAL index), inc (process incarnation)
* ``srv.wal_recovered`` region, inc (the incarnation that crashed), next_index (records that survived)
* ``srv.dedup_get`` region, d, tenant, pcs_id (only where the batch looks its keys up: a verifier with hooks)
* ``srv.breaker_refused`` region, ds (the deliveries whose store call the open breaker refused)
* ``srv.dedup_put`` region, d, tenant, pcs_id, stored, digest, status, body_sha
* ``srv.respond``  region, d, req, status, replay, body_sha
* ``srv.replay``   region, tenant, pcs_id, stored, status, body_sha (a WAL record replayed on restart
  that reached the dedup store; ``stored`` if the replay itself stored the outcome)
* ``final.entry``  region, tenant, pcs_id, digest, status, body_sha
* ``final.auth``   region, tenant, pcs_id, digest, origin, conflict (the authoritative outcome)
* ``crr.sample``   lag_s (worst region), by_region (lag per region's stream), divergence, conflicts
  (once a simulated second)
* ``crr.rewind_check`` region, checked, changed (entries present at a reader rewind vs the final store)
* ``crr.applied``  region, records; ``crr.reject`` region, segment; ``crr.corrupted`` region, key
* ``crr.parked``   region, parked (the reader's records a partial store answer refused, when it changes)
* ``crr.divergence`` region, peers (peer summaries of the period that reached it), worst severity
* ``fault.start`` / ``fault.end`` kind, target, ...
* ``net.drop``     src, dst, kind, reason
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .metrics import BAD_SIG_KINDS, split_brain_conflicts


@dataclass
class CheckResult:
    id: str
    kind: str  # always | eventually | sometimes
    ok: bool
    checked: int = 0
    violations: list[dict] = field(default_factory=list)
    note: str = ""

    @property
    def exercised(self) -> bool:
        """False when the checker found nothing to check: its PASS would mean nothing."""
        return self.checked > 0

    def as_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "ok": self.ok, "checked": self.checked,
                "exercised": self.exercised,
                "violations": self.violations[:20], "violation_count": len(self.violations),
                "note": self.note}


def _by_type(events: Iterable[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        out[e["type"]].append(e)
    return out


def _client_requests(ev: dict[str, list[dict]]) -> dict[int, dict]:
    reqs: dict[int, dict] = {}
    for e in ev["client.send"]:
        reqs.setdefault(e["req"], e)
    return reqs


def inv_no_acked_loss(events: list[dict], ev: dict | None = None) -> CheckResult:
    """INV-NO-ACKED-LOSS: every 200/202 a client received is in its region's final store, same body."""
    ev = ev or _by_type(events)
    reqs = _client_requests(ev)
    final = {(e["region"], e["tenant"], e["pcs_id"]): e for e in ev["final.entry"]}
    res = CheckResult("INV-NO-ACKED-LOSS", "always", True)
    for e in ev["client.recv"]:
        if e["status"] not in (200, 202):
            continue
        r = reqs[e["req"]]
        res.checked += 1
        entry = final.get((e["region"], r["tenant"], r["pcs_id"]))
        if entry is None:
            res.violations.append({"req": e["req"], "region": e["region"], "pcs_id": r["pcs_id"], "why": "acked but absent"})
        elif entry["body_sha"] != e["body_sha"]:
            res.violations.append({"req": e["req"], "region": e["region"], "pcs_id": r["pcs_id"], "why": "acked body differs from stored"})
    res.ok = not res.violations
    return res


def inv_fww(events: list[dict], ev: dict | None = None) -> CheckResult:
    """INV-FWW: per (region, tenant, pcs_id) at most one outcome is ever stored, and every
    200/202 answer and the final entry carry that outcome."""
    ev = ev or _by_type(events)
    res = CheckResult("INV-FWW", "always", True)
    stored: dict[tuple, str] = {}
    for e in sorted(ev["srv.dedup_put"] + ev["srv.replay"], key=lambda x: x["t_us"]):
        if e["status"] not in (200, 202):
            continue  # a replayed conflicting record answers 409 and stores nothing
        key = (e["region"], e["tenant"], e["pcs_id"])
        res.checked += 1
        if e["stored"]:
            if key in stored and stored[key] != e["body_sha"]:
                res.violations.append({"key": list(key), "why": "second store changed the outcome"})
            stored.setdefault(key, e["body_sha"])
        elif key in stored and e.get("body_sha") and stored[key] != e["body_sha"]:
            res.violations.append({"key": list(key), "why": "winner differs from first stored outcome"})
    for e in ev["srv.respond"]:
        if e["status"] in (200, 202) and e.get("key"):
            key = (e["region"], *e["key"])
            if key in stored and stored[key] != e["body_sha"]:
                res.violations.append({"key": list(key), "why": "answered an outcome other than the stored one"})
    for e in ev["final.entry"]:
        key = (e["region"], e["tenant"], e["pcs_id"])
        if key in stored and stored[key] != e["body_sha"]:
            res.violations.append({"key": list(key), "why": "final outcome differs from first stored"})
    res.ok = not res.violations
    return res


def inv_verify_before_dedup(events: list[dict], ev: dict | None = None) -> CheckResult:
    """INV-VERIFY-BEFORE-DEDUP: no dedup read or write for a delivery whose signature is bad."""
    ev = ev or _by_type(events)
    reqs = _client_requests(ev)
    bad_d = set()
    for e in ev["srv.recv"]:
        r = reqs.get(e["req"])
        if r is not None and r["kind"] in BAD_SIG_KINDS:
            bad_d.add((e["region"], e["d"]))
    res = CheckResult("INV-VERIFY-BEFORE-DEDUP", "always", True, checked=len(bad_d))
    for e in ev["srv.dedup_get"] + ev["srv.dedup_put"]:
        if (e["region"], e["d"]) in bad_d:
            res.violations.append({"region": e["region"], "d": e["d"], "why": f"{e['type']} for a bad signature"})
    res.ok = not res.violations
    return res


def inv_wal_first(events: list[dict], ev: dict | None = None) -> CheckResult:
    """INV-WAL-FIRST: no dedup access or answer (other than 413/429/overload) before the
    delivery's WAL record is durable.

    Two checks: the order of events, and ground truth from crashes -- a delivery whose WAL
    record did not survive its incarnation's crash (index >= the recovered record count) must
    never have reached the dedup store or been answered, because durable records survive.
    """
    ev = ev or _by_type(events)
    durable: dict[tuple, int] = {}
    wal_pos: dict[tuple, tuple[int, int]] = {}
    for e in ev["srv.wal_durable"]:
        durable.setdefault((e["region"], e["d"]), e["t_us"])
        wal_pos[(e["region"], e["d"])] = (e["inc"], e["idx"])
    survived = {(e["region"], e["inc"]): e["next_index"] for e in ev["srv.wal_recovered"]}
    res = CheckResult("INV-WAL-FIRST", "always", True)
    for e in ev["srv.dedup_get"] + ev["srv.dedup_put"] + ev["srv.respond"]:
        if e["type"] == "srv.respond" and (e["status"] in (413, 429) or e.get("before_wal")):
            continue
        res.checked += 1
        key = (e["region"], e["d"])
        t = durable.get(key)
        if t is None or t > e["t_us"]:
            res.violations.append({"region": e["region"], "d": e["d"], "why": f"{e['type']} before the WAL record was durable"})
            continue
        inc, idx = wal_pos[key]
        kept = survived.get((e["region"], inc))
        if kept is not None and idx >= kept:
            res.violations.append({"region": e["region"], "d": e["d"], "why": f"{e['type']} for a WAL record lost in a crash (not durable)"})
    res.ok = not res.violations
    return res


def inv_tenant_isolation(events: list[dict], ev: dict | None = None) -> CheckResult:
    """INV-TENANT-ISOLATION: every dedup access is keyed by the requesting tenant."""
    ev = ev or _by_type(events)
    tenant_of = {(e["region"], e["d"]): e["tenant"] for e in ev["srv.recv"]}
    res = CheckResult("INV-TENANT-ISOLATION", "always", True)
    for e in ev["srv.dedup_get"] + ev["srv.dedup_put"]:
        res.checked += 1
        want = tenant_of.get((e["region"], e["d"]))
        if want is not None and e["tenant"] != want:
            res.violations.append({"region": e["region"], "d": e["d"], "why": f"dedup keyed by {e['tenant']!r} for tenant {want!r}"})
    res.ok = not res.violations
    return res


def inv_idempotent_replay(events: list[dict], ev: dict | None = None) -> CheckResult:
    """INV-IDEMPOTENT-REPLAY: a WAL replay never changes a stored outcome and a second replay
    of the same WAL stores nothing new."""
    ev = ev or _by_type(events)
    res = CheckResult("INV-IDEMPOTENT-REPLAY", "always", True)
    stored_at: dict[tuple, str] = {}
    for e in sorted(ev["srv.dedup_put"] + ev["srv.replay"], key=lambda x: x["t_us"]):
        key = (e["region"], e["tenant"], e["pcs_id"])
        if e["type"] == "srv.replay":
            res.checked += 1
            if e["stored"] and key in stored_at:
                res.violations.append({"key": list(key), "why": "replay stored a key that was already stored"})
            if e["status"] in (200, 202) and key in stored_at and stored_at[key] != e["body_sha"]:
                res.violations.append({"key": list(key), "why": "replay produced a different outcome"})
        if e["stored"] and e["status"] in (200, 202):
            stored_at.setdefault(key, e["body_sha"])
    _served_unreplayed(ev, res)
    for e in ev["crr.rewind_check"]:  # every entry present when shipped segments were re-read is unchanged
        res.checked += e["checked"]
        if e["changed"]:
            res.violations.append({"region": e["region"], "why": f"{e['changed']} entries changed by re-reading "
                                   "shipped segments", "examples": e["examples"]})
    res.ok = not res.violations
    return res


def _served_unreplayed(ev: dict, res: CheckResult) -> None:
    """A start that serves (``srv.recovered``) replayed its whole WAL: none of its replayed
    records was refused (503). flk serve's replay stops at the first refusal and the worker
    exits (SPEC 11.2); a process that served anyway would never write those records' outcomes."""
    refused: dict[str, int] = defaultdict(int)  # region -> refused replays of its current start
    for e in sorted(ev["srv.replay"] + ev["srv.recovered"] + ev["srv.start_failed"] + ev["srv.wal_recovered"],
                    key=lambda x: x["t_us"]):
        kind, rid = e["type"], e["region"]
        if kind == "srv.replay":
            refused[rid] += e["status"] == 503
        elif kind == "srv.recovered" and refused[rid]:
            res.violations.append({"region": rid, "why": f"served after a start-up replay the store refused "
                                   f"{refused[rid]} record(s) of: their outcomes are never written"})
        if kind != "srv.replay":
            refused[rid] = 0


def _sometimes(id_: str, ok: bool, checked: int, note: str) -> CheckResult:
    return CheckResult(id_, "sometimes", ok, checked=checked, note=note)


def sometimes_checks(events: list[dict], scenario: dict, ev: dict | None = None) -> list[CheckResult]:
    """Prove that what the scenario set out to exercise really happened."""
    ev = ev or _by_type(events)
    out = []
    w = scenario["workload"]
    reqs = _client_requests(ev)
    kinds = defaultdict(int)
    for r in reqs.values():
        kinds[r["kind"]] += 1
    statuses = defaultdict(int)
    for e in ev["client.recv"]:
        statuses[e["status"]] += 1
    out.append(_sometimes("SOMETIMES-ACCEPTED", statuses[200] + statuses[202] > 0, len(ev["client.recv"]),
                          "some submission was accepted"))
    if w["bad_sig_rate"] > 0:
        out.append(_sometimes("SOMETIMES-BAD-SIG-REJECTED", statuses[401] > 0, kinds["bad_sig"],
                              "a bad signature was sent and answered 401"))
    if w["dup_rate"] > 0:
        replays = sum(1 for e in ev["client.recv"] if e.get("replay"))
        out.append(_sometimes("SOMETIMES-DUP-REPLAYED", replays > 0, kinds["dup"], "a duplicate got a replay"))
    if w["conflict_rate"] > 0:
        out.append(_sometimes("SOMETIMES-CONFLICT-409", statuses[409] > 0, kinds["conflict"],
                              "a conflicting payload got 409"))
    starts = ev["fault.start"]
    for kind in sorted({f["kind"] for f in starts}):
        out.append(_fault_sometimes(kind, [f for f in starts if f["kind"] == kind], ev, scenario, statuses))
    if w.get("cross_region_conflict_rate", 0) > 0 and any(f["kind"] == "partition" for f in starts):
        conflicts = split_brain_conflicts(events)
        out.append(_sometimes("SOMETIMES-SPLIT-BRAIN-CONFLICT", conflicts > 0, len(starts),
                              f"{conflicts} pcs_ids acked with different payloads in different regions"))
    return out


def _fault_sometimes(kind: str, fs: list[dict], ev: dict, scenario: dict, statuses: dict) -> CheckResult:
    """The "sometimes" check proving a fault of ``kind`` really hit something."""
    if kind == "partition":
        drops = [d for d in ev["net.drop"] if d["reason"] == "partition"]
        replication = sum(1 for d in drops if d["kind"] == "crr.copy")
        summaries = sum(1 for d in drops if d["kind"] == "crr.summary")
        return _sometimes("SOMETIMES-PARTITION-CUT", bool(drops), len(fs), f"{len(drops)} messages cut by "
                          f"partitions ({replication} replication copies, {summaries} divergence summaries, "
                          f"{len(drops) - replication - summaries} other)")
    elif kind == "crash":
        inflight = sum(f.get("inflight", 0) for f in fs)
        dropped = sum(1 for d in ev["net.drop"] if d["reason"] == "node_down")
        return _sometimes("SOMETIMES-CRASH-HIT-TRAFFIC", inflight + dropped > 0, len(fs),
                              f"{inflight} requests in flight at crashes, {dropped} messages to dead nodes")
    elif kind == "ship_stop":
        conflicts = split_brain_conflicts([e for t in ("srv.dedup_put",) for e in ev[t]])
        want_conflicts = scenario["workload"].get("cross_region_conflict_rate", 0) > 0
        return _sometimes("SOMETIMES-SPLIT-BRAIN-CONFLICT", conflicts > 0 or not want_conflicts, len(fs),
                              f"{conflicts} pcs_ids acked with different payloads in different regions")
    elif kind == "objstore_down":
        lag = max((e["lag_s"] for e in ev["crr.sample"]), default=0.0)
        return _sometimes("SOMETIMES-LAG-GREW", lag > 2 * scenario["replication"]["ship_interval_s"], len(fs),
                              f"max replication lag {lag:.1f} s")
    elif kind == "bitflip_shipped":
        corrupted = len(ev["crr.corrupted"])
        rejected = len(ev["crr.reject"])
        return _sometimes("SOMETIMES-CORRUPTION-REJECTED", corrupted > 0 and rejected > 0, len(fs),
                              f"{corrupted} shipped segments corrupted, {rejected} rejections reported")
    elif kind in ("shard_down", "cold_down"):
        n503 = sum(1 for e in ev["srv.respond"] if e["status"] == 503)
        failed = _starts_failed_during(fs, ev)
        return _sometimes(f"SOMETIMES-{kind.upper().replace('_', '-')}-503", n503 > 0 or failed > 0, len(fs),
                          f"{n503} requests met the outage (503, fail closed); {failed} region starts failed "
                          "on it")
    elif kind == "migrate":
        ends = [e for e in ev["fault.end"] if e["kind"] == "migrate"]
        done = any(e["type"] == "migrate.phase" and e["phase"] == "cleaned" for e in ev["migrate.phase"])
        clean = all(e["conflicts"] == 0 and e["missing"] == 0 and e["different"] == 0 for e in ends)
        return _sometimes("SOMETIMES-MIGRATION-COMPLETED", bool(ends) and done and clean, len(fs),
                              f"migration ended: {ends[-1] if ends else 'never'}")
    elif kind == "agent_crash":
        return outbox_resubmitted(fs, ev)
    elif kind == "reader_rewind":
        t0 = min(f["t_us"] for f in fs)
        again = sum(e["records"] for e in ev["crr.applied"] if e["t_us"] >= t0)
        return _sometimes("SOMETIMES-SEGMENTS-REPLAYED-AGAIN", again > 0, len(fs),
                              f"{again} records re-applied after the rewind")
    elif kind == "store_down":
        n503 = statuses[503]
        failed = _starts_failed_during(fs, ev)  # a region restarting meanwhile met it at its start
        met = n503 > 0 or any(e["status"] == 503 for e in ev["srv.respond"]) or failed > 0
        return _sometimes("SOMETIMES-STORE-DOWN-503", met, len(fs),
                          f"a request met the store outage; {failed} region starts failed on it" if failed else
                          "a request met the store outage")
    elif kind == "rotate_key":
        return rotated_key_accepted(fs, ev)
    else:
        return _sometimes(f"SOMETIMES-FAULT-{kind.upper()}", True, len(fs), f"{len(fs)} {kind} faults fired")


def outbox_resubmitted(fs: list[dict], ev: dict) -> CheckResult:
    """Agent crashes hit something: the reopened outboxes resubmitted records (the simulator's
    and the cluster runner's one check)."""
    resub = len(ev["client.resubmit"])
    return _sometimes("SOMETIMES-OUTBOX-RESUBMITTED", resub > 0, len(fs),
                      f"{resub} records resubmitted from outboxes after agent restarts")


def rotated_key_accepted(fs: list[dict], ev: dict) -> CheckResult:
    """A key rotation took: requests first sent after the first rotation (signed with a new key)
    were answered 2xx -- and on a real cluster (``reloaded`` / ``running`` in the fault's events)
    every running server read its tenants file again."""
    first = min(f["t_us"] for f in fs)
    fresh = {e["req"] for e in ev["client.send"] if e["attempt"] == 1 and e["t_us"] > first}
    ok = {e["req"] for e in ev["client.recv"] if e["req"] in fresh and 200 <= e["status"] < 300}
    note = f"{len(ok)} of {len(fresh)} requests first sent after the rotation answered 2xx"
    reloaded, running = sum(f.get("reloaded", 0) for f in fs), sum(f.get("running", 0) for f in fs)
    if any("running" in f for f in fs):
        note = f"{reloaded} of {running} running servers reloaded their tenants file; {note}"
    return _sometimes("SOMETIMES-ROTATED-KEY-ACCEPTED", bool(ok) and reloaded == running, len(fs), note)


def _starts_failed_during(fs: list[dict], ev: dict) -> int:
    """Region starts that failed (``srv.start_failed``: the store refused them) while one of the
    faults ``fs`` was on in that region: the fault met a start instead of a request."""
    count = 0
    for f in fs:
        region = f["target"].split("/")[0]
        end = next((e["t_us"] for e in ev["fault.end"] if e["kind"] == f["kind"] and e["target"] == f["target"]
                    and e["t_us"] >= f["t_us"]), None)
        count += sum(1 for e in ev["srv.start_failed"] if e["region"] == region and f["t_us"] <= e["t_us"]
                     and (end is None or e["t_us"] <= end))
    return count


def inv_at_least_once(events: list[dict], ev: dict | None = None) -> CheckResult:
    """INV-AT-LEAST-ONCE (eventually): every submission that was sent (with outboxes: durably
    appended first) ends with a verifier answer -- acked (200/202), conflict (409) or a
    dead-letter 4xx -- also across agent crashes (the outbox resubmits after restart).

    A violation says what the history shows of the request, not a guess: the client gave up
    (its reason: attempts and last answer), its agent crashed after the last attempt, or the
    run ended while the request waited -- for an answer, or to retry after a 429/5xx or a
    timeout (the quiescence was shorter than the wait)."""
    ev = ev or _by_type(events)
    res = CheckResult("INV-AT-LEAST-ONCE", "eventually", True)
    if not ev["client.resubmit"] and not any(f["kind"] == "agent_crash" for f in ev["fault.start"]):
        res.note = "no agent crash and no outbox resubmission in this run"
    answered = {e["req"] for e in ev["client.recv"] if e["status"] < 500 and e["status"] != 429}
    last_send = {e["req"]: e for e in ev["client.send"]}  # history order: the last attempt wins
    unanswered = [req for req in sorted(last_send) if req not in answered]
    res.checked = len(last_send)
    if unanswered:
        why = _Unanswered(ev, set(unanswered))
        res.violations = [{"req": req, "why": why.of(last_send[req])} for req in unanswered]
    res.ok = not res.violations
    return res


class _Unanswered:
    """What the history shows of unanswered requests after their last attempt (indexed once)."""

    def __init__(self, ev: dict, reqs: set) -> None:
        self.gave_up = {e["req"]: e["reason"] for e in ev["client.give_up"] if e["req"] in reqs}
        self.crashes: dict[str, list[int]] = defaultdict(list)
        for f in ev["fault.start"]:
            if f["kind"] == "agent_crash":
                self.crashes[f["target"]].append(f["t_us"])
        self.after: dict[tuple, dict] = {}  # (req, attempt) -> its latest answer or timeout
        for e in (*ev["client.recv"], *ev["client.timeout"]):
            key = (e["req"], e["attempt"])
            if e["req"] in reqs and (key not in self.after or e["t_us"] >= self.after[key]["t_us"]):
                self.after[key] = e

    def of(self, send: dict) -> str:
        req, t, attempt = send["req"], send["t_us"], send["attempt"]
        if req in self.gave_up:
            return f"the client gave up ({self.gave_up[req]})"
        if any(c >= t for c in self.crashes.get(send["agent"], ())):
            return f"its agent crashed after attempt {attempt} and nothing resubmitted it"
        last = self.after.get((req, attempt))
        if last is None or last["t_us"] < t:
            return f"sent but never answered: attempt {attempt} had no answer when the run ended"
        what = (f"was answered {last['status']}" if last["type"] == "client.recv"
                else f"failed ({last['error']})" if last.get("error") else "timed out")
        return f"sent but never answered: attempt {attempt} {what}, and the run ended before the client retried"


def regression_expectations(events: list[dict], expect: list[dict]) -> CheckResult:
    """REGRESSION-EXPECT: a regression file's pinned event counts (type, field filter, min, max)."""
    res = CheckResult("REGRESSION-EXPECT", "always", True)
    for exp in expect:
        where = exp.get("where", {})
        count = sum(1 for e in events if e["type"] == exp["type"] and all(e.get(k) == v for k, v in where.items()))
        res.checked += 1
        if not exp.get("min", 0) <= count <= exp.get("max", count):
            res.violations.append({"expect": exp, "count": count, "why": "event count outside the pinned range"})
    res.ok = not res.violations
    return res


def _registered() -> list[Callable]:
    return [inv_no_acked_loss, inv_fww, inv_verify_before_dedup, inv_wal_first, inv_tenant_isolation,
            inv_idempotent_replay, inv_convergence, inv_at_least_once]


def check_all(events: list[dict], scenario: dict) -> list[CheckResult]:
    ev = _by_type(events)
    results = [fn(events, ev) for fn in _registered()]
    results.extend(sometimes_checks(events, scenario, ev))
    if scenario.get("policies"):
        from .operator import checks  # the operator's own checks (sim/operator.py)

        results.extend(checks(events, scenario, ev))
    return results


def inv_convergence(events: list[dict], ev: dict | None = None) -> CheckResult:
    """INV-CONVERGENCE (eventually): after heal and quiescence every region holds every key and
    the same authoritative outcome for it."""
    ev = ev or _by_type(events)
    res = CheckResult("INV-CONVERGENCE", "eventually", True)
    regions = sorted({e["region"] for e in ev["final.auth"]})
    if not regions:  # crr.sample: the world samples replication once a simulated second while it runs
        res.note = ("replication is on, but no region stored a key" if ev["crr.sample"]
                    else "no replicated key in this run")
        return res
    keys: dict[tuple, dict[str, str]] = defaultdict(dict)
    for e in ev["final.entry"]:
        keys[(e["tenant"], e["pcs_id"])]  # every stored key must reach every region
    for e in ev["final.auth"]:
        keys[(e["tenant"], e["pcs_id"])][e["region"]] = e["digest"]
    for key, by_region in sorted(keys.items()):
        res.checked += 1
        missing = [r for r in regions if r not in by_region]
        if missing:
            res.violations.append({"key": list(key), "why": f"not replicated to {missing}"})
        elif len(set(by_region.values())) > 1:
            res.violations.append({"key": list(key), "why": "regions disagree on the authoritative outcome"})
    res.ok = not res.violations
    return res
