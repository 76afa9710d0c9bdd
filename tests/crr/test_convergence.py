"""INV-CONVERGENCE and INV-FWW across regions: shipping and replay in any order,
with duplicates and re-deliveries, converge to the same authoritative outcomes
everywhere; local stored outcomes never change. Plus the reconciler's modes,
review queue, audit entries and HTTP endpoint."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flk.impl.core.errors import InvalidInput
from flk.impl.dedup import StoredOutcome
from flk.impl.governance.audit import AuditLog, verify_directory
from flk.impl.replication.reconcile import (
    AUTO,
    MANUAL,
    PENDING,
    MemoryAuthoritativeStore,
    Reconciler,
    SqliteAuthoritativeStore,
    audit_log_fn,
    authoritative_app,
    merge_outcomes,
    to_model,
)
from flk.impl.storage.objectstore import MemoryObjectStore
from flk.impl.testing.crashfs import CrashableMemoryFileSystem
from flk.model.merge import merge, merge_all

from .regions import NOW, Region, variants

NAMES = ["ap", "eu", "us"]
POOL = variants(3, 3)

SUBMIT = st.tuples(st.just("submit"), st.integers(0, 2), st.integers(0, len(POOL) - 1))
ops_strategy = st.lists(
    st.one_of(
        SUBMIT, SUBMIT, SUBMIT,
        st.tuples(st.just("ship"), st.integers(0, 2), st.just(0)),
        st.tuples(st.just("read"), st.integers(0, 2), st.just(0)),
        st.tuples(st.just("redeliver"), st.integers(0, 2), st.integers(0, 2)),  # forget a watermark
        st.tuples(st.just("outage"), st.integers(0, 1), st.just(0)),
        st.tuples(st.just("crash"), st.integers(0, 2), st.just(0)),  # power cut: WAL/watermarks reopen
    ),
    min_size=4,
    max_size=40,
)


def quiesce(regs, t):
    for r in regs:
        r.shipper.step(t)
    for r in regs:
        r.reader.step(t)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pre=st.lists(SUBMIT, min_size=2, max_size=6), ops=ops_strategy, order=st.permutations(range(3)))
def test_inv_convergence_and_inv_fww_any_order_duplicates_redeliveries(pre, ops, order):
    ops = pre + ops
    objects = MemoryObjectStore()
    regs = [Region(n, objects, NAMES) for n in NAMES]
    first_seen_local: list[dict] = [{} for _ in regs]
    submitted: list = []

    def check_fww():
        for i, r in enumerate(regs):
            now_local = r.local()
            for k, o in first_seen_local[i].items():
                assert now_local.get(k) == o, "INV-FWW: a stored outcome changed"
            for k, o in now_local.items():
                first_seen_local[i].setdefault(k, o)

    t = NOW
    for op, a, b in ops:
        t += 1
        r = regs[a]
        if op == "submit":
            raw, tenant, _, _ = POOL[b]
            r.submit(raw, tenant, t)
            submitted.append((r.name, raw, tenant, t))
        elif op == "ship":
            r.shipper.step(t)
        elif op == "read":
            r.reader.step(t)
        elif op == "redeliver":
            r.reader.watermarks.pop(NAMES[b], None)
        elif op == "outage":
            objects.available = not objects.available
        elif op == "crash":
            r.crash()
        check_fww()
    objects.available = True
    # heal: everyone ships, then everyone reads, in a random region order, twice
    t += 100
    for _ in range(2):
        quiesce([regs[i] for i in order], t)
        t += 100
    check_fww()
    maps = [r.reconciler.authoritative_map() for r in regs]
    assert maps[0] == maps[1] == maps[2], "INV-CONVERGENCE"
    # the authoritative outcome is exactly the merge of the origin outcomes of
    # every valid request any region received (each computed alone, as its origin would)
    expected: dict = {}
    for region, raw, tenant, ts in submitted:
        fresh = Region(region, MemoryObjectStore(), [])
        if fresh.submit(raw, tenant, ts).status in (200, 202):
            for k, o in fresh.local().items():
                expected[k] = merge_outcomes(expected.get(k), o)
    assert maps[0] == expected
    stored: dict = {}
    for r in regs:
        for k, o in r.local().items():
            stored.setdefault(k, []).append(to_model(o))
    assert set(stored) == set(expected)
    for k, outs in stored.items():  # never later than anything stored anywhere
        assert to_model(expected[k]).order_key() <= merge_all(outs).order_key()
    # the conflict records agree too
    states = [{(t_, p): (rec.digests, rec.state) for t_, p, rec in r.reconciler.conflicts()} for r in regs]
    assert states[0] == states[1] == states[2]
    event("conflict" if states[0] else "no conflict")
    event("with crash" if any(op == "crash" for op, _, _ in ops) else "no crash")


def test_inv_convergence_partition_with_conflicting_writes_then_heal():
    objects = MemoryObjectStore()
    regs = {n: Region(n, objects, NAMES) for n in NAMES}
    (raw0, t0, pid, _), (raw1, _, _, _), (raw2, _, _, _) = POOL[0:3]
    # partition: each region takes a different payload for one key
    assert regs["us"].submit(raw0, t0, NOW + 3).status == 200
    assert regs["eu"].submit(raw1, t0, NOW + 2).status == 202  # escalated variant
    assert regs["ap"].submit(raw2, t0, NOW + 1).status == 200
    before = {n: r.local() for n, r in regs.items()}
    quiesce(regs.values(), NOW + 10)
    quiesce(regs.values(), NOW + 11)
    # local outcomes unchanged (INV-FWW) ...
    assert {n: r.local() for n, r in regs.items()} == before
    # ... and the authoritative one is ap's (earliest first_seen) everywhere
    for r in regs.values():
        rec = r.reconciler.authoritative(t0, pid)
        assert rec.authoritative == before["ap"][(t0, pid)]
        assert rec.conflict and len(rec.digests) == 3
        assert rec.state == PENDING  # 200 vs 202: not safe to auto-resolve
        assert r.reconciler.metrics()["open_conflicts"] == 1


def _o(first_seen, region, digest, status=200, pv="p1"):
    return StoredOutcome(digest * 64 if len(digest) == 1 else digest, status, b"{}", first_seen, region, pv)


outcome_st = st.builds(_o, st.sampled_from([1.0, 2.0, 3.0]), st.sampled_from(["ap", "eu"]),
                       st.sampled_from(["a", "b", "c"]), st.sampled_from([200, 202]), st.sampled_from(["p1", "p2"]))


@settings(max_examples=60, deadline=None)
@given(a=outcome_st, b=outcome_st, c=outcome_st)
def test_inv_convergence_merge_outcomes_is_the_model_merge_and_a_semilattice(a, b, c):
    assert to_model(merge_outcomes(a, b)) == merge(to_model(a), to_model(b))
    assert merge_outcomes(a, b) == merge_outcomes(b, a)
    assert merge_outcomes(merge_outcomes(a, b), c) == merge_outcomes(a, merge_outcomes(b, c))
    assert merge_outcomes(a, a) == a


@settings(max_examples=40, deadline=None)
@given(obs=st.lists(outcome_st, min_size=1, max_size=8), perm=st.randoms(use_true_random=False))
def test_inv_convergence_reconciler_state_is_order_and_duplicate_insensitive(obs, perm):
    r1, r2 = Reconciler("x"), Reconciler("y")
    for o in obs:
        r1.observe("t", "p", o, 0.0)
    shuffled = list(obs) * 2
    perm.shuffle(shuffled)
    for o in shuffled:
        r2.observe("t", "p", o, 0.0)
    a, b = r1.authoritative("t", "p"), r2.authoritative("t", "p")
    assert (a.authoritative, a.seen, a.state) == (b.authoritative, b.seen, b.state)


def test_modes_review_queue_and_every_decision_audited(tmp_path):
    fs = CrashableMemoryFileSystem()
    log = AuditLog("/audit", fs=fs)
    rec = Reconciler("eu", mode="manual", audit=audit_log_fn(log))
    rec.observe("t", "p", _o(2.0, "eu", "a"), 10.0)
    rec.observe("t", "p", _o(1.0, "us", "b"), 11.0)
    assert [x[:2] for x in rec.review_queue()] == [("t", "p")]
    with pytest.raises(InvalidInput):
        rec.decide("t", "other", True, "ops", 12.0)
    with pytest.raises(InvalidInput):
        rec.decide("t", "p", True, "", 12.0)
    d = rec.decide("t", "p", True, "alice", 12.0)
    assert d.state == MANUAL and d.decided_by == "alice" and rec.review_queue() == []
    assert d.authoritative.region == "us"  # a decision never changes the merge result
    # auto-safe: same status -> resolved automatically; a differing status reopens it for review
    auto = Reconciler("eu", mode="auto-safe", audit=audit_log_fn(log))
    auto.observe("t", "q", _o(2.0, "eu", "a"), 13.0)
    auto.observe("t", "q", _o(1.0, "us", "b"), 14.0)
    assert auto.authoritative("t", "q").state == AUTO
    auto.observe("t", "q", _o(3.0, "ap", "c", status=202), 15.0)
    assert auto.authoritative("t", "q").state == PENDING
    log.close(16.0)
    entries = [line for name in sorted(fs.listdir("/audit")) if name.endswith(".log")
               for line in fs.read(f"/audit/{name}").splitlines()]
    kinds = [__import__("json").loads(e)["outcome"] for e in entries]
    assert kinds == ["reconcile_conflict", "reconcile_approved", "reconcile_conflict", "reconcile_auto_resolved",
                     "reconcile_authoritative_changed"]
    assert verify_directory("/audit", fs=fs).ok
    with pytest.raises(InvalidInput):
        Reconciler("eu", mode="yolo")


def test_sqlite_authoritative_store_survives_reopen(tmp_path):
    path = str(tmp_path / "auth.sqlite3")
    s = SqliteAuthoritativeStore(path)
    r = Reconciler("eu", store=s)
    r.observe("t", "p", _o(2.0, "eu", "a"), 1.0)
    r.observe("t", "p", _o(1.0, "us", "b"), 2.0)
    want = r.authoritative("t", "p")
    s.close()
    s2 = SqliteAuthoritativeStore(path)
    assert s2.get("t", "p") == want and s2.count() == 1
    mem = Reconciler("eu", store=MemoryAuthoritativeStore())
    mem.observe("t", "p", _o(2.0, "eu", "a"), 1.0)
    mem.observe("t", "p", _o(1.0, "us", "b"), 2.0)
    assert mem.authoritative("t", "p") == want


def test_authoritative_http_endpoint():
    from starlette.testclient import TestClient

    rec = Reconciler("eu")
    pid = "ab" * 32
    rec.observe("ta", pid, _o(2.0, "eu", "a"), 1.0)
    rec.observe("ta", pid, _o(1.0, "us", "b", status=202), 2.0)
    c = TestClient(authoritative_app(lambda: rec))
    r = c.get(f"/v1/pcs/{pid}/authoritative", headers={"X-Tenant-Id": "ta"})
    assert r.status_code == 200
    j = r.json()
    assert j["region"] == "us" and j["conflict"] is True and j["state"] == PENDING and j["status"] == 202
    assert c.get(f"/v1/pcs/{pid}/authoritative", headers={"X-Tenant-Id": "tb"}).status_code == 404
    bad = c.get("/v1/pcs/XYZ/authoritative")
    assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"
    assert bad.json()["type"] == "urn:flk:problem:invalid-pcs-id"  # the pipeline's problem base
    assert c.get("/v1/crr/conflicts").json()["metrics"]["open_conflicts"] == 1
    assert TestClient(authoritative_app(lambda: None)).get(f"/v1/pcs/{pid}/authoritative").status_code == 503
