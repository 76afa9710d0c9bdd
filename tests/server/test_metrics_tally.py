"""The metrics tally: counts folded at collection give what direct prometheus calls give."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import Histogram

from flk.impl.verifier.metrics import LATENCY_BUCKETS, Metrics

KINDS = ("ingest", "accepted", "escalated", "dedup_hit", "rejected", "signature_error", "unknown_kind")


def _samples(m: Metrics) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in m.registry.collect() for s in fam.samples if not s.name.endswith("_created")}


@given(st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from(["ta", "tb", None]),
                          st.sampled_from([400, 413, 429]),
                          st.floats(0.0, 3.0) | st.sampled_from(list(LATENCY_BUCKETS))), max_size=200),
       st.integers(0, 200))
@settings(max_examples=60, deadline=None, derandomize=True)
def test_tally_gives_the_same_samples_as_direct_prometheus_calls(events, scrape_at) -> None:
    tallied, direct = Metrics(), Metrics()
    for i, (kind, tenant, status, seconds) in enumerate(events):
        if i == scrape_at:
            _samples(tallied)  # a scrape in the middle folds what is pending; later counts still arrive
        event = {"kind": kind, "tenant_label": tenant, "status": status}
        tallied(event)
        tallied.observe_latency(tenant, seconds)
        attr = {"ingest": "ingest", "accepted": "accepted", "escalated": "escalated", "dedup_hit": "dedup_hits",
                "rejected": "rejected", "signature_error": "signature_errors"}.get(kind)
        if attr == "rejected":
            direct.rejected.labels(tenant=tenant or "_none", status=str(status)).inc()
        elif attr is not None:
            getattr(direct, attr).labels(tenant=tenant or "_none").inc()
        direct.latency.labels(tenant=tenant or "_none").observe(seconds)
    a, b = _samples(tallied), _samples(direct)
    assert a.keys() == b.keys()
    for key, value in b.items():
        assert math.isclose(a[key], value, rel_tol=1e-9, abs_tol=1e-12), key


def test_an_unlabelled_histogram_and_value_reads_see_pending_counts() -> None:
    m = Metrics()
    h = Histogram("flk_test_latency_seconds", "t", buckets=(0.001, 0.01), registry=m.registry)
    for v in (0.0005, 0.001, 0.002, 5.0):
        m.tally.observe(h, v)
    m({"kind": "accepted", "tenant_label": "ta"})
    assert m.value("flk_accepted_total", tenant="ta") == 1.0
    assert m.value("flk_test_latency_seconds_bucket", le="0.001") == 2.0
    assert m.value("flk_test_latency_seconds_bucket", le="0.01") == 3.0
    assert m.value("flk_test_latency_seconds_count") == 4.0
    assert b'flk_test_latency_seconds_bucket{le="+Inf"} 4.0' in m.exposition()


@given(st.lists(st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from(["ta", "tb", "_unknown", None]),
                                   st.sampled_from([400, 413, 429]),
                                   # a batch's answers share a latency: repeats as well as distinct values
                                   st.sampled_from([0.001, 0.5]) | st.floats(0.0, 3.0)), max_size=40),
                max_size=8),
       st.sampled_from([None, 1, 100]))
@settings(max_examples=60, deadline=None, derandomize=True)
def test_batch_counting_gives_the_same_samples_as_one_call_per_event(batches, cap) -> None:
    """The batch driver's per-batch count (count_many / observe_latencies) counts what one
    call per event (the Emit sink, observe_latency) counts, the top-N cap included."""
    one, batched = Metrics(max_tenants=cap), Metrics(max_tenants=cap)
    for batch in batches:
        events = [{"kind": k, "tenant_label": t, "status": s} for k, t, s, _ in batch]
        observed = [(t, sec) for _, t, _, sec in batch]
        for event in events:
            one(event)
        for label, seconds in observed:
            one.observe_latency(label, seconds)
        batched.count_many(events)
        batched.observe_latencies(observed)
    assert _samples(batched) == _samples(one)
