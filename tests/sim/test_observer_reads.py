"""The simulator's observer (the key-count divergence sample, the final state the checkers
read) sees the ground truth past a shard outage; found by flk sim explore, where a shard still
out at a sample or at the end stopped the run with StoreUnavailable."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.dedup import StoredOutcome
from flk.sim.stores import StoreTopology

NOW = 1_700_000_000.0


def _outcome(i: int) -> StoredOutcome:
    return StoredOutcome(f"{i:064x}", 200, b"{}", NOW, "r1", "p1")


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 60), down=st.sets(st.sampled_from(["s0", "s1", "s2"])))
def test_counts_and_final_entries_are_the_same_with_any_shard_out(n, down):
    topo = StoreTopology({"dedup": "sharded", "shards": 3})
    for i in range(n):
        topo.store.put_if_absent("t0", f"{i:064x}", _outcome(i), NOW)
    want_count, want_entries = topo.observed_count(NOW), topo.scan_all(NOW)
    assert want_count == n and len(want_entries) == n
    for name in down:
        topo.shards[name].available = False
    assert topo.observed_count(NOW) == want_count
    assert topo.scan_all(NOW) == want_entries
