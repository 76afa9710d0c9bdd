"""The batched store driver keeps first-write-wins exactly (real SQLite and memory stores)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk.impl.dedup import StoredOutcome, StoreUnavailable, open_store
from flk.impl.server.batching import StoreBatcher
from flk.impl.verifier.admission import OPEN, CircuitBreaker

KEYS = [("t1", "a"), ("t1", "b"), ("t2", "a")]


def outcome(i: int) -> StoredOutcome:
    return StoredOutcome(f"{i:064x}", 200 if i % 2 else 202, b'{"n":%d}' % i, 1000.0 + i, "r", "1")


ops = st.lists(st.tuples(st.sampled_from(["get", "put"]), st.integers(0, len(KEYS) - 1), st.integers(0, 50)),
               min_size=1, max_size=40)


async def _run(store, plan, max_batch: int, inline: bool = False):
    b = StoreBatcher(store, CircuitBreaker(), max_batch=max_batch, inline=inline)

    async def one(op, k, v):
        t, p = KEYS[k]
        if op == "get":
            return await b.get(t, p)
        return await b.put(t, p, outcome(v))

    try:
        res = await asyncio.gather(*(one(*x) for x in plan))
    finally:
        b.close()
    return res, b.batches


@pytest.mark.parametrize("kind", ["memory", "memory-inline", "sqlite"])
@given(plan=ops, max_batch=st.integers(1, 8))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_inv_fww_batched_driver_one_winner_per_key_and_losers_see_it(tmp_path_factory, kind, plan, max_batch):
    path = tmp_path_factory.mktemp("b") / "d.sqlite3"
    store = open_store("sqlite:///" + str(path)) if kind == "sqlite" else open_store("memory")
    try:
        res, batches = asyncio.run(_run(store, plan, max_batch, inline=kind == "memory-inline"))
        winners: dict = {}
        for (op, k, v), r in zip(plan, res, strict=True):
            if op == "put":
                stored, winner = r
                if stored:
                    assert KEYS[k] not in winners, "INV-FWW: two puts won the same key"
                    assert winner == outcome(v)
                    winners[KEYS[k]] = winner
        for (op, k, _), r in zip(plan, res, strict=True):
            if op == "put" and not r[0]:
                assert r[1] == winners[KEYS[k]]  # a loser is told the winner, byte for byte
            if op == "get" and r is not None:
                assert r == winners[KEYS[k]]
        for key, w in winners.items():
            assert store.get(*key, 2000.0) == w
        assert batches <= len(plan)
    finally:
        store.close()


def test_failures_open_the_breaker_and_fail_every_waiter_closed(tmp_path) -> None:
    store = open_store("sqlite:///" + str(tmp_path / "d.sqlite3"))
    store.close()  # a closed store fails every call: the driver must answer StoreUnavailable

    async def go():
        br = CircuitBreaker(failure_threshold=1, open_s=60)
        b = StoreBatcher(store, br)
        res = await asyncio.gather(*(b.get("t", str(i)) for i in range(5)), return_exceptions=True)
        assert br.state == OPEN and b.breaker_rejected == 0  # one failed batch opened it
        res += await asyncio.gather(b.get("t", "later"), return_exceptions=True)  # refused, not called
        b.close()
        return res, br, b

    res, br, b = asyncio.run(go())
    assert all(isinstance(r, StoreUnavailable) for r in res)
    assert br.state == OPEN and b.breaker_rejected >= 1
