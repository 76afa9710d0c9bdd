"""INV-FWW across cleanup: the catch-up before cleanup (SPEC 13.4), on the real DualWriteStore over
real ShardedStores (MemoryStores behind OutageStore switches, as in the simulator).

The hole it closes: while the old ring decides, a process that dies between storing a key's
decision on the old ring and writing the copy to the new ring -- after verify has already
scanned that key -- leaves the key on the old ring only. In cut_over the dual read still finds
it; after cleanup nothing reads the old ring, and the key's retry was decided a second time.
Now ``transition(..., "cleaned")`` is refused until a catch-up pass (a scan of the old ring,
begun ``CATCHUP_SETTLE_S`` after the cutover) has copied what the new ring lacks.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flk.impl.dedup import StoredOutcome, StoreUnavailable
from flk.impl.dedup.migrate import (
    CATCHUP_SETTLE_S,
    DualWriteStore,
    MigrationError,
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
from flk.impl.lab.cli import main

from .test_migrate_mirror_gap import FORWARD, T0, _out
from .test_migrate_mirror_gap import _topology as _rings


class Died(BaseException):
    """The process died (not an error any code path handles)."""


def _topology():
    """The mirror-gap tests' rings (three old shards, a fourth added) and a fresh migration state."""
    shards, store = _rings()
    state = new_state(RingSpec({n: n for n in store.old.shards}), RingSpec({n: n for n in store.new.shards}), T0)
    return shards, store, state


def _moving(store: DualWriteStore, n: int) -> list[str]:
    """Keys the migration moves to the new shard s3."""
    return [p for p in (f"k{i}" for i in range(400)) if store.new.shard_for("t", p) == "s3"][:n]


def _stored(shards, key: str, now: float) -> set:
    """Every outcome any shard holds for the key (past any outage): the ground truth."""
    return {o for s in shards.values() for o in [s.inner.get("t", key, now)] if o is not None}


def _die_writing(shards, store: DualWriteStore, key: str, o: StoredOutcome, now: float) -> bool:
    """A put whose process dies after the decider stored the decision, before the mirror write
    (True when it died there; a put that finds the key decided dies nowhere)."""
    _dec, mirror = store._rings()
    if mirror is None:
        return False
    target = shards[mirror.shard_for("t", key)]

    def dies(*_a, **_k):
        raise Died

    target.__dict__["put_if_absent"] = dies  # the shard's next put never happens (reads work)
    try:
        store.put_if_absent("t", key, o, now)
    except Died:
        return True
    except StoreUnavailable:
        pass
    finally:
        target.available = target.available  # its own calls again (OutageStore sets them per state)
    return False


def _step(store, state, to: str, now: float, catch_up: bool = True) -> bool:
    """The procedure's step before phase ``to`` (``flk dedup-migrate``): a full copy before
    copied, a clean verify before verified, the catch-up before cleaned (``catch_up=False``: the
    procedure as it was, the catch-up marked done without running); a dirty verify copies and
    verifies again (the operator's next round). A shard that is down fails
    the step: the phase stays."""
    try:
        if to == "copied":
            state["copy"] = new_state(RingSpec({"s0": "x"}), RingSpec({"s1": "x"}), now)["copy"]
            while not state["copy"]["done"]:
                copy_step(state, store.old, store.new, now, 50)
        elif to == "verified":
            for _round in range(2):  # dirty (a write that died before its copy): copy again, verify again
                if _round:
                    state["copy"] = new_state(RingSpec({"s0": "x"}), RingSpec({"s1": "x"}), now)["copy"]
                    while not state["copy"]["done"]:
                        copy_step(state, store.old, store.new, now, 50)
                reset_verify(state)
                while not state["verify"]["done"]:
                    verify_step(state, store.old, store.new, now, 50)
                settle_suspects(state, store.old, store.new, now)
                if not (state["verify"]["missing"] or state["verify"]["different"]):
                    return True
            return False
        elif to == "cleaned" and not catch_up:
            state["catchup"]["done"] = True
        elif to == "cleaned":
            while not state["catchup"]["done"]:
                out = catchup_step(state, store.old, store.new, now + CATCHUP_SETTLE_S, 50)
                assert not out.get("settling")
            return not state["catchup"]["different"]
    except StoreUnavailable:
        return False
    return True


def _run(ops, catch_up: bool = True) -> list[str]:
    """Run ``ops`` (puts, puts whose process dies before the mirror write, shard outages and the
    forward phase changes, each after its step), then drive the migration to cleaned and put
    every key once more. Returns the INV-FWW violations (keys stored with two outcomes, answers
    that changed)."""
    shards, store, state = _topology()
    keys = _moving(store, 3) + ["a", "b"]
    phase, answered, now, bad = 0, {}, T0, []

    def put(k: str, i: int) -> None:
        try:
            _, winner = store.put_if_absent("t", k, _out(i, now), now)
        except StoreUnavailable:
            return
        if answered.setdefault(k, winner) != winner:
            bad.append(f"{k}: answered {answered[k].digest[:6]} then {winner.digest[:6]}")

    def forward() -> bool:
        nonlocal phase
        if phase + 1 < len(FORWARD) and _step(store, state, FORWARD[phase + 1], now, catch_up):
            phase += 1
            transition(state, FORWARD[phase], now)
            store.set_phase(FORWARD[phase])
            return True
        return False

    for i, (op, arg) in enumerate(ops):
        now += 0.01
        if op == "put":
            put(keys[arg % len(keys)], i)
        elif op == "die":
            _die_writing(shards, store, keys[arg % len(keys)], _out(i, now), now)
        elif op in ("down", "up"):
            shards[f"s{arg % 4}"].available = op == "up"
        else:
            forward()
    for s in shards.values():
        s.available = True
    while FORWARD[phase] != "cleaned":
        now += 0.01
        assert forward(), f"stuck in {FORWARD[phase]}"
    now += 0.01
    for j, k in enumerate(keys):
        put(k, 10_000 + j)
    bad += [f"{k}: {len(_stored(shards, k, now))} outcomes stored" for k in keys if len(_stored(shards, k, now)) > 1]
    return bad


# verify has scanned everything (phase verified), then a put of a moving key dies between the
# old ring's decision and the copy to s3; cutover; cleanup; the key's retry
DIED_AFTER_VERIFY = [("phase", 0), ("phase", 0), ("phase", 0), ("die", 0), ("phase", 0), ("phase", 0)]

OPS = st.lists(st.one_of(
    st.tuples(st.just("put"), st.integers(0, 4)),
    st.tuples(st.just("die"), st.integers(0, 4)),
    st.tuples(st.just("down"), st.integers(0, 3)),
    st.tuples(st.just("up"), st.integers(0, 3)),
    st.tuples(st.just("phase"), st.just(0)),
), max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(DIED_AFTER_VERIFY)
@example([("phase", 0), ("phase", 0), ("phase", 0), ("phase", 0), ("die", 1), ("put", 1), ("phase", 0)])
@given(OPS)
def test_inv_fww_a_process_dying_between_decision_and_copy_after_verify_survives_cleanup(ops):
    """Any interleaving of puts, puts that die between the decision and the mirror write, shard
    outages and the forward phase changes, then cleanup and a retry of every key: no key is
    stored with two outcomes and no answer changes."""
    assert _run(ops) == []


def test_without_the_catch_up_the_died_write_is_decided_a_second_time_after_cleanup():
    """The counterfactual: the same steps with the catch-up skipped break INV-FWW (the hole is real)."""
    bad = _run(DIED_AFTER_VERIFY, catch_up=False)
    assert bad and "2 outcomes stored" in bad[-1], bad
    assert _run(DIED_AFTER_VERIFY) == []


def test_cleanup_is_refused_until_the_catch_up_finished_after_the_settle():
    shards, store, state = _topology()
    key = _moving(store, 1)[0]
    for ph in ("dual_write", "copied", "verified"):
        assert _step(store, state, ph, T0)
        transition(state, ph, T0)
        store.set_phase(ph)
    assert _die_writing(shards, store, key, _out(1, T0), T0)
    assert store.new.get("t", key, T0) is None  # on the old ring only
    with pytest.raises(MigrationError, match="cannot go from verified"):
        transition(state, "cleaned", T0)
    transition(state, "cut_over", T0 + 1)
    store.set_phase("cut_over")
    with pytest.raises(MigrationError, match="catch-up has not finished"):
        transition(state, "cleaned", T0 + 1)
    # the settle: no batch before every server has re-read cut_over
    assert catchup_step(state, store.old, store.new, T0 + 1.5, 50)["settling"]
    assert state["catchup"]["started_at"] is None and state["catchup"]["scanned"] == 0
    copied = 0
    while not state["catchup"]["done"]:
        copied += catchup_step(state, store.old, store.new, T0 + 1 + CATCHUP_SETTLE_S, 50).get("copied", 0)
    assert copied == 1 and store.new.get("t", key, T0 + 4) == _out(1, T0)
    # a rollback through verified and a second cutover need a catch-up of their own
    for ph in ("verified", "cut_over"):
        transition(state, ph, T0 + 5)
    assert not state["catchup"]["done"] and state["catchup"]["after"] == T0 + 5
    with pytest.raises(MigrationError, match="catch-up has not finished"):
        transition(state, "cleaned", T0 + 5)
    with pytest.raises(MigrationError, match="catch-up runs in phase cut_over"):
        catchup_step({**state, "phase": "verified"}, store.old, store.new, T0 + 9, 50)


def test_a_differing_entry_found_by_the_catch_up_refuses_cleanup():
    shards, store, state = _topology()
    key = _moving(store, 1)[0]
    store.old.put_if_absent("t", key, _out(1, T0), T0)
    shards["s3"].inner.put_if_absent("t", key, _out(2, T0), T0)  # a writer that bypassed the migration
    state["phase"] = "verified"
    transition(state, "cut_over", T0)
    while not state["catchup"]["done"]:
        catchup_step(state, store.old, store.new, T0 + CATCHUP_SETTLE_S, 50)
    assert state["catchup"]["different"] == 1 and state["catchup"]["examples"][0]["shard"] == "s3"
    with pytest.raises(MigrationError, match="different outcomes"):
        transition(state, "cleaned", T0 + 3)


def _cli(capsys, *argv) -> tuple[int, dict | None, str]:
    capsys.readouterr()
    rc = main(["dedup-migrate", *argv])
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if out.strip() else None), err


def test_cli_cleanup_needs_the_catchup_step(tmp_path, capsys):
    """``flk dedup-migrate``: cleanup exits 2 before ``catchup``; catchup (after its settle) copies
    the key a dead process left on the old ring only; cleanup then passes."""
    from flk.impl.dedup import open_store

    urls = {n: f"sqlite:///{tmp_path}/{n}.db" for n in ("s0", "s1", "s2", "s3")}
    state = str(tmp_path / "mig.json")
    assert _cli(capsys, "plan", "--state", state, "--old", ",".join(f"{n}={urls[n]}" for n in ("s0", "s1", "s2")),
                "--new", ",".join(f"{n}={u}" for n, u in urls.items()))[0] == 0
    for step in ("dual-write", "copy", "verify", "cutover"):
        assert _cli(capsys, step, "--state", state)[0] == 0, step
    old = ShardedStore({n: open_store(urls[n]) for n in ("s0", "s1", "s2")})
    new = ShardedStore({n: open_store(u) for n, u in urls.items()})
    import time

    now = time.time()
    key = next(p for p in (f"k{i}" for i in range(400)) if new.shard_for("t", p) == "s3")
    old.put_if_absent("t", key, _out(7, now), now)  # decided on the old ring, its copy never written
    rc, _, err = _cli(capsys, "cleanup", "--state", state)
    assert rc == 2 and "catch-up has not finished" in err and "Traceback" not in err
    rc, doc, _ = _cli(capsys, "catchup", "--state", state, "--settle-s", "0.1", "--batch-size", "7")
    assert rc == 0 and doc["done"] and doc["clean"] and doc["catchup"]["copied"] == 1, doc
    assert new.get("t", key, now) == _out(7, now)
    rc, doc, _ = _cli(capsys, "cleanup", "--state", state)
    assert rc == 0 and doc["phase"] == "cleaned"
    old.close()
    new.close()
