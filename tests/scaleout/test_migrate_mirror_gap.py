"""INV-FWW through a migration with shard outages, on the real DualWriteStore over real
ShardedStores (the shards are MemoryStores behind OutageStore switches, as in the simulator).

Found by ``flk sim explore --swarm`` (the migrate + shard_down findings, see
sim/scenarios/regressions/migrate-shard-down-*.toml): while the old ring decided, a put whose
mirror shard was down was decided on the old ring and then failed (503) -- the key's winner
lived in the old ring only, after verify had passed it. After cutover the new ring decided the
key's retry afresh and stored a second outcome. The store now reads the mirror ring before it
decides (dual read): a mirror that is down fails the put before anything is decided, and a
winner the mirror ring holds is adopted by the decider.
"""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flk.impl.dedup import StoredOutcome, StoreUnavailable
from flk.impl.dedup.memory import MemoryStore
from flk.impl.dedup.migrate import (
    CATCHUP_SETTLE_S,
    PHASES,
    DualWriteStore,
    RingSpec,
    catchup_step,
    copy_step,
    new_state,
    reset_verify,
    settle_suspects,
    transition,
    verify_step,
)
from flk.impl.dedup.sharded import ShardedStore
from flk.impl.testing.outage import OutageStore

T0 = 1_000.0
FORWARD = ("planned", "dual_write", "copied", "verified", "cut_over", "cleaned")


def _topology():
    shards = {f"s{i}": OutageStore(MemoryStore()) for i in range(4)}
    old = ShardedStore({k: shards[k] for k in ("s0", "s1", "s2")}, probe_interval_s=0.0)
    new = ShardedStore(dict(shards), probe_interval_s=0.0)
    return shards, DualWriteStore(old, new, "planned")


def _out(i: int, now: float) -> StoredOutcome:
    return StoredOutcome(f"{i:064x}", 200, b'{"n":%d}' % i, now, "r1", "p1")


def _moving_key(store: DualWriteStore) -> str:
    """A key the migration moves to the new shard s3."""
    return next(p for p in (f"k{i}" for i in range(10_000)) if store.new.shard_for("t", p) == "s3")


def _stored(shards, key: str, now: float) -> set:
    """Every outcome any shard holds for the key (past any outage): the ground truth."""
    return {o for s in shards.values() for o in [s.inner.get("t", key, now)] if o is not None}


def test_a_put_with_its_mirror_shard_down_leaves_no_winner_behind_a_cutover():
    shards, store = _topology()
    key = _moving_key(store)
    store.set_phase("dual_write")
    store.set_phase("copied")
    shards["s3"].available = False
    try:
        store.put_if_absent("t", key, _out(1, T0), T0)
        raise AssertionError("a put whose mirror shard is down must fail closed")
    except StoreUnavailable:
        pass
    shards["s3"].available = True
    for ph in ("verified", "cut_over", "cleaned"):
        store.set_phase(ph)
    won, winner = store.put_if_absent("t", key, _out(2, T0 + 1), T0 + 1)
    assert len(_stored(shards, key, T0 + 1)) == 1, "two outcomes stored for one key"
    assert won and winner == _out(2, T0 + 1)


def test_the_new_ring_adopts_a_winner_only_the_old_ring_holds_after_cutover():
    """A gap left by a crash between the decide and the mirror write (the old ring holds the
    key, the new ring does not): in cut_over the new ring adopts the old winner."""
    shards, store = _topology()
    key = _moving_key(store)
    first = _out(1, T0)
    store.old.put_if_absent("t", key, first, T0)  # decided on the old ring, mirror never written
    for ph in ("dual_write", "copied", "verified", "cut_over"):
        store.set_phase(ph)
    assert store.get("t", key, T0 + 1) == first
    assert store.put_if_absent("t", key, _out(2, T0 + 1), T0 + 1) == (False, first)
    assert _stored(shards, key, T0 + 1) == {first}


def _step_done(store, state, to: str, now: float) -> bool:
    """The operator's step before phase ``to`` (``flk dedup-migrate``): a full copy before
    copied, a clean verify (suspects settled) before verified, a clean catch-up before cleaned. A shard that is down fails
    the step: the phase stays."""
    try:
        if to == "copied":
            state["copy"] = new_state(RingSpec({"s0": "x"}), RingSpec({"s1": "x"}), now)["copy"]
            while not state["copy"]["done"]:
                copy_step(state, store.old, store.new, now, 50)
        elif to == "verified":
            reset_verify(state)
            while not state["verify"]["done"]:
                verify_step(state, store.old, store.new, now, 50)
            settle_suspects(state, store.old, store.new, now)
            return not (state["verify"]["missing"] or state["verify"]["different"])
        elif to == "cleaned":
            while not state["catchup"]["done"]:
                catchup_step(state, store.old, store.new, now + CATCHUP_SETTLE_S, 50)
            return not state["catchup"]["different"]
    except StoreUnavailable:
        return False
    return True


OPS = st.lists(st.one_of(
    st.tuples(st.just("put"), st.integers(0, 5)),
    st.tuples(st.just("down"), st.sampled_from(["s0", "s1", "s2", "s3"])),
    st.tuples(st.just("up"), st.sampled_from(["s0", "s1", "s2", "s3"])),
    st.tuples(st.just("phase"), st.just(0)),
), max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example([("phase", 0), ("phase", 0), ("phase", 0), ("down", "s3"), ("put", 0), ("up", "s3"),
          ("phase", 0), ("phase", 0), ("put", 0)])  # the swarm finding: a 503'd put after verify
@given(OPS)
def test_inv_fww_through_a_migration_with_shard_outages(ops):
    """Any interleaving of puts, shard outages and the forward phase changes (each after the
    operator's step before it: copy, verify): every key is stored with at most one outcome
    in all shards together, and every answered winner is that outcome."""
    shards, store = _topology()
    moving = [p for p in (f"k{i}" for i in range(200)) if store.new.shard_for("t", p) == "s3"][:3]
    keys = moving + ["a", "b", "c"]
    phase, answered, now = 0, {}, T0
    state = new_state(RingSpec({n: n for n in store.old.shards}), RingSpec({n: n for n in store.new.shards}), now)
    for i, (op, arg) in enumerate(ops):
        now += 0.01
        if op == "put":
            try:
                _, winner = store.put_if_absent("t", keys[arg], _out(i, now), now)
            except StoreUnavailable:
                continue
            assert answered.setdefault(keys[arg], winner) == winner
        elif op in ("down", "up"):
            shards[arg].available = op == "up"
        elif phase + 1 < len(FORWARD) and _step_done(store, state, FORWARD[phase + 1], now):
            phase += 1
            transition(state, FORWARD[phase], now)
            store.set_phase(FORWARD[phase])
        for k in keys:
            assert len(_stored(shards, k, now)) <= 1, (k, store.phase)
    assert set(FORWARD) <= set(PHASES)
