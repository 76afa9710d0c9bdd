"""/metrics stays bounded with many tenants: at most
METRICS_MAX_TENANTS tenants get series of their own, later ones are counted under
``_other`` (nothing is lost: the totals add up), ``_unknown``/``_none`` stay apart,
and the scrape of 10,000 tenants is as small as that of the cap."""

from __future__ import annotations

from flk.impl.verifier.metrics import OTHER_TENANTS, Metrics


def feed(m: Metrics, tenants: int) -> None:
    for i in range(tenants):
        m({"kind": "accepted", "tenant_label": f"t{i}", "status": 200})
        m({"kind": "rejected", "tenant_label": f"t{i}", "status": 400})
        m.observe_latency(f"t{i}", 0.002)
    m({"kind": "signature_error", "tenant_label": "_unknown"})


def test_tenants_beyond_the_cap_are_counted_under_other_and_nothing_is_lost() -> None:
    m = Metrics(max_tenants=3)
    feed(m, 10)
    assert [m.value("flk_accepted_total", tenant=f"t{i}") for i in range(4)] == [1.0, 1.0, 1.0, 0.0]
    assert m.value("flk_accepted_total", tenant=OTHER_TENANTS) == 7.0
    assert m.value("flk_rejected_total", tenant=OTHER_TENANTS, status="400") == 7.0
    assert m.value("flk_verify_latency_seconds_count", tenant=OTHER_TENANTS) == 7.0
    assert m.value("flk_signature_errors_total", tenant="_unknown") == 1.0
    m({"kind": "accepted", "tenant_label": "t1", "status": 200})  # a labelled tenant keeps its label
    assert m.value("flk_accepted_total", tenant="t1") == 2.0


def test_the_scrape_size_does_not_grow_with_the_tenants_beyond_the_cap() -> None:
    small, big = Metrics(max_tenants=50), Metrics(max_tenants=50)
    feed(small, 60)
    feed(big, 10_000)
    a, b = small.exposition(), big.exposition()
    assert a.count(b"\n") == b.count(b"\n") and len(b) - len(a) < 200  # only the _other values differ
    assert Metrics(max_tenants=None).label("t") == "t"  # the anchor keeps every tenant (bench only)
