"""INV-CONVERGENCE: the authoritative-outcome merge is a join-semilattice.

Encodes :func:`flk.model.merge.merge` in Z3 over an option type of outcomes
``(first_seen: Real, region: String, payload_digest: String, status: Int)``
and proves, for all values:

* **semilattice** -- commutative, associative, idempotent, with "not seen" as
  identity; and the same laws for the pointwise join of whole maps
  (arrays ``key -> option outcome``, extensional equality);
* **earliest** -- the merge returns one of its arguments and it is the
  earliest ``(first_seen, region, payload_digest)`` of the two (so a merge
  that is a semilattice but picks the *latest* is caught).

Hence INV-CONVERGENCE: a fold of the merge over any sequence of deliveries
depends only on the *set* delivered -- every region that has seen the same
records holds the same authoritative outcomes (order and re-delivery do not
matter). The encoding is cross-checked against the Python reference on
random outcomes so the two cannot drift.
"""

from __future__ import annotations

import random
from fractions import Fraction

import z3

from flk.model.merge import Outcome, merge

from .result import Clock, ProofResult, check_unsat, solver

OutcomeZ = z3.Datatype("Outcome")
OutcomeZ.declare("none")
OutcomeZ.declare("some", ("first_seen", z3.RealSort()), ("region", z3.StringSort()),
                 ("digest", z3.StringSort()), ("status", z3.IntSort()))
OutcomeZ = OutcomeZ.create()
NONE = OutcomeZ.none
fs, rg, dg, st = OutcomeZ.first_seen, OutcomeZ.region, OutcomeZ.digest, OutcomeZ.status
is_none = OutcomeZ.is_none

VARIANTS = ("spec", "latest", "first_seen_only", "prefer_local")


def _lex_le(a, b) -> z3.BoolRef:
    """(first_seen, region, digest, status)(a) <= ... (b), lexicographically."""
    return z3.Or(
        fs(a) < fs(b),
        z3.And(fs(a) == fs(b), z3.Or(
            rg(a) < rg(b),
            z3.And(rg(a) == rg(b), z3.Or(
                dg(a) < dg(b),
                z3.And(dg(a) == dg(b), st(a) <= st(b)))))))


def merge_z3(a, b, variant: str = "spec"):
    if variant == "spec":
        pick = _lex_le(a, b)
    elif variant == "latest":  # mutant: the latest wins -- still a semilattice
        pick = _lex_le(b, a)
    elif variant == "first_seen_only":  # mutant: ties on first_seen keep the left one
        pick = fs(a) <= fs(b)
    elif variant == "prefer_local":  # mutant: the local (left) outcome always stays
        pick = z3.BoolVal(True)
    else:
        raise ValueError(f"unknown merge variant {variant!r}")
    return z3.If(is_none(a), b, z3.If(is_none(b), a, z3.If(pick, a, b)))


def _fmt_outcome(v) -> dict | None:
    v = z3.simplify(v)
    if z3.is_true(z3.simplify(is_none(v))):
        return None
    return {
        "first_seen": str(z3.simplify(fs(v))),
        "region": z3.simplify(rg(v)).as_string(),
        "payload_digest": z3.simplify(dg(v)).as_string(),
        "status": z3.simplify(st(v)).as_long(),
    }


def prove_semilattice(tier: str = "quick", variant: str = "spec") -> ProofResult:
    clock = Clock()
    a, b, c = z3.Consts("a b c", OutcomeZ)
    m = lambda x, y: merge_z3(x, y, variant)  # noqa: E731
    laws = {
        "commutative": m(a, b) == m(b, a),
        "associative": m(m(a, b), c) == m(a, m(b, c)),
        "idempotent": m(a, a) == a,
        "identity": z3.And(m(a, NONE) == a, m(NONE, a) == a),
    }
    # the pointwise join of maps key -> option outcome
    K = z3.StringSort()
    A, B, C = (z3.Array(n, K, OutcomeZ) for n in "ABC")
    k = z3.String("k")

    def j(x, y):
        return z3.Lambda([k], m(x[k], y[k]))

    laws["map-commutative"] = j(A, B) == j(B, A)
    laws["map-associative"] = j(j(A, B), C) == j(A, j(B, C))
    laws["map-idempotent"] = j(A, A) == A
    details: dict = {"variant": variant, "laws": {}}
    for name, law in laws.items():
        s = solver(30_000)
        s.add(z3.Not(law))
        status, model = check_unsat(s)
        details["laws"][name] = status
        if status != "proved":
            cex = None
            if model is not None and not name.startswith("map"):
                cex = {"law": name, **{n: _fmt_outcome(model.eval(v, model_completion=True))
                                      for n, v in (("a", a), ("b", b), ("c", c))}}
            elif model is not None:
                cex = {"law": name}
            return ProofResult("INV-CONVERGENCE.merge-semilattice", status, clock(), cex,
                               SCOPE_SEMILATTICE, details)
    xcheck = crosscheck_model(200 if tier == "quick" else 2000)
    details["crosscheck"] = xcheck
    if xcheck["mismatches"]:
        return ProofResult("INV-CONVERGENCE.merge-semilattice", "counterexample", clock(),
                           {"model_vs_z3": xcheck["first_mismatch"]}, SCOPE_SEMILATTICE, details)
    return ProofResult("INV-CONVERGENCE.merge-semilattice", "proved", clock(), None,
                       SCOPE_SEMILATTICE, details)


SCOPE_SEMILATTICE = (
    "all option outcomes (first_seen any real, region/digest any string, status any int): merge is "
    "commutative, associative, idempotent with none as identity; the pointwise join of maps likewise "
    "(extensional arrays). Z3 encoding cross-checked against flk.model.merge.merge on random outcomes."
)
SCOPE_EARLIEST = (
    "all outcome pairs: merge(a, b) is a or b, and its (first_seen, region, payload_digest) is <= both "
    "arguments' -- the earliest wins, as SPEC section 11 states."
)


def prove_earliest(tier: str = "quick", variant: str = "spec") -> ProofResult:
    clock = Clock()
    a, b = z3.Consts("a b", OutcomeZ)
    r = merge_z3(a, b, variant)

    def triple_le(x, y):
        return z3.Or(fs(x) < fs(y), z3.And(fs(x) == fs(y), z3.Or(
            rg(x) < rg(y), z3.And(rg(x) == rg(y), dg(x) <= dg(y)))))

    claim = z3.And(z3.Or(r == a, r == b), triple_le(r, a), triple_le(r, b))
    s = solver(30_000)
    s.add(z3.Not(is_none(a)), z3.Not(is_none(b)), z3.Not(claim))
    status, model = check_unsat(s)
    cex = None
    if model is not None:
        cex = {n: _fmt_outcome(model.eval(v, model_completion=True)) for n, v in (("a", a), ("b", b))}
        cex["merged"] = _fmt_outcome(model.eval(r, model_completion=True))
    return ProofResult("INV-CONVERGENCE.merge-earliest", status, clock(), cex, SCOPE_EARLIEST,
                       {"variant": variant})


def _to_z3(o: Outcome | None):
    if o is None:
        return NONE
    return OutcomeZ.some(z3.RealVal(Fraction(o.first_seen)), z3.StringVal(o.region),
                         z3.StringVal(o.payload_digest), z3.IntVal(o.status))


def crosscheck_model(n: int, seed: int = 10) -> dict:
    """Evaluate the Z3 encoding on random concrete outcomes; compare with the Python merge."""
    rng = random.Random(seed)

    def rand() -> Outcome | None:
        if rng.random() < 0.1:
            return None
        return Outcome(rng.choice([0.5, 1.0, 1.0 + 2**-40, 2.0, 1e9]), rng.choice(["ap", "eu", "us", "eu-2"]),
                       rng.choice(["aa", "ab", "b", ""]), rng.choice([200, 202]))

    mismatches = 0
    first = None
    for _ in range(n):
        x, y = rand(), rand()
        got = _fmt_outcome(merge_z3(_to_z3(x), _to_z3(y)))
        want = merge(x, y)
        want_d = None if want is None else {
            "first_seen": str(z3.simplify(z3.RealVal(Fraction(want.first_seen)))),
            "region": want.region, "payload_digest": want.payload_digest, "status": want.status}
        if got != want_d:
            mismatches += 1
            first = first or {"a": repr(x), "b": repr(y), "z3": got, "model": repr(want)}
    return {"cases": n, "mismatches": mismatches, "first_mismatch": first}
