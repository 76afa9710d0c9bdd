"""The poison-record replay policy (``flk.impl.verifier.poison.PoisonPolicy``, SPEC.md
section 11.2 "Poison records") over every sequence of per-record outcomes (Hypothesis),
driven as its callers drive it: a replay that stops at a store refusal is run again
later from where it stopped (the reader's next poll, the server's next start).

* a record the store refuses only transiently -- for any number of attempts, while
  the store answers every ping (a sharded store holding one shard out) -- is never
  quarantined and is applied once the store takes it;
* a record that fails deterministically (processing raises; the store rejects its key
  as invalid) is quarantined at its first attempt alone, and the records behind it
  are applied.

Both replays use the one policy: start-up replay (``ServerPipeline._replay_all``) and
cross-region replay (``ReplayApplier.apply_isolating``)."""

from __future__ import annotations

import inspect

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from flk.impl.dedup import StoreUnavailable
from flk.impl.verifier.poison import DONE, POISON, REFUSED, STORED, PoisonPolicy

# ("ok", 0) | ("dup", 0) | ("transient", k: refused on its first k attempts) | ("bug", 0) | ("invalid", 0)
OUTCOMES = st.one_of(st.tuples(st.sampled_from(["ok", "dup", "bug", "invalid"]), st.just(0)),
                     st.tuples(st.just("transient"), st.integers(1, 12)))
DETERMINISTIC = ("bug", "invalid")


class Store:
    """Per-record outcomes; answers every ping (the condition the old 5-refusal rule misread)."""

    def __init__(self, outcomes, answer_503: bool) -> None:
        self.outcomes, self.answer_503 = outcomes, answer_503
        self.left = {i: k for i, (kind, k) in enumerate(outcomes) if kind == "transient"}
        self.applied: set[int] = set()

    def one(self, i: int) -> str:
        kind, _ = self.outcomes[i]
        if kind == "bug":
            raise RuntimeError("planted: processing this record raises")
        if kind == "invalid":
            raise ValueError("the store rejects this record's key")
        if self.left.get(i, 0) > 0:
            self.left[i] -= 1
            if self.answer_503:
                return REFUSED
            raise StoreUnavailable("shard s0 is down")
        if kind == "dup" or i in self.applied:
            self.applied.add(i)
            return DONE
        self.applied.add(i)
        return STORED

    def batch(self, items) -> list[str]:
        if any(self.outcomes[i][0] in DETERMINISTIC for i in items):
            raise RuntimeError("planted: the batch raises")
        refused = [i for i in items if self.left.get(i, 0) > 0]
        if refused and not self.answer_503:
            for i in refused:
                self.left[i] -= 1
            raise StoreUnavailable("shard s0 is down")  # one transaction: nothing of it applied
        return [self.one(i) for i in items]


def drive(outcomes, chunk: int, answer_503: bool):
    """Replay every record, retrying from the stopped chunk after each outage as a reader does;
    returns (records quarantined, records applied, replays run)."""
    store = Store(outcomes, answer_503)
    quarantined: list[int] = []
    policy = PoisonPolicy(lambda: True, lambda item, exc: quarantined.append(item), what="replay")
    start, runs = 0, 0
    budget = len(outcomes) + sum(k for _, k in outcomes) + 1
    while start < len(outcomes):
        runs += 1
        assert runs <= budget, "the replay made no progress"
        items = list(range(start, min(start + chunk, len(outcomes))))
        try:
            results = policy.run(items, store.batch, store.one)
        except StoreUnavailable as exc:
            assert "never quarantined" in str(exc) or "shard s0" in str(exc)
            continue  # the next poll replays the chunk again (a no-op for what it applied)
        assert all(r in (STORED, DONE, POISON) for r in results)
        start = items[-1] + 1
    return quarantined, store.applied, runs


@given(outcomes=st.lists(OUTCOMES, max_size=10), chunk=st.integers(1, 4), answer_503=st.booleans())
@example(outcomes=[("ok", 0), ("transient", 7), ("ok", 0)], chunk=3, answer_503=False)
def test_transient_refusals_are_never_poison_and_deterministic_failures_always_are(outcomes, chunk,
                                                                                    answer_503) -> None:
    quarantined, applied, _ = drive(outcomes, chunk, answer_503)
    deterministic = {i for i, (kind, _) in enumerate(outcomes) if kind in DETERMINISTIC}
    # (1) a record failing only transiently is never quarantined, and is applied once the store returns
    assert set(quarantined) == deterministic
    assert applied == set(range(len(outcomes))) - deterministic
    # (2) each deterministic failure is quarantined once per replay of its chunk, never blocking the ones behind
    assert len(quarantined) >= len(deterministic)


@given(outcomes=st.lists(OUTCOMES, min_size=1, max_size=8), answer_503=st.booleans())
def test_a_refusal_stops_the_replay_before_anything_is_quarantined_for_it(outcomes, answer_503) -> None:
    """One run: a refused record stops it with StoreUnavailable, whatever the ping says."""
    store = Store(outcomes, answer_503)
    quarantined: list[int] = []
    policy = PoisonPolicy(lambda: True, lambda item, exc: quarantined.append(item))
    items = list(range(len(outcomes)))
    if any(kind == "transient" for kind, _ in outcomes):
        with pytest.raises(StoreUnavailable):
            policy.run(items, store.batch, store.one)
    else:
        policy.run(items, store.batch, store.one)
    assert all(outcomes[i][0] in DETERMINISTIC for i in quarantined)
    assert policy.poisoned == len(quarantined)


def test_the_outage_message_says_whether_the_store_answers_pings() -> None:
    for up, says in ((True, "it answers pings"), (False, "it does not answer pings")):
        policy = PoisonPolicy(lambda up=up: up, lambda item, exc: None, what="WAL replay")
        with pytest.raises(StoreUnavailable, match=f"unavailable during WAL replay \\({says}"):
            policy.run([0], lambda items: [REFUSED], lambda item: REFUSED)


def test_start_up_and_cross_region_replay_use_the_one_policy() -> None:
    from flk.impl.replication.applying import ReplayApplier
    from flk.impl.server.pipeline import ServerPipeline

    for fn in (ServerPipeline._replay_all, ReplayApplier.apply_isolating):
        assert "PoisonPolicy(" in inspect.getsource(fn)
