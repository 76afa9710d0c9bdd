"""Catalog studies whose [alerts] declarations a real cluster checks (full tier: about a minute
each): a real Prometheus evaluating deploy/prometheus/rules over real flk serve regions fires
what the simulator's study declares, within its budgets, and nothing it declares silent; the
run is valid (every invariant and SLO)."""

from __future__ import annotations

import pytest

from .conftest import cluster_run, in_full_tier

STUDIES = {  # scenario -> extra flags; each ran real on 2026-11-27 as the comment says
    "bitflip-shipped-segment": [],  # FlkCrrStreamRejected on eu, us, ap 1 s after the flip (sim: 1 s)
    "tamper-heavy": [],  # FlkSignatureFailureSpike at 7.2 s (sim 8.0), FlkEscalationRateHigh at 32.2 s (sim 32.0)
    "client-partition": [],  # all silent, 1,197 packets dropped
    "crr-reader-stalled": ["--backend", "redis"],  # six alerts, e.g. FlkCrrReaderStalled at 15.3 s (sim 15.0)
    "quota-exhaustion": [],  # tenant buckets from the runner's tenants file: 429 rate 0.265 (sim 0.271), all silent
}


@in_full_tier
@pytest.mark.parametrize("name", sorted(STUDIES))
def test_a_real_cluster_fires_what_the_study_declares(name, prometheus_ready, prefix, tmp_path, request):
    if "redis" in STUDIES[name]:
        request.getfixturevalue("redis_and_prometheus")  # skips (fails under CI) without redis-server
    res, events = cluster_run(tmp_path, prefix, name, *STUDIES[name])
    alerts = [c for c in res["invariants"] if c["id"].startswith("ALERT-")]
    assert alerts and all(c["ok"] for c in alerts), [c for c in alerts if not c["ok"]]
    assert res["valid"], [c for c in res["invariants"] if not c["ok"]] + [s for s in res["slos"] if not s["ok"]]
    assert any(e["type"] == "client.recv" for e in events)
