"""The verify pipeline, step by step and status by status (SPEC.md sections 8-9)."""

from __future__ import annotations

import json
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.impl.dedup import StoredOutcome, open_store
from flk.impl.governance.pii import PiiCounters, make_pii_hook
from flk.impl.testing.memwal import MemoryWal
from flk.impl.verifier.metrics import Metrics
from flk.impl.verifier.pipeline import (
    PROBLEM_CT,
    REPLAY_HEADER,
    DedupGet,
    DedupPut,
    Emit,
    Limits,
    Policy,
    Request,
    Verifier,
    WalAppend,
    parse_strict,
    payload_digest,
    run_sync,
    validate_pcs,
)

from .pcsgen import ED_SEED_C, HMAC_A, HMAC_A2, HMAC_B, body, make_pcs, registry, sign

NOW = 1_700_000_000.0


def recorded(gen, log):
    """Forward a pipeline generator, logging every effect it yields."""
    reply, exc = None, None
    while True:
        try:
            eff = gen.throw(exc) if exc is not None else gen.send(reply)
        except StopIteration as stop:
            return stop.value
        log.append(eff)
        try:
            reply, exc = (yield eff), None
        except Exception as e:  # noqa: BLE001 - forwarded into the pipeline
            reply, exc = None, e


class Rig:
    def __init__(self, verifier=None, store=None, **kw):
        self.v = verifier or Verifier(registry(), **kw)
        self.store = store or open_store("memory")
        self.wal = MemoryWal()
        self.metrics = Metrics()
        self.effects: list = []

    def submit(self, doc_or_bytes, tenant="ta", now=NOW):
        raw = doc_or_bytes if isinstance(doc_or_bytes, bytes) else body(doc_or_bytes)
        log: list = []
        resp = run_sync(recorded(self.v.handle(Request(raw, tenant), now), log), self.wal, self.store, self.metrics)
        self.effects = log
        return resp

    def kinds(self):
        return [type(e).__name__ for e in self.effects if not isinstance(e, Emit)]


def good(seed=1, key=HMAC_A, **kw):
    return sign(make_pcs(seed=seed, **kw), key)


# -- 200 / 202 --------------------------------------------------------------------------
def test_200_accepted_body_fields_and_effect_order():
    rig = Rig(region="eu-west")
    doc = good()
    r = rig.submit(doc)
    assert r.status == 200 and r.header("Content-Type") == "application/json"
    assert r.header(REPLAY_HEADER) is None
    b = r.json()
    assert set(b) == {"pcs_id", "accepted", "escalated", "reasons", "recomputed", "policy_version",
                      "region", "first_seen"}
    assert b["pcs_id"] == doc["pcs_id"] and b["accepted"] is True and b["escalated"] is False
    assert b["reasons"] == [] and b["region"] == "eu-west" and b["first_seen"] == NOW
    assert b["recomputed"] == {"D_hat": doc["D_hat"], "budget": doc["budget"], "regime": doc["regime"]}
    assert rig.kinds() == ["WalAppend", "DedupGet", "DedupPut"]
    stored = rig.store.get("ta", doc["pcs_id"], NOW)
    assert stored.body == r.body and stored.status == 200 and stored.payload_digest == payload_digest(doc)
    assert rig.metrics.value("flk_accepted_total", tenant="ta") == 1
    assert rig.metrics.value("flk_ingest_total", tenant="ta") == 1


@pytest.mark.parametrize("change, reason", [
    ({"D_hat": 1.2}, "d_hat_mismatch"),
    ({"coh": 1.2}, "coh_out_of_bounds"),
    ({"r": 1.5}, "r_out_of_bounds"),
    ({"counts": (3, 9, 5, 17, 31)}, "n_j_decreasing"),
    ({"budget": 0.9}, "budget_mismatch"),
    ({"regime": "non_sticky"}, "regime_mismatch"),
])
def test_202_escalated_with_reason_codes(change, reason):
    kw = {k: v for k, v in change.items() if k in ("coh", "r", "counts")}
    over = {k: v for k, v in change.items() if k not in kw}
    doc = sign(make_pcs(seed=5, **kw, **over), HMAC_A)
    rig = Rig()
    r = rig.submit(doc)
    assert r.status == 202, r.body
    b = r.json()
    assert b["escalated"] is True and b["accepted"] is False and reason in b["reasons"]
    assert rig.store.get("ta", doc["pcs_id"], NOW).status == 202  # escalations are stored too
    assert rig.metrics.value("flk_escalated_total", tenant="ta") == 1


def test_tolerances_come_from_the_policy():
    doc = sign(make_pcs(seed=6, D_hat=make_pcs(seed=6)["D_hat"] + 0.1), HMAC_A)
    assert Rig().submit(doc).status == 200  # within tolD = 0.15
    r = Rig(policy=Policy(version="2.0.0", tol_d=0.05)).submit(doc)
    assert r.status == 202 and "d_hat_mismatch" in r.json()["reasons"]
    assert r.json()["policy_version"] == "2.0.0"


# -- 400 --------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, needle", [
    (b'{"a":1,"a":2}', "duplicate key"),
    (b'{"a":NaN}', "NaN"),
    (b'{"a":Infinity}', "Infinity"),
    (b'{"a":-Infinity}', "-Infinity"),
    (b'{"a":1} x', "trailing"),
    (b'\xff\xfe{}', "UTF-8"),
    (b'{"a":', "malformed"),
    (b"", "malformed"),
    (b"[" * 30000 + b"]" * 30000, "unparseable"),
])
def test_400_strict_json(raw, needle):
    rig = Rig()
    r = rig.submit(raw)
    assert r.status == 400 and r.header("Content-Type") == PROBLEM_CT
    p = r.json()
    assert p["type"] == "urn:flk:problem:invalid-json" and needle in p["detail"]
    assert rig.kinds() == ["WalAppend"]  # WAL first, and no dedup effect


def test_400_names_every_bad_field():
    doc = good()
    doc.update({"epoch": True, "scales": [2, 2], "coh_star": "0.7", "v_star": [], "regime": "odd",
                "extra": 1, "meta": {"k": 5}, "seed": -1})
    del doc["sig"]
    r = Rig().submit(doc)
    assert r.status == 400
    fields = {e["field"] for e in r.json()["errors"]}
    assert {"epoch", "scales[1]", "coh_star", "v_star", "regime", "extra", "meta.k", "seed", "sig"} <= fields


def test_huge_number_is_not_finite():
    raw = body(good()).replace(b'"r": 0.87', b'"r": 1e400')
    r = Rig().submit(raw)
    assert r.status == 400 and {e["field"] for e in r.json()["errors"]} == {"r"}


def test_inv_pcsid_mismatch_is_400_before_signature():
    doc = good()
    doc["pcs_id"] = "0" * 64
    rig = Rig()
    r = rig.submit(sign(doc, HMAC_A))
    assert r.status == 400 and r.json()["errors"] == [
        {"field": "pcs_id", "message": "does not equal SHA-256(merkle_root|epoch|shard_id) (INV-PCSID)"}]
    assert rig.kinds() == ["WalAppend"]


BAD_VALUES = {
    "pcs_id": "XYZ", "schema": "other", "version": "2", "shard_id": "a|b", "epoch": -1,
    "scales": [1, 2], "N_j": [], "coh_star": None, "v_star": "x", "D_hat": "1", "r": [], "regime": 1,
    "budget": False, "merkle_root": "ab", "sig": "", "seed": 2**64, "sig_alg": "rsa", "attempt": -1,
    "sent_at": -5, "ft": [], "vrf_proof": 7, "meta": {"a": 1},
}


@settings(max_examples=60, deadline=None)
@given(bad=st.sets(st.sampled_from(sorted(BAD_VALUES)), min_size=1),
       missing=st.sets(st.sampled_from(["pcs_id", "schema", "epoch", "sig", "N_j"])))
def test_validator_names_every_mutated_field(bad, missing):
    doc = good()
    for k in bad:
        doc[k] = BAD_VALUES[k]
    for k in missing:
        doc.pop(k, None)
    fields = {f.split("[")[0].split(".")[0] for f, _ in validate_pcs(doc)}
    assert (bad | missing) <= fields


@settings(max_examples=80, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(max_size=8), lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                    max_leaves=12))
def test_any_json_gets_an_answer_never_a_traceback(value):
    raw = json.dumps(value).encode()
    assert parse_strict(raw) == value or value != value  # round trip through the strict parser
    r = Rig().submit(raw)
    assert r.status == 400 and r.json()["status"] == 400


# -- 401 --------------------------------------------------------------------------------
def test_401_unknown_or_missing_tenant():
    rig = Rig()
    for tenant in ("nobody", None):
        r = rig.submit(good(), tenant=tenant)
        assert r.status == 401 and r.json()["type"] == "urn:flk:problem:unknown-tenant"
        assert rig.kinds() == ["WalAppend"]
    assert rig.metrics.value("flk_signature_errors_total", tenant="_unknown") == 2


def test_single_tenant_mode_uses_default_tenant():
    from flk.impl.verifier.tenants import from_env

    rig = Rig(verifier=Verifier(from_env({"PCS_SIGN_ALG": "hmac", "PCS_HMAC_KEY": HMAC_A.decode()})))
    assert rig.submit(good(), tenant=None).status == 200
    assert rig.store.count(NOW) == 1 and rig.store.get("default", good()["pcs_id"], NOW) is not None


def test_inv_tenant_isolation_key_of_other_tenant_never_verifies():
    rig = Rig()
    r = rig.submit(good(key=HMAC_A), tenant="tb")
    assert r.status == 401 and r.json()["type"] == "urn:flk:problem:bad-signature"
    assert rig.kinds() == ["WalAppend"] and rig.store.count(NOW) == 0


def test_inv_tenant_isolation_same_pcs_id_two_tenants():
    rig = Rig()
    a = good(seed=9, key=HMAC_A)
    b = sign(make_pcs(seed=9, coh=0.74), HMAC_B)  # same pcs_id, different payload, other tenant
    assert a["pcs_id"] == b["pcs_id"]
    ra, rb = rig.submit(a, "ta"), rig.submit(b, "tb")
    assert ra.status == 200 and rb.status == 200 and rb.header(REPLAY_HEADER) is None
    assert rig.store.get("ta", a["pcs_id"], NOW).payload_digest == payload_digest(a)
    assert rig.store.get("tb", b["pcs_id"], NOW).payload_digest == payload_digest(b)


def test_ed25519_tenant_and_legacy_profile_allowance():
    rig = Rig()
    ed = sign(make_pcs(seed=3), ED_SEED_C, alg="ed25519")
    assert rig.submit(ed, "tc").status == 200
    assert rig.submit(sign(make_pcs(seed=4), HMAC_A), "tc").status == 401  # hmac sig for an ed25519 tenant
    legacy = sign(make_pcs(seed=4, version="0.1"), HMAC_A)
    assert rig.submit(legacy, "ta").status == 200  # ta allows legacy-0.1
    legacy_b = sign(make_pcs(seed=4, version="0.1"), HMAC_B)
    r = rig.submit(legacy_b, "tb")
    assert r.status == 401 and r.json()["type"] == "urn:flk:problem:profile-not-allowed"
    mism = dict(good(seed=8), sig_alg="ed25519")  # a 32-byte sig cannot be an Ed25519 one
    r = rig.submit(mism, "ta")
    assert r.status == 400 and [e["field"] for e in r.json()["errors"]] == ["sig"]
    ed_for_hmac_tenant = dict(sign(make_pcs(seed=8), ED_SEED_C, alg="ed25519"), sig_alg="ed25519")
    r = rig.submit(ed_for_hmac_tenant, "ta")
    assert r.status == 401 and r.json()["detail"].startswith("sig_alg")
    legacy_ed = dict(sign(make_pcs(seed=4), ED_SEED_C, alg="ed25519"), version="0.1")  # 88-char sig
    r = rig.submit(dict(legacy_ed, sig_alg="ed25519"), "tc")
    assert r.status == 400 and [e["field"] for e in r.json()["errors"]] == ["sig_alg"]
    assert rig.submit(legacy_ed, "tc").json()["type"] == "urn:flk:problem:profile-not-allowed"


def test_key_rotation_windows():
    reg = registry(ta={"keys": [{"id": "old", "secret": HMAC_A.decode(), "not_after": NOW + 100},
                                {"id": "new", "secret": HMAC_A2.decode(), "not_before": NOW}]})
    rig = Rig(verifier=Verifier(reg))
    assert rig.submit(good(seed=1, key=HMAC_A), now=NOW + 50).status == 200  # overlap: old
    assert rig.submit(good(seed=2, key=HMAC_A2), now=NOW + 50).status == 200  # overlap: new
    assert rig.submit(good(seed=3, key=HMAC_A), now=NOW + 100).status == 401  # old expired
    assert rig.submit(good(seed=4, key=HMAC_A2), now=NOW + 100).status == 200
    assert rig.submit(good(seed=5, key=HMAC_A2), now=NOW - 1).status == 401  # new not yet valid


def test_inv_verify_before_dedup_bad_signature_before_and_after_a_good_one():
    rig = Rig()
    doc = good(seed=11)
    forged = dict(doc, sig=good(seed=11, key=HMAC_B)["sig"])
    forged_other = dict(sign(make_pcs(seed=11, coh=0.74), HMAC_A), sig=doc["sig"])  # other payload, stolen sig
    r = rig.submit(forged)
    assert r.status == 401 and rig.kinds() == ["WalAppend"] and rig.store.count(NOW) == 0
    r = rig.submit(doc)
    assert r.status == 200
    stored = rig.store.get("ta", doc["pcs_id"], NOW)
    for bad in (forged, forged_other):
        r = rig.submit(bad, now=NOW + 5)
        assert r.status == 401 and r.header(REPLAY_HEADER) is None  # cannot probe the store
        assert rig.kinds() == ["WalAppend"]
    assert rig.store.get("ta", doc["pcs_id"], NOW + 10) == stored  # cannot poison it either
    assert rig.metrics.value("flk_signature_errors_total", tenant="ta") == 3


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sig=st.text(max_size=90) | st.binary(min_size=32, max_size=32).map(lambda b: __import__("base64").b64encode(b).decode()))
def test_inv_verify_before_dedup_no_dedup_effect_without_a_valid_signature(sig):
    doc = dict(good(seed=12), sig=sig)
    rig = Rig()
    r = rig.submit(doc)
    assert r.status in (400, 401)
    assert not any(isinstance(e, (DedupGet, DedupPut)) for e in rig.effects)


# -- dedup: replay and 409 ----------------------------------------------------------------
def test_duplicate_replays_verbatim_with_header_even_if_unsigned_fields_change():
    rig = Rig()
    doc = good(seed=13)
    first = rig.submit(doc)
    again = rig.submit(dict(doc, attempt=2, sent_at="later", ft={"degraded": True}), now=NOW + 60)
    assert again.status == first.status and again.body == first.body
    assert again.header(REPLAY_HEADER) == "true"
    assert rig.kinds() == ["WalAppend", "DedupGet"]  # no second write
    assert rig.metrics.value("flk_dedup_hits_total", tenant="ta") == 1


def test_inv_fww_409_conflict_leaves_stored_outcome_untouched_and_is_counted():
    rig = Rig()
    doc = good(seed=14)
    rig.submit(doc)
    stored = rig.store.get("ta", doc["pcs_id"], NOW)
    other = sign(make_pcs(seed=14, coh=0.74), HMAC_A)
    r = rig.submit(other, now=NOW + 1)
    assert r.status == 409 and r.header("Content-Type") == PROBLEM_CT
    p = r.json()
    assert p["type"] == "urn:flk:problem:conflict" and p["pcs_id"] == doc["pcs_id"] and p["first_seen"] == NOW
    assert rig.kinds() == ["WalAppend", "DedupGet"]
    assert rig.store.get("ta", doc["pcs_id"], NOW + 2) == stored
    assert rig.metrics.value("flk_dedup_conflicts_total", tenant="ta") == 1


def _answering(gen, get_reply, put_reply):
    """Drive a pipeline answering dedup effects with the given replies."""
    reply = None
    while True:
        try:
            eff = gen.send(reply)
        except StopIteration as stop:
            return stop.value
        reply = {DedupGet: get_reply, DedupPut: put_reply}.get(type(eff), 0 if isinstance(eff, WalAppend) else None)


def test_inv_fww_lost_race_returns_winner_or_409():
    v = Verifier(registry())
    doc = good(seed=15)
    winner_same = StoredOutcome(payload_digest(doc), 202, b'{"winner":1}', NOW - 1, "x", "0.9")
    r = _answering(v.handle(Request(body(doc), "ta"), NOW), None, (False, winner_same))
    assert r.status == 202 and r.body == b'{"winner":1}' and r.header(REPLAY_HEADER) == "true"
    winner_other = StoredOutcome("f" * 64, 200, b"{}", NOW - 1, "x", "0.9")
    r = _answering(v.handle(Request(body(doc), "ta"), NOW), None, (False, winner_other))
    assert r.status == 409


# -- 413 / 429 (before the WAL) -----------------------------------------------------------
def test_413_before_the_wal():
    rig = Rig(limits=Limits(max_body_bytes=100))
    r = rig.submit(good())
    assert r.status == 413 and r.json()["type"] == "urn:flk:problem:payload-too-large"
    assert rig.effects == [e for e in rig.effects if isinstance(e, Emit)] and rig.wal.records == []


def test_429_rate_limit_and_quota_before_the_wal():
    rig = Rig(verifier=Verifier(registry(ta={"rate_per_s": 1.0, "burst": 2}, tb={"daily_quota": 1})))
    assert [rig.submit(good(seed=i)).status for i in range(3)] == [200, 200, 429]
    r = rig.submit(good(seed=9))
    assert r.status == 429 and r.header("Retry-After") == "1"
    assert r.json()["type"] == "urn:flk:problem:rate-limited"
    assert len(rig.wal.records) == 2
    assert rig.submit(good(seed=20), now=NOW + 1.0).status == 200  # refilled
    assert rig.submit(good(seed=21, key=HMAC_B), "tb").status == 200
    r = rig.submit(good(seed=22, key=HMAC_B), "tb")
    assert r.status == 429 and r.json()["type"] == "urn:flk:problem:quota-exceeded"
    assert int(r.header("Retry-After")) == 86400 - int(NOW % 86400)
    assert rig.metrics.value("flk_rejected_total", tenant="tb", status="429") == 1


# -- 503 ----------------------------------------------------------------------------------
def _dead_redis():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return open_store(f"redis://127.0.0.1:{port}/0", timeout_s=0.3)


def test_503_store_unreachable_after_the_wal_then_replay_recovers():
    from flk.impl.verifier.core import replay_records

    rig = Rig(store=_dead_redis())
    doc = good(seed=23)
    r = rig.submit(doc)
    assert r.status == 503 and r.header("Retry-After") == "1"
    assert r.json()["type"] == "urn:flk:problem:store-unavailable"
    assert rig.kinds() == ["WalAppend", "DedupGet"] and len(rig.wal.records) == 1  # in the WAL
    healthy = open_store("memory")
    [again] = replay_records(rig.v, rig.wal.records, healthy)
    assert again.status == 200 and healthy.get("ta", doc["pcs_id"], NOW).first_seen == NOW


def test_503_wal_failure_answers_nothing_else():
    rig = Rig()
    rig.wal.fail = True
    r = rig.submit(good())
    assert r.status == 503 and r.json()["type"] == "urn:flk:problem:wal-unavailable"
    assert r.header("Retry-After") == "1"
    assert rig.kinds() == ["WalAppend"] and rig.store.count(NOW) == 0
    assert rig.metrics.value("flk_wal_errors_total", tenant="ta") == 1


# -- INV-WAL-FIRST over arbitrary requests --------------------------------------------------
POOL = [good(seed=30), good(seed=31, key=HMAC_B), sign(make_pcs(seed=30, coh=0.74), HMAC_A),
        dict(good(seed=32), sig="AAAA"), {"x": 1}]


@settings(max_examples=40, deadline=None)
@given(reqs=st.lists(st.tuples(st.integers(0, len(POOL) - 1), st.sampled_from(["ta", "tb", None, "zz"])),
                     min_size=1, max_size=8))
def test_inv_wal_first_every_answer_after_a_durable_append(reqs):
    rig = Rig()
    for i, tenant in reqs:
        r = rig.submit(POOL[i], tenant)
        io = [e for e in rig.effects if not isinstance(e, Emit)]
        assert isinstance(io[0], WalAppend)  # nothing before the WAL ...
        assert r.status in (200, 202, 400, 401, 409)
        if r.status in (400, 401):
            assert len(io) == 1  # ... and no dedup effect without a verified signature


# -- hooks ----------------------------------------------------------------------------------
def test_hooks_escalate_or_reject():
    calls = []

    def anomaly(pcs, tenant):
        calls.append(tenant)
        return ["anomaly_alert"]

    rig = Rig(hooks=[anomaly])
    r = rig.submit(good(seed=40))
    assert r.status == 202 and r.json()["reasons"] == ["anomaly_alert"] and calls == ["ta"]
    counters = PiiCounters()
    rig = Rig(hooks=[make_pii_hook({"ta": "block"}, counters)])
    doc = sign(make_pcs(seed=41, meta={"owner": "alice@example.com"}), HMAC_A)
    r = rig.submit(doc)
    assert r.status == 400 and r.json()["reasons"] == ["pii_detected"]
    assert rig.store.count(NOW) == 0
    assert b"alice" not in r.body


@pytest.mark.parametrize("header,status", [("x" * 257, 431), ("bad\udc80", 400)])
def test_unrecordable_tenant_header_is_refused_before_the_wal(header, status):
    rig = Rig()
    r = rig.submit(good(), tenant=header)
    assert r.status == status and rig.wal.records == []
    assert rig.submit(good(), tenant="x" * 256).status == 401  # recordable, unknown: WAL first, then 401
    assert len(rig.wal.records) == 1
