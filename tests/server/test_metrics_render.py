"""The fast exposition of the pipeline's families (``Metrics.exposition`` through
``render_families``) is byte for byte what prometheus_client's ``generate_latest`` writes,
for any mix of tenants (labels with quotes, backslashes, newlines, non-ASCII), statuses and
latencies (Hypothesis); with other collectors in the registry, the same families."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from flk.impl.verifier.metrics import Metrics

LABELS = st.text(alphabet=st.sampled_from('ab"\\\nzé_-0'), min_size=1, max_size=6)
EVENTS = st.lists(st.tuples(st.sampled_from(["ingest", "accepted", "rejected", "dedup_hit", "signature_error"]),
                            LABELS, st.sampled_from([400, 413, 429]), st.floats(0.0, 2.0)), max_size=40)


@settings(max_examples=60, deadline=None)
@given(events=EVENTS, cap=st.one_of(st.none(), st.integers(1, 5)))
def test_the_fast_exposition_is_what_generate_latest_writes(events, cap) -> None:
    m = Metrics(max_tenants=cap)
    for kind, tenant, status, seconds in events:
        m({"kind": kind, "tenant_label": tenant, "status": status})
        m.observe_latency(tenant, seconds)
    fast = m.exposition()
    assert fast == generate_latest(m.registry)


def test_with_other_collectors_in_the_registry_the_families_are_the_same() -> None:
    m = Metrics(max_tenants=2)
    g = Gauge("flk_server_gauge", "a server metric beside the pipeline's", registry=m.registry)
    g.set(3)
    for t in ("a", "b", "c"):
        m({"kind": "accepted", "tenant_label": t})
        m.observe_latency(t, 0.01)
    fast = {f.name: sorted(map(repr, f.samples)) for f in text_string_to_metric_families(m.exposition().decode())}
    ref = {f.name: sorted(map(repr, f.samples)) for f in text_string_to_metric_families(
        generate_latest(m.registry).decode())}
    assert fast == ref and "flk_server_gauge" in fast
