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


@settings(max_examples=120, derandomize=True, deadline=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from(["t0", "t1"]), st.integers(0, 6), st.booleans()), max_size=8),
                max_size=8),
       st.sampled_from([None, 4.0, 7.0, 10.0]), st.sampled_from([0.0, 2.0, 3.5, 7.5, 30.0]))
def test_batch_forms_answer_like_the_per_item_calls(batches, ttl, step):
    """``get_many`` / ``put_many_if_absent`` (one loop under one lock, inlined expiry reads)
    against the reference store's per-item calls made in order: the same answers batch by
    batch (in-batch duplicates, expired entries replaced, bare and wrapped entries) and the
    same store afterwards."""
    ref, sim = MemoryStore(ttl_s=7.0), SimMemoryStore(ttl_s=7.0)
    for b, batch in enumerate(batches):
        now = b * step
        items = [(t, f"p{k}", _outcome(k, now if own else now + 0.25)) for t, k, own in batch]
        keys = [(t, p) for t, p, _ in items]
        assert sim.get_many(keys, now) == [ref.get(t, p, now) for t, p in keys]
        assert sim.put_many_if_absent(items, now, ttl) == [ref.put_if_absent(t, p, o, now, ttl) for t, p, o in items]
    end = len(batches) * step
    assert sim.scan_all(end) == ref.scan(None, 1000, end)[0]
    assert sim.count(end) == ref.count(end)


@pytest.mark.parametrize("bad", [("", "p"), ("t", ""), ("t", "a\nb"), ("t:x" * 100, "p"), (None, "p"), ("t", 7)])
def test_batch_forms_validate_every_key_before_writing(bad):
    """A batch with an invalid key is refused whole (ValueError), like a per-key call with it."""
    sim = SimMemoryStore()
    good = ("t0", "p0", _outcome(0, 1.0))
    with pytest.raises(ValueError):
        sim.put_many_if_absent([good, (*bad, _outcome(1, 1.0))], 1.0)
    with pytest.raises(ValueError):
        sim.get_many([("t0", "p0"), bad], 1.0)
    with pytest.raises(ValueError):
        sim.put_if_absent(*bad, _outcome(1, 1.0), 1.0)
    assert sim.count(1.0) == 0


def test_outage_store_calls_the_inner_store_while_up_and_refuses_while_down():
    """While available the wrapper hands out the inner store's own methods (no frame of its
    own per call); an outage makes every call raise and ``ping`` answer False; back up, the
    inner store answers again with what it held."""
    from flk.impl.dedup import StoreUnavailable
    from flk.impl.testing.outage import OutageStore

    inner = SimMemoryStore()
    store = OutageStore(inner)
    o = _outcome(1, 5.0)
    assert store.put_many_if_absent([("t0", "p1", o)], 5.0) == [(True, o)]
    assert store.put_if_absent.__self__ is inner and store.ping()
    store.available = False
    for call in (lambda: store.get("t0", "p1", 5.0), lambda: store.put_if_absent("t0", "p2", o, 5.0),
                 lambda: store.get_many([("t0", "p1")], 5.0), lambda: store.put_many_if_absent([("t0", "p2", o)], 5.0),
                 lambda: store.count(5.0), lambda: store.scan(None, 10, 5.0), lambda: store.sample(1, 0, 5.0)):
        with pytest.raises(StoreUnavailable):
            call()
    assert not store.ping() and not store.available
    store.available = True
    assert store.get_many([("t0", "p1"), ("t0", "p2")], 5.0) == [o, None] and store.count(5.0) == 1
