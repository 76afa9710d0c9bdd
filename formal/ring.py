"""INV-RING-OWNER: the consistent-hash ring maps every key to exactly one live shard.

Abstract ring (as :mod:`flk.model.ring`): ``n`` vnode positions ``p_0 <= ... <=
p_{n-1}`` in the u32 space (duplicates allowed), each owned by a shard of the
live set (the ring is built from live shards only). A key at position ``h``
selects index ``i`` iff ``p_{i-1} < h <= p_i`` (with ``p_{-1} = -inf``), or
``i = 0`` when ``h > p_{n-1}`` (wrap-around). For every ring size
``1 <= n <= N`` and every ``h`` Z3 proves exactly one index is selected and
its shard is live. The selection rule is cross-checked against
:func:`flk.model.ring.successor_index` (binary search) on random rings.

Tie to the code: ``flk.impl.dedup.sharded.Ring`` is checked against this model
(``flk.model.ring.successor_index`` / ``owner``) by the sharding tests
(``tests/scaleout/test_sharding.py::test_inv_ring_owner_impl_ring_agrees_with_the_model``).
"""

from __future__ import annotations

import random

import z3

from flk.model.ring import SPACE, successor_index

from .result import Clock, ProofResult, check_unsat, solver

VARIANTS = ("spec", "no_wrap", "inclusive")


def _selected(p: list, h, variant: str) -> list:
    n = len(p)
    sel = []
    for i in range(n):
        if variant == "inclusive":  # mutant: p_{i-1} <= h <= p_i
            lower = z3.BoolVal(True) if i == 0 else z3.ULE(p[i - 1], h)
        else:
            lower = z3.BoolVal(True) if i == 0 else z3.ULT(p[i - 1], h)
        c = z3.And(z3.ULE(h, p[i]), lower)
        if i == 0 and variant != "no_wrap":
            c = z3.Or(c, z3.UGT(h, p[n - 1]))
        sel.append(c)
    return sel


def prove_ring(tier: str = "quick", variant: str = "spec", max_vnodes: int | None = None) -> ProofResult:
    clock = Clock()
    N = max_vnodes or (8 if tier == "quick" else 32)
    shards = 5
    for n in range(1, N + 1):
        p = [z3.BitVec(f"p{i}", 32) for i in range(n)]
        owner = [z3.Int(f"o{i}") for i in range(n)]
        live = [z3.Bool(f"live{s}") for s in range(shards)]
        h = z3.BitVec("h", 32)
        s = solver(60_000)
        for i in range(1, n):
            s.add(z3.ULE(p[i - 1], p[i]))
        for i in range(n):  # built from live shards only
            s.add(z3.Or([z3.And(owner[i] == k, live[k]) for k in range(shards)]))
        sel = _selected(p, h, variant)
        owned_live = [z3.Or([z3.And(owner[i] == k, live[k]) for k in range(shards)]) for i in range(n)]
        # "exactly one, and live" as small queries: none selected (or a selected vnode not live),
        # then every pair of indexes selected together -- each unsat (PbEq over 16 vnodes timed out)
        queries = [z3.Or(z3.Not(z3.Or(sel)), *[z3.And(sel[i], z3.Not(owned_live[i])) for i in range(n)])]
        queries += [z3.And(sel[i], sel[j]) for i in range(n) for j in range(i + 1, n)]
        for q in queries:
            s.push()
            s.add(q)
            status, model = check_unsat(s)
            s.pop()
            if status != "proved":
                cex = None
                if model is not None:
                    cex = {"vnodes": n,
                           "positions": [model.eval(x, model_completion=True).as_long() for x in p],
                           "h": model.eval(h, model_completion=True).as_long(),
                           "selected": [i for i, c in enumerate(sel)
                                        if z3.is_true(model.eval(c, model_completion=True))]}
                return ProofResult("INV-RING-OWNER", status, clock(), cex, _scope(N), {"variant": variant})
    xcheck = crosscheck_model(300 if tier == "quick" else 3000)
    if xcheck["mismatches"]:
        return ProofResult("INV-RING-OWNER", "counterexample", clock(), {"model_vs_z3": xcheck["first_mismatch"]},
                           _scope(N), {"variant": variant, "crosscheck": xcheck})
    return ProofResult("INV-RING-OWNER", "proved", clock(), None, _scope(N),
                       {"variant": variant, "crosscheck": xcheck, "code_tie": "tests/scaleout/test_sharding.py (impl ring == model)"})


def _scope(n: int) -> str:
    return (f"abstract ring, 1..{n} vnodes (sorted u32 positions, duplicates allowed, owners from the live "
            "set), all 2^32 key positions: exactly one vnode selected by successor-with-wrap, owned by a live "
            "shard. Selection rule cross-checked against flk.model.ring.successor_index; flk.impl.dedup.sharded "
            "is tied to that model by tests/scaleout/test_sharding.py.")


def crosscheck_model(n: int, seed: int = 7) -> dict:
    rng = random.Random(seed)
    mismatches, first = 0, None
    for _ in range(n):
        k = rng.randint(1, 6)
        pos = sorted(rng.choice([rng.randrange(SPACE), rng.randrange(4)]) for _ in range(k))
        h = rng.choice([rng.randrange(SPACE), rng.choice(pos), rng.choice(pos) + 1, SPACE - 1, 0]) % SPACE
        sel = _selected([z3.BitVecVal(x, 32) for x in pos], z3.BitVecVal(h, 32), "spec")
        got = [i for i, c in enumerate(sel) if z3.is_true(z3.simplify(c))]
        want = successor_index(pos, h)
        if got != [want]:
            mismatches += 1
            first = first or {"positions": pos, "h": h, "z3": got, "model": want}
    return {"cases": n, "mismatches": mismatches, "first_mismatch": first}
