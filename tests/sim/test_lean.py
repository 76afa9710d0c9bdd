"""The lean simulator: its shortcuts give exactly the answers of the plain paths.

* a digest-only history writes the same lines (hence the same digest) as a kept one;
* the simulator's memory store answers count / sample / scan like the reference store;
* the compact authoritative store behaves like the reference one under a reconciler;
* ``flk bench sim`` simulates every submission it reports (no projection).
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.dedup import StoredOutcome, sample_rank
from flk.impl.dedup.memory import MemoryStore
from flk.impl.replication.reconcile import MemoryAuthoritativeStore, Reconciler
from flk.sim.history import History, _dumps, digest_of
from flk.sim.replication import CompactAuthoritativeStore
from flk.sim.stores import SimMemoryStore

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                      max_leaves=8)
field_names = st.text(min_size=1, max_size=8).filter(lambda k: k not in ("t", "t_us", "type") and k.isidentifier())


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.floats(min_value=0, max_value=1e6), st.sampled_from(["a", "b.c", "é"]),
                          st.dictionaries(field_names, values, max_size=6)), max_size=8))
def test_digest_only_history_writes_the_kept_lines(events):
    kept, lean = History(keep=True), History(keep=False)
    for t, kind, fields in events:
        kept.record(t, kind, **fields)
        assert lean.record(t, kind, **fields) is None
    assert lean.digest == kept.digest == digest_of(kept.events)
    assert lean.count == kept.count == len(events)
    assert not lean.events  # nothing kept per event
    lines = "".join(kept._chunks()).split("\n")
    assert lines.pop() == ""
    for line, event in zip(lines, kept.events, strict=True):
        assert line == json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False) == _dumps(event)


@settings(max_examples=100, derandomize=True, deadline=None)
@given(st.lists(field_names, min_size=1, max_size=5, unique=True).flatmap(
    lambda names: st.tuples(st.just(tuple(names)), st.lists(st.tuples(*[values for _ in names]), max_size=5))))
def test_record_many_is_record_per_row(case):
    names, rows = case
    one, many, kept = History(keep=False), History(keep=False), History(keep=True)
    for row in rows:
        one.record(2.5, "final.x", **dict(zip(names, row, strict=True)))
    many.record_many(2.5, "final.x", names, rows)
    kept.record_many(2.5, "final.x", names, rows)
    assert one.digest == many.digest == kept.digest and one.count == many.count == kept.count == len(rows)


@settings(max_examples=100, derandomize=True, deadline=None)
@given(st.lists(field_names, max_size=5, unique=True).flatmap(
    lambda names: st.tuples(st.just(tuple(names)), st.lists(st.tuples(*[values for _ in names]), max_size=5))),
    st.floats(min_value=0, max_value=1e6))
def test_kept_record_many_keeps_what_record_keeps(case, t):
    """A kept history's ``record_many`` (the compiled line plus the event dict per row) keeps the
    very events, key order included, and writes the very lines of ``record`` per row (its
    ``recorder``: tests/sim/test_fast_paths.py)."""
    names, rows = case
    ref, many = History(keep=True), History(keep=True)
    for row in rows:
        ref.record(t, "srv.x", **dict(zip(names, row, strict=True)))
    many.record_many(t, "srv.x", names, iter(rows))
    assert [list(e.items()) for e in many.events] == [list(e.items()) for e in ref.events]
    assert many.digest == ref.digest and many.count == ref.count == len(rows)
    assert "".join(many._chunks()) == "".join(ref._chunks())


def test_kept_recorder_refuses_nan_and_keeps_nothing_of_it():
    h = History(keep=True)
    rec = h.recorder("x", ("v", "w"))
    rec(1.0, 1, "a")
    for bad in (lambda: rec(2.0, float("nan"), "b"), lambda: h.record_many(3.0, "x", ("v", "w"), [(2, "c"), (float("inf"), "d")])):
        try:
            bad()
        except ValueError:
            continue
        raise AssertionError("a non-finite float accepted")
    assert [e["v"] for e in h.events] == [1, 2] and h.count == 2


def test_digest_only_history_refuses_nan_like_the_kept_one():
    for keep in (True, False):
        try:
            History(keep=keep).record(1.0, "x", v=float("nan"))
        except ValueError:
            continue
        raise AssertionError("NaN accepted")


def _outcome(i: int, digest: str = "d") -> StoredOutcome:
    return StoredOutcome(f"{digest}{i}", 200, b'{"i":%d}' % i, 1.0 + i, "eu", "p1")


@settings(max_examples=60, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["t0", "t1"]), st.integers(0, 30), st.floats(0, 50),
                          st.sampled_from([None, 5.0, 20.0])), max_size=40),
       st.floats(0, 80), st.integers(0, 12), st.integers(0, 3))
def test_sim_memory_store_answers_like_the_reference(puts, now, n, seed):
    """The memory store's unsorted whole-store reads (count and sample skip the expiry filter
    while nothing can have expired; sample is a heap selection) and the simulator's ``scan_all``
    against a plain model: a dict with put-if-absent, filtered and fully sorted per read."""
    ref, sim = MemoryStore(), SimMemoryStore()
    model: dict = {}
    for tenant, k, t, ttl in puts:
        o = _outcome(k)
        assert ref.put_if_absent(tenant, f"p{k}", o, t, ttl) == sim.put_if_absent(tenant, f"p{k}", o, t, ttl)
        held = model.get((tenant, f"p{k}"))
        if held is None or held[0] <= t:
            model[(tenant, f"p{k}")] = (t + (ref.ttl_s if ttl is None else ttl), o)
    live = sorted((tk, pk, o) for (tk, pk), (exp, o) in model.items() if exp > now)
    assert sim.count(now) == ref.count(now) == len(live)
    by_rank = sorted(live, key=lambda e: (sample_rank(seed, e[0], e[1]), e[0], e[1]))[:n]
    assert sim.sample(n, seed, now) == ref.sample(n, seed, now) == by_rank
    full, cursor = [], None
    while True:
        page, cursor = ref.scan(cursor, 7, now)
        full += page
        if cursor is None:
            break
    assert sim.scan_all(now) == full == live


@settings(max_examples=60, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3), st.sampled_from([200, 202]),
                          st.sampled_from(["eu", "us"])), max_size=30))
def test_compact_authoritative_store_behaves_like_the_reference(observations):
    ref = Reconciler("eu", store=MemoryAuthoritativeStore())
    lean = Reconciler("eu", store=CompactAuthoritativeStore())
    for i, (key, variant, status, region) in enumerate(observations):
        o = StoredOutcome(f"g{variant}", status, b"b%d" % variant, float(variant), region, "p1")
        a = ref.observe("t0", f"p{key}", o, float(i))
        b = lean.observe("t0", f"p{key}", o, float(i))
        assert a == b
    assert list(ref.store.items()) == list(lean.store.items())
    assert ref.metrics() == lean.metrics()


def test_bench_sim_simulates_every_submission():
    from flk.impl.lab.bench import sim as bench

    out = bench.run(repeat=1, n=300)
    assert "projected_wall_s_for_1M" not in out and "projection_note" not in out
    assert out["submissions"] == out["submissions_requested"] == 300
    for key in ("wall_s_median", "peak_rss_mb", "submissions_per_wall_s", "history_events_per_wall_s",
                "simpy_events_per_wall_s", "bare_simpy_events_per_wall_s", "ratio_sim_to_bare_simpy"):
        assert out[key] > 0, key
