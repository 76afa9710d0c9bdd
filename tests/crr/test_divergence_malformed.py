"""A peer's divergence summary is input: any bytes under its key give a summary or
``MalformedSummary``, never another exception, and the detector counts such a peer unseen
(its divergence unknown) instead of failing its replication step."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.dedup import StoredOutcome, open_store
from flk.impl.replication.divergence import PREFIX, DivergenceDetector, MalformedSummary, Summary
from flk.impl.storage.objectstore import MemoryObjectStore

NOW = 1_700_000_000.0
GOOD = Summary("eu", 3, 5, 10, NOW, (("ta", "p", "a" * 64, 200, "eu", NOW - 2.5),), (("us", None), ("ap", ("ta",))))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=10), inner, max_size=6),
    max_leaves=30)
field_names = st.sampled_from(["region", "count", "seed", "n", "taken_at", "sample", "reads", "count_exact"])


def _read(raw: bytes) -> Summary | None:
    """from_json's only two answers."""
    try:
        return Summary.from_json(raw)
    except MalformedSummary:
        return None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_give_a_summary_or_malformed(raw):
    _read(raw)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(field_names, json_values, max_size=8), json_values)
def test_any_json_gives_a_summary_or_malformed(doc, other):
    for value in (doc, other, {**json.loads(GOOD.to_json()), **doc}):
        s = _read(json.dumps(value).encode())
        if s is not None:  # what was read is what a summary is made of
            assert isinstance(s.count, int) and s.count >= 0 and math.isfinite(s.taken_at)
            assert all(isinstance(e[3], int) and not math.isnan(e[5]) and e[5] != math.inf for e in s.sample)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=4), st.text(max_size=4), st.text(max_size=4), st.integers(100, 599),
                          st.text(max_size=3), st.floats(allow_nan=False, allow_infinity=False)), max_size=5),
       st.integers(0, 2**40), st.booleans())
def test_every_summary_reads_back_as_itself(sample, count, exact):
    s = Summary("eu", count, 7, 10, NOW, tuple(sample), None, exact)
    assert Summary.from_json(s.to_json()) == s


@pytest.mark.parametrize("change, what", [
    ({"taken_at": float("nan")}, "taken_at"),
    ({"count": True}, "count"),
    ({"count": -1}, "count"),
    ({"sample": [["ta", "p", "d", 200, "eu", float("inf")]]}, "first_seen"),
    ({"sample": [["ta", "p", "d", 200, "eu", float("nan")]]}, "first_seen"),
    ({"sample": [["ta", "p", "d", "200"]]}, "status"),
    ({"sample": [["ta", "p", "d"]]}, "4 to 6"),
    ({"reads": [["us"]]}, "reads"),
    ({"count_exact": "no"}, "count_exact"),
    ({"region": 7}, "region"),
])
def test_what_would_hide_a_drift_or_break_a_comparison_is_refused(change, what):
    """A first_seen of NaN or +infinity would keep a key in flight (never compared) for good."""
    doc = {**json.loads(GOOD.to_json()), **change}
    with pytest.raises(MalformedSummary, match=what):
        Summary.from_json(json.dumps(doc).encode())


def test_an_older_summarys_entry_is_still_read_and_always_compared():
    doc = {**json.loads(GOOD.to_json()), "sample": [["ta", "p", "d", 200, "eu", float("-inf")], ["ta", "q", "d", 202]]}
    s = Summary.from_json(json.dumps(doc).encode())
    assert [e[5] for e in s.sample] == [-math.inf, -math.inf]


def test_a_peer_whose_summary_is_not_one_is_unseen_and_counted_and_the_others_still_compared():
    objects = MemoryObjectStore()
    stores = {r: open_store("memory") for r in ("eu", "us", "ap")}
    for s in stores.values():
        for i in range(12):
            s.put_if_absent("ta", f"{i:064x}", StoredOutcome("a" * 64, 200, b"{}", NOW, "eu", "p1"), NOW)
    dets = {r: DivergenceDetector(r, s, objects, list(stores), n=10, interval_s=60) for r, s in stores.items()}
    t = 60 * 1000 + 1.0
    for d in dets.values():
        d.step(t)
    (key,) = objects.list(f"{PREFIX}/us/")
    objects.delete(key)
    objects.put(key, b'{"region": "us", "count": "many"')  # truncated, as a torn upload would leave it
    eu = dets["eu"]
    eu.step(t + 30)  # compares: must not raise
    assert [(a.comparison.region1, a.comparison.region2) for a in eu.compared] == [("ap", "eu")]
    assert eu.unseen == {"ap": 0, "us": 1} and eu.unreadable == {"ap": 0, "us": 1}
    # the next period us publishes a good one again: seen, and the count of unreadable ones stays
    for d in dets.values():
        d.step(t + 60)
    eu.step(t + 90)
    assert eu.unseen == {"ap": 0, "us": 0} and eu.unreadable == {"ap": 0, "us": 1}
    assert {a.comparison.region2 for a in eu.compared} | {a.comparison.region1 for a in eu.compared} >= {"us", "ap"}
