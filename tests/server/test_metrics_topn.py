"""/metrics per-tenant series: the top ``max_tenants`` tenants by activity, the rest
under ``_other``. Whatever the traffic and however scrapes interleave with it
(Hypothesis): at most ``max_tenants`` tenants have series, every series only grows
(a counter that went down would read as a reset), and the sum over a metric's
series is every event counted -- a tenant leaving the top hands its counts to
``_other``. A newcomer busier than an incumbent takes its slot at the next scrape."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.verifier.metrics import OTHER_TENANTS, Metrics

TENANTS = [f"t{i}" for i in range(8)]


def samples(m: Metrics) -> dict[tuple, float]:
    out = {}
    for family in m.registry.collect():
        for s in family.samples:
            if s.name.endswith(("_total", "_count", "_sum")) or s.name.endswith("_bucket"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


EVENTS = st.lists(st.one_of(
    st.tuples(st.just("event"), st.sampled_from(TENANTS + ["_unknown"]), st.sampled_from(["accepted", "rejected"])),
    st.tuples(st.just("latency"), st.sampled_from(TENANTS), st.floats(0.0, 0.5)),
    st.just(("scrape",))), max_size=120)


@settings(max_examples=60, deadline=None)
@given(events=EVENTS, cap=st.integers(1, 4))
def test_series_are_bounded_monotone_and_add_up_whatever_the_traffic(events, cap) -> None:
    m = Metrics(max_tenants=cap)
    sent = {"flk_accepted_total": 0, "flk_rejected_total": 0, "flk_verify_latency_seconds_count": 0}
    last: dict[tuple, float] = {}

    def scrape() -> None:
        now = samples(m)
        for key, value in last.items():
            if key in now:
                assert now[key] >= value - 1e-9, key  # a series never goes down
        last.clear()
        last.update(now)
        for name, want in sent.items():
            assert sum(v for (n, _), v in now.items() if n == name) == want, name  # nothing lost
        tenants = {dict(lab)["tenant"] for (_, lab) in now} - {OTHER_TENANTS, "_unknown", "_none"}
        assert len(tenants) <= cap

    for ev in events:
        if ev[0] == "scrape":
            scrape()
        elif ev[0] == "event":
            m({"kind": ev[2], "tenant_label": ev[1], "status": 400})
            sent[f"flk_{ev[2]}_total"] += 1
        else:
            m.observe_latency(ev[1], ev[2])
            sent["flk_verify_latency_seconds_count"] += 1
    scrape()


def test_a_busy_newcomer_takes_the_slot_of_a_quiet_incumbent_and_its_counts_stay_counted() -> None:
    m = Metrics(max_tenants=2)
    for t in ("a", "b"):
        m({"kind": "accepted", "tenant_label": t})
    m.exposition()
    for _ in range(50):
        m({"kind": "accepted", "tenant_label": "hot"})  # beyond the cap: under _other until ranked
    m({"kind": "accepted", "tenant_label": "a"})
    text = m.exposition().decode()  # the scrape ranks: hot takes b's slot
    assert 'tenant="b"' not in text and 'tenant="a"' in text
    # hot's 50 events before it had a slot and b's 1 are in _other; hot's later events are its own
    assert m.value("flk_accepted_total", tenant=OTHER_TENANTS) == 51.0
    assert m.value("flk_accepted_total", tenant="a") == 2.0
    m({"kind": "accepted", "tenant_label": "hot"})
    assert m.value("flk_accepted_total", tenant="hot") == 1.0  # its series starts at its next event
    assert 'tenant="hot"' in m.exposition().decode()
    assert m.rankings >= 1


def test_an_unknown_tenant_flood_never_takes_a_slot() -> None:
    m = Metrics(max_tenants=1)
    m({"kind": "accepted", "tenant_label": "a"})
    for _ in range(100):
        m({"kind": "signature_error", "tenant_label": "_unknown"})
    m.exposition()
    assert m.value("flk_accepted_total", tenant="a") == 1.0
    assert m.value("flk_signature_errors_total", tenant="_unknown") == 100.0


def test_evenly_spread_traffic_does_not_make_the_series_churn() -> None:
    """Many tenants, one event each in turn, scraped often: the slots stay where they are
    (a series that starts and ends at every scrape is churn for Prometheus)."""
    m = Metrics(max_tenants=10)
    for k in range(2_000):
        m({"kind": "accepted", "tenant_label": f"t{k % 500}"})
        if k % 37 == 0:
            m.exposition()
    assert m.rankings == 0
    assert {f"t{i}" for i in range(10)} == {s.labels["tenant"] for f in m.registry.collect()
                                             for s in f.samples if f.name == "flk_accepted"} - {"_other"}
