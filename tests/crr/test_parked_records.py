"""One shard of a region's sharded dedup store down does not hold back replication of every
other key into that region (SPEC.md section 11.2, "A partial refusal parks its records").

The reader parks the records a partial store answer refused (and every later record of their
keys in the stream), applies every other record as it arrives, applies the parked ones again
at each poll in stream order, and keeps its durable watermark at the earliest parked record's
segment (a restart reads again from there). A reference region that reads the same streams
into a store that never fails ends equal, outcome for outcome (first_seen included).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.impl.dedup import StoreUnavailable
from flk.impl.dedup.memory import MemoryStore
from flk.impl.dedup.sharded import ShardedStore
from flk.impl.replication.applying import ReplayApplier
from flk.impl.storage.objectstore import MemoryObjectStore
from flk.impl.testing.outage import OutageStore

from .regions import NOW, Region, variants

SHARDS = ("s0", "s1", "s2", "s3")


def _sharded() -> tuple[ShardedStore, dict[str, OutageStore]]:
    shards = {n: OutageStore(MemoryStore()) for n in SHARDS}
    return ShardedStore(shards, probe_interval_s=0.0), shards


def _reading(name: str, objects, store, peers=("eu", "us", "ref")) -> Region:
    """A region whose reader replays in batches without an event sink (as ``flk serve``'s and
    the simulator's readers do: the path that parks)."""
    region = Region(name, objects, list(peers), store=store)
    region.applier = ReplayApplier(region.verifier, region.store, region.reconciler.observe)
    region._drivers()
    return region


def _world():
    objects = MemoryObjectStore()
    eu = Region("eu", objects, ["eu", "us", "ref"])
    store, shards = _sharded()
    us = _reading("us", objects, store)
    ref = _reading("ref", objects, MemoryStore())
    return eu, us, ref, store, shards


def test_one_shard_down_parks_only_its_keys_and_every_other_key_is_applied() -> None:
    eu, us, ref, store, shards = _world()
    subs = variants(12, 1)
    shards["s1"].available = False
    for i, (raw, tenant, _, _) in enumerate(subs):
        assert eu.submit(raw, tenant, NOW + i).status in (200, 202)
    eu.shipper.step(NOW + 20)
    us.reader.step(NOW + 21)
    ref.reader.step(NOW + 21)
    down = {k for k in ref.local() if store.shard_for(*k) == "s1"}
    assert down and len(down) < len(ref.local()), "the test needs keys on s1 and on the other shards"
    local = store_contents(shards)
    # every key of an up shard arrived, exactly as in the reference; none of s1's
    assert {k: v for k, v in ref.local().items() if k not in down} == local
    parked = us.reader.metrics()["parked"]
    assert parked == len(down) and us.reader.failures == 0 and us.reader.stalled_since == NOW + 21
    assert "records wait for the dedup store" in us.reader.last_error
    # the watermark stays at the parked records' segment; the frontier is past it
    assert us.reader.watermarks["eu"] == 0
    # the shard is back: the next poll applies the parked ones and the watermark moves
    shards["s1"].available = True
    us.reader.step(NOW + 22)
    assert us.local() == ref.local()
    assert us.reader.metrics()["parked"] == 0 and us.reader.stalled_since is None
    assert us.reader.watermarks["eu"] == ref.reader.watermarks["eu"] and us.reader.last_error is None


def store_contents(shards: dict[str, OutageStore]) -> dict:
    """Every entry of the shards that are up."""
    out = {}
    for shard in shards.values():
        if shard.available:
            page, cursor = shard.inner.scan(None, 10_000, NOW + 10**6)
            assert cursor is None
            out.update({(t, p): o for t, p, o in page})
    return out


def test_a_whole_store_outage_parks_nothing_and_stalls_as_before() -> None:
    """A store that is down as a whole (one Redis, one Postgres) refuses every write with a
    plain ``StoreUnavailable``: nothing is parked, the poll stops and is retried."""
    objects = MemoryObjectStore()
    eu = Region("eu", objects, ["eu", "us", "ref"])
    whole = OutageStore(MemoryStore())
    us, ref = _reading("us", objects, whole), _reading("ref", objects, MemoryStore())
    for i, (raw, tenant, _, _) in enumerate(variants(4, 1)):
        eu.submit(raw, tenant, NOW + i)
    eu.shipper.step(NOW + 10)
    whole.available = False
    us.reader.step(NOW + 11)
    assert us.reader.metrics()["parked"] == 0 and us.reader.failures == 1
    assert us.reader.watermarks.get("eu", 0) == 0 and us.reader.stalled_since == NOW + 11
    whole.available = True
    us.reader.step(NOW + 100)
    ref.reader.step(NOW + 100)
    assert us.local() == ref.local() and us.reader.stalled_since is None


def test_parked_records_survive_a_restart() -> None:
    eu, us, ref, store, shards = _world()
    subs = variants(10, 1)
    shards["s2"].available = False
    for i, (raw, tenant, _, _) in enumerate(subs[:5]):
        eu.submit(raw, tenant, NOW + i)
        eu.shipper.step(NOW + i + 0.5)
        eu.log.seal()
    us.reader.step(NOW + 6)
    first_parked = us.reader.parked["eu"][min(us.reader.parked["eu"])][2]
    assert us.reader.watermarks["eu"] == first_parked
    for i, (raw, tenant, _, _) in enumerate(subs[5:], start=10):
        eu.submit(raw, tenant, NOW + i)
    eu.shipper.step(NOW + 20)
    us.reader.step(NOW + 21)
    us.crash()  # the reader restarts from its durable watermark; its parked list is gone
    assert us.reader.parked == {} and us.reader.watermarks["eu"] == first_parked
    shards["s2"].available = True
    us.reader.step(NOW + 30)
    ref.reader.step(NOW + 30)
    assert us.local() == ref.local() and us.reader.metrics()["parked"] == 0


class _BackAfter:
    """A shard that comes back after ``calls`` calls of the store above it (mid-poll)."""

    def __init__(self, store: ShardedStore, shard: OutageStore, calls: int) -> None:
        self.store, self.shard, self.calls = store, shard, calls

    def put_many_if_absent(self, items, now, ttl_s=None):
        self.calls -= 1
        try:
            return self.store.put_many_if_absent(items, now, ttl_s)
        finally:
            if self.calls <= 0:
                self.shard.available = True

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_a_keys_later_record_waits_behind_its_parked_one() -> None:
    """The home answered 503 to a key's first request (undecided: replayed as a write) and 200
    to the retry a second later. Replayed in order, the first one's first_seen wins. With the
    reading region's shard down for the first record only, the second must not be written
    before the first: it waits parked behind it."""
    eu, us, ref, store, shards = _world()
    (raw, tenant, pcs_id, _), = variants(1, 1)
    owner = store.shard_for(tenant, pcs_id)
    healthy = eu.store
    eu.store = OutageStore(healthy)
    eu.store.available = False
    assert eu.submit(raw, tenant, NOW).status == 503
    eu.store = healthy
    eu.log.seal()
    assert eu.submit(raw, tenant, NOW + 1).status in (200, 202)
    eu.shipper.step(NOW + 2)
    eu.log.seal()
    shards[owner].available = False
    us.applier.store = _BackAfter(store, shards[owner], calls=1)  # back after the first segment's put
    us.reader.step(NOW + 3)
    ref.reader.step(NOW + 3)
    assert us.reader.metrics()["parked"] == 2  # the first refused, the second held behind it
    us.reader.step(NOW + 4)
    assert us.local() == ref.local()
    assert us.local()[(tenant, pcs_id)].first_seen == ref.local()[(tenant, pcs_id)].first_seen == NOW


def test_at_the_cap_the_reader_stops_as_at_a_whole_refusal() -> None:
    eu, us, ref, store, shards = _world()
    us.reader.park_max = 1
    subs = variants(12, 1)
    shards["s0"].available = shards["s1"].available = False
    for i, (raw, tenant, _, _) in enumerate(subs[:6]):
        eu.submit(raw, tenant, NOW + i)
    eu.shipper.step(NOW + 7)
    eu.log.seal()
    for i, (raw, tenant, _, _) in enumerate(subs[6:], start=8):
        eu.submit(raw, tenant, NOW + i)
    eu.shipper.step(NOW + 20)
    us.reader.step(NOW + 21)
    assert us.reader.metrics()["parked"] >= 1 and us.reader.failures == 1
    assert "the reader's cap" in us.reader.last_error
    shards["s0"].available = shards["s1"].available = True
    us.reader.step(NOW + 100)
    ref.reader.step(NOW + 100)
    assert us.local() == ref.local()


# one step: the shards down during it, the submissions eu takes (indexes into variants(12, 2):
# two payloads per key, so a key can meet its conflict), whether us crashes after its poll
STEPS = st.lists(st.tuples(st.sets(st.sampled_from(SHARDS), max_size=2),
                           st.lists(st.integers(0, 23), min_size=1, max_size=6), st.booleans()),
                 min_size=1, max_size=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STEPS)
def test_any_schedule_of_shard_outages_ends_equal_to_a_region_whose_store_never_failed(steps) -> None:
    eu, us, ref, store, shards = _world()
    subs = variants(12, 2)
    t = NOW
    for down, submitted, crash in steps:
        for name, shard in shards.items():
            shard.available = name not in down
        for k in submitted:
            t += 0.25
            raw, tenant, _, _ = subs[k]
            eu.submit(raw, tenant, t)
        t += 1.0
        eu.shipper.step(t)
        eu.log.seal()
        us.reader.step(t)
        ref.reader.step(t)
        _up_keys_applied(us, ref, store, shards, t)
        if crash:
            us.crash()
    for shard in shards.values():
        shard.available = True
    us.reader.step(t + 100)
    ref.reader.step(t + 100)
    assert us.local() == ref.local()
    assert us.reader.metrics()["parked"] == 0 and us.reader.watermarks == ref.reader.watermarks


def _up_keys_applied(us: Region, ref: Region, store: ShardedStore, shards: dict, now: float) -> None:
    """After a poll that went through: every key the reference holds whose shard is up holds
    the reference's outcome in us too (nothing waits behind a down shard but its own keys) --
    or is parked in a stream whose parked records are retried after a backoff not over yet (a
    shard down for several polls, back at this one: found by Hypothesis)."""
    if not any(shard.available for shard in shards.values()):
        return  # the whole store down: nothing applied, nothing parked (a stall)
    local = store_contents(shards)
    held = {entry[3] for stream, recs in us.reader.parked.items() if us.reader._park_retry.get(stream, (now,))[0] > now
            for entry in recs.values()}
    for key, outcome in ref.local().items():
        if shards[store.shard_for(*key)].available and key not in held:
            assert local.get(key) == outcome, key


def test_without_parking_a_partial_answer_still_fails_the_replay() -> None:
    """A replay with an event sink (or one record at a time) parks nothing: the partial answer
    fails it as a whole and the reader retries, as before."""
    eu, us, ref, store, shards = _world()
    us.applier = ReplayApplier(us.verifier, store, us.reconciler.observe, us.events.append)
    us._drivers()
    for i, (raw, tenant, _, _) in enumerate(variants(8, 1)):
        eu.submit(raw, tenant, NOW + i)
    eu.shipper.step(NOW + 10)
    shards["s3"].available = False
    us.reader.step(NOW + 11)
    assert us.reader.failures == 1 and us.reader.metrics()["parked"] == 0
    with pytest.raises(StoreUnavailable):
        us.reader.poll(NOW + 12)


class _WholeAt:
    """The store refuses its ``call``-th batch write as a whole (a plain ``StoreUnavailable``)."""

    def __init__(self, store: ShardedStore, call: int) -> None:
        self.store, self.call = store, call

    def put_many_if_absent(self, items, now, ttl_s=None):
        self.call -= 1
        if self.call == 0:
            raise StoreUnavailable("every shard refused")
        return self.store.put_many_if_absent(items, now, ttl_s)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_a_segment_read_again_after_a_whole_refusal_parks_its_records_once() -> None:
    eu, us, ref, store, shards = _world()
    us.reader.batch = 2  # several chunks per segment
    for i, (raw, tenant, _, _) in enumerate(variants(12, 1)):
        eu.submit(raw, tenant, NOW + i)
    eu.shipper.step(NOW + 20)
    shards["s1"].available = False
    order = [k for k in _keys_of(variants(12, 1), ordered=True)]
    on_s1 = {k for k in order if store.shard_for(*k) == "s1"}
    first = next(i for i, k in enumerate(order) if k in on_s1)
    assert first // 2 + 2 <= len(order) // 2, "the test needs a chunk after the first s1 record's"
    # the chunks up to the first s1 record's answered (it is parked), the next one refused whole
    us.applier.store = _WholeAt(store, call=first // 2 + 2)
    us.reader.step(NOW + 21)
    assert us.reader.failures == 1 and 0 < us.reader.metrics()["parked"]
    us.applier.store = store
    us.reader.step(NOW + 30)  # the parked ones refused again, the segment read again from its start
    assert us.reader.failures == 0 and us.reader.metrics()["parked"] == len(on_s1)
    shards["s1"].available = True
    us.reader.step(NOW + 40)
    ref.reader.step(NOW + 40)
    assert us.local() == ref.local() and us.reader.metrics()["parked"] == 0


def _keys_of(subs, ordered: bool = False):
    keys = [(tenant, json.loads(raw)["pcs_id"]) for raw, tenant, _, _ in subs]
    return keys if ordered else set(keys)
