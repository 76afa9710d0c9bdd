"""Sanity checks and anomaly score: every feature, thresholds, score properties, explicit state."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.core.signals import budget, d_hat, regime
from flk.impl.governance import anomaly

SCALES = [2, 4, 8, 16, 32]
COUNTS = [4, 14, 50, 180, 600]


def good_pcs(**kw):
    dh = d_hat(SCALES, COUNTS)
    coh, r = 0.42, 0.55
    pcs = {"pcs_id": "aa" * 32, "shard_id": "s1", "scales": list(SCALES),
           "N_j": {str(s): c for s, c in zip(SCALES, COUNTS, strict=True)},
           "D_hat": round(dh, 9), "coh_star": coh, "r": r, "budget": round(budget(dh, coh, r), 9),
           "regime": regime(dh, coh)}
    pcs.update(kw)
    return pcs


def test_anomaly_clean_pcs_scores_zero():
    a = anomaly.assess(good_pcs())
    assert a.score == 0.0 and a.level == "ok" and a.reasons == ()
    assert set(a.features) == set(anomaly.FEATURES)


def test_anomaly_each_feature_fires():
    f = anomaly.features
    assert f(good_pcs(N_j={"2": 4, "4": 14, "8": 10, "16": 180, "32": 600}))["nj_monotonicity"] == 0.25
    assert f(good_pcs(scales=[2, 4], N_j={"2": 1, "4": 2**40}))["nj_growth"] == 1.0
    assert f(good_pcs(scales=[2, 4], N_j={"2": 4, "4": 14}))["scale_range"] == 0.5
    assert f(good_pcs(scales=[1, 4, 8], N_j={"1": 1, "4": 4, "8": 8}))["scale_range"] == 1.0
    assert f(good_pcs(scales=[4, 2, 8], N_j={"4": 1, "2": 4, "8": 8}))["scale_range"] == 1.0
    assert f(good_pcs(D_hat=-0.5))["d_hat_range"] == 0.5
    assert f(good_pcs(D_hat=good_pcs()["D_hat"] + 0.225))["d_hat_consistency"] == pytest.approx(0.5, abs=1e-6)
    assert f(good_pcs(coh_star=0.01))["coherence_bounds"] == 1.0  # below 1/20: impossible
    assert f(good_pcs(coh_star=1.06))["coherence_bounds"] == 1.0
    assert f(good_pcs(coh_star=1.04))["coherence_bounds"] == 0.0  # within tol_coh
    assert f(good_pcs(r=1.2))["compressibility_bounds"] == 1.0
    assert f(good_pcs(budget=good_pcs()["budget"] + 0.02))["budget_consistency"] == 1.0
    assert f(good_pcs(regime="sticky"))["regime_consistency"] == 1.0
    assert f(good_pcs(), escalation_rate=0.3)["escalation_rate"] == 0.3
    # malformed inputs score 1 on their feature rather than raising
    assert f(good_pcs(N_j="nope"))["nj_monotonicity"] == 1.0
    assert f(good_pcs(coh_star="x"))["coherence_bounds"] == 1.0


def test_anomaly_thresholds_alert_and_reject():
    a = anomaly.assess(good_pcs(regime="sticky"))  # 0.6: alert, still accepted
    assert a.level == "alert" and a.reasons == () and abs(a.score - 0.6) < 1e-12
    a = anomaly.assess(good_pcs(coh_star=0.01))
    assert a.level == "reject" and a.reasons == (anomaly.REASON_ANOMALY,) and a.score >= 0.8
    assert anomaly.HTTP_STATUS[anomaly.REASON_ANOMALY] == 400
    a = anomaly.assess(good_pcs(), escalation_rate=0.5)  # 0.3: below alert
    assert a.level == "ok"


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(anomaly.FEATURES), st.floats(0, 1), min_size=1),
       st.sampled_from(anomaly.FEATURES), st.floats(0, 1))
def test_anomaly_score_in_unit_interval_and_monotone(feats, which, bump):
    s = anomaly.score(feats)
    assert 0.0 <= s <= 1.0
    higher = dict(feats)
    higher[which] = max(feats.get(which, 0.0), bump)
    assert anomaly.score(higher) >= s - 1e-15
    assert anomaly.score(dict.fromkeys(anomaly.FEATURES, 0.0)) == 0.0


def test_anomaly_escalation_window_is_explicit_and_count_based():
    w = anomaly.EscalationWindow(size=20, min_events=10)
    for i in range(9):
        w.record("t/s1", i % 2 == 0)
    assert w.rate("t/s1") == 0.0  # not enough events yet
    w.record("t/s1", True)
    assert w.rate("t/s1") == 6 / 10
    for _ in range(20):
        w.record("t/s1", False)
    assert w.rate("t/s1") == 0.0 and w.rate("t/other") == 0.0
    w2 = anomaly.EscalationWindow()
    assert w2.events == {}  # no state shared between windows


def test_anomaly_gate_hook_and_sink():
    alerts = []
    gate = anomaly.AnomalyGate(window=anomaly.EscalationWindow(size=10, min_events=10),
                               on_alert=lambda t, s, a: alerts.append((t, s, a.level)))
    assert gate.hook(good_pcs(), "t1") == []
    for i in range(10):
        pid = f"{i:064x}"
        gate.hook(good_pcs(pcs_id=pid), "t1")
        gate.sink({"kind": "escalated", "tenant": "t1", "pcs_id": pid})
    assert gate.window.rate("t1/s1") == 1.0
    # a sound PCS on a shard that escalates everything: escalation_rate 1 -> 0.6 -> alert
    assert gate.hook(good_pcs(pcs_id="bb" * 32), "t1") == []
    assert alerts[-1] == ("t1", "s1", "alert")
    assert gate.hook(good_pcs(coh_star=0.0), "t1") == [anomaly.REASON_ANOMALY]
    gate.sink({"kind": "accepted", "tenant": "t9", "pcs_id": "unknown"})  # unknown: ignored
    assert "t9/s1" not in gate.window.events
