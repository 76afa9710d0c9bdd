"""The dedup contract (tests/dedup/contract.py) on the simulator's memory store, which holds its
keys per tenant (``tenant -> pcs_id -> (expiry, outcome)``) instead of the reference's
``(tenant, pcs_id)`` tuples: it must answer every contract case like the reference."""

from __future__ import annotations

import pytest
from dedup.contract import DedupContract, StoreSpec
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.dedup import StoredOutcome
from flk.impl.dedup.memory import MemoryStore
from flk.sim.stores import SimMemoryStore


def open_sim_memory(ttl_s=None):
    return SimMemoryStore() if ttl_s is None else SimMemoryStore(ttl_s)


class TestSimMemoryStoreContract(DedupContract):
    @pytest.fixture
    def store_spec(self):
        spec = StoreSpec("sim-memory", open_sim_memory, (), cross_process=False)
        yield spec
        spec.close_all()


def _outcome(i: int, first_seen: float) -> StoredOutcome:
    return StoredOutcome(f"d{i}", 200, b'{"i":%d}' % i, first_seen, "eu", "p1")


@settings(max_examples=80, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["t0", "t1"]), st.integers(0, 12), st.sampled_from([0.0, 3.0, 9.0]),
                          st.booleans(), st.sampled_from([None, 4.0, 10.0])), max_size=40),
       st.sampled_from([0.0, 3.0, 6.9, 7.0, 9.0, 13.0, 16.0, 19.0, 40.0]), st.integers(0, 6))
def test_bare_and_wrapped_entries_answer_like_the_reference(puts, now, seed):
    """Puts at the outcome's own ``first_seen`` with the store's TTL are held bare (the expiry
    recomputed on read), the others as ``(expiry, outcome)``: both answer every read like the
    reference store, expired or not, and a bare entry expires at exactly first_seen + TTL."""
    ref, sim = MemoryStore(ttl_s=7.0), SimMemoryStore(ttl_s=7.0)
    for tenant, k, t, own, ttl in puts:
        o = _outcome(k, t if own else t + 0.5)
        assert sim.put_if_absent(tenant, f"p{k}", o, t, ttl) == ref.put_if_absent(tenant, f"p{k}", o, t, ttl)
        for probe in (t, now):
            assert sim.get(tenant, f"p{k}", probe) == ref.get(tenant, f"p{k}", probe)
    assert sim.count(now) == ref.count(now)
    assert sim.scan_all(now) == ref.scan(None, 1000, now)[0]
    assert sim.sample(5, seed, now) == ref.sample(5, seed, now)
    keys = [(t, f"p{k}") for t, k, *_ in puts]
    assert sim.get_many(keys, now) == ref.get_many(keys, now)
