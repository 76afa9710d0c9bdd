"""``SimMemoryStore.sample`` ranks each tenant's keys in a comprehension, chunk by chunk,
and selects by plain tuple order: it must answer exactly the reference's sample (the
dedup contract's :func:`flk.impl.dedup.base.sample_entries` of every live entry), the
same outcome objects in the same order, whatever the chunk size, ``n`` and expiries."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flk.sim.stores as stores
from flk.impl.dedup import StoredOutcome
from flk.impl.dedup.base import sample_entries
from flk.sim.stores import SimMemoryStore


def _outcome(i: int, first_seen: float) -> StoredOutcome:
    return StoredOutcome(f"d{i}", 200, b'{"i":%d}' % i, first_seen, "eu", "p1")


@settings(max_examples=150, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["t0", "t1", "t:2"]), st.integers(0, 40), st.sampled_from([0.0, 3.0, 9.0]),
                          st.booleans(), st.sampled_from([None, 4.0, 10.0])), max_size=60),
       st.sampled_from([0.0, 3.0, 6.9, 9.0, 13.0, 40.0]), st.integers(0, 70), st.integers(0, 9),
       st.sampled_from([1, 2, 3, 7, 4096]))
def test_sample_is_the_references_sample(puts, now, n, seed, chunk):
    sim = SimMemoryStore(ttl_s=7.0)
    for tenant, k, t, own, ttl in puts:
        sim.put_if_absent(tenant, f"p{k}", _outcome(k, t if own else t + 0.5), t, ttl)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stores, "_HASH_CHUNK", chunk)
        got = sim.sample(n, seed, now)
    want = sample_entries(sim._unsorted_live(now), n, seed)
    assert got == want
    assert all(a[2] is b[2] for a, b in zip(got, want, strict=True))  # the held objects themselves
    assert len(got) == min(n, sim.count(now))


def test_a_negative_sample_size_is_refused():
    with pytest.raises(ValueError):
        SimMemoryStore().sample(-1, 0, 0.0)

