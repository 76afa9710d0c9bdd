"""The poison-record replay policy (``flk.impl.verifier.poison.PoisonPolicy``) against a
small model of its rules, over every mix of records (Hypothesis): a record that raises
is quarantined and the replay goes on; a store that does not answer pings stops the
replay; a record refused again while the store stored others is quarantined, and if
the store stored nothing the replay stops instead. Both replays use it: start-up
replay (``ServerPipeline._replay_all``) and cross-region replay
(``ReplayApplier.apply_isolating``)."""

from __future__ import annotations

import inspect

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flk.impl.dedup import StoreUnavailable
from flk.impl.verifier.poison import DONE, REFUSED, STORED, PoisonPolicy

KINDS = ["new", "dup", "poison", "refuse_once", "refuse_always"]


def replay(kinds: list[str], up: bool, raise_refusals: bool, refusals_are_poison: bool = True):
    attempts: dict[int, int] = {}
    quarantined: list[int] = []

    def one(item: int) -> str:
        kind = kinds[item]
        attempts[item] = attempts.get(item, 0) + 1
        if kind == "poison":
            raise RuntimeError("planted")
        if kind == "refuse_always" or (kind == "refuse_once" and attempts[item] == 1):
            if raise_refusals:
                raise StoreUnavailable("refused")
            return REFUSED
        return STORED if kind in ("new", "refuse_once") else DONE

    def batch(items) -> list[str]:
        if any(kinds[i] == "poison" for i in items):
            raise RuntimeError("planted")
        if raise_refusals and any(kinds[i].startswith("refuse") for i in items):
            raise StoreUnavailable("refused")
        return [one(i) for i in items]

    policy = PoisonPolicy(lambda: up, lambda item, exc: quarantined.append(item), refusals_are_poison)
    for start in range(0, len(kinds), 3):
        policy.run(list(range(start, min(start + 3, len(kinds)))), batch, one)
    policy.finish(one)
    return sorted(quarantined)


@given(kinds=st.lists(st.sampled_from(KINDS), max_size=9), up=st.booleans(), raise_refusals=st.booleans())
def test_the_policy_follows_its_rules_for_every_mix_of_records(kinds, up, raise_refusals) -> None:
    refusals = any(k.startswith("refuse") for k in kinds)
    stored = any(k in ("new", "refuse_once") for k in kinds)
    always = [i for i, k in enumerate(kinds) if k == "refuse_always"]
    poison = [i for i, k in enumerate(kinds) if k == "poison"]
    if refusals and not up:
        with pytest.raises(StoreUnavailable):
            replay(kinds, up, raise_refusals)
    elif always and not stored:
        with pytest.raises(StoreUnavailable):
            replay(kinds, up, raise_refusals)
    else:
        assert replay(kinds, up, raise_refusals) == sorted(poison + always)


@given(kinds=st.lists(st.sampled_from(KINDS), max_size=9))
def test_without_refusals_as_poison_every_refusal_is_an_outage(kinds) -> None:
    if any(k.startswith("refuse") for k in kinds):
        with pytest.raises(StoreUnavailable):
            replay(kinds, True, True, refusals_are_poison=False)
    else:
        assert replay(kinds, True, True, refusals_are_poison=False) == [i for i, k in enumerate(kinds)
                                                                         if k == "poison"]


def test_start_up_and_cross_region_replay_use_the_one_policy() -> None:
    from flk.impl.replication.applying import ReplayApplier
    from flk.impl.server.pipeline import ServerPipeline

    for fn in (ServerPipeline._replay_all, ReplayApplier.apply_isolating):
        assert "PoisonPolicy(" in inspect.getsource(fn)
