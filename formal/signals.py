"""INV-BUDGET-BOUNDS and INV-REGIME-PARTITION, tied to ``flk.impl.core.signals``.

The constants are read from :class:`flk.impl.core.signals.BudgetParams` and
:class:`flk.impl.core.signals.RegimeThresholds` (defaults, or the ones passed in),
never copied, and each Z3 encoding is evaluated on random points and compared
with ``signals.budget`` / ``signals.regime`` -- bit for bit for the
floating-point encoding -- so a change of the code or of the constants that
the encoding does not follow fails the proof.

* budget over **reals**: ``clamp(base + alpha*(1-r) + beta*max(0, D-D0) + gamma*coh, 0, 1)``
  is in [0, 1] for all real inputs, non-decreasing in coh, non-increasing in r
  -- for the default constants, and also for *all* constants with
  alpha, beta, gamma >= 0 (nonlinear real arithmetic).
* budget over **binary64**: the same expression evaluated as Python does
  (left to right, each operation rounded to nearest-even, Python's
  ``max``/``min`` semantics), for every finite D and every coh, r in [0, 1]
  (the domain ``signals.budget`` accepts): result in [0, 1] and never NaN.
  Monotonicity over binary64 is *not* proved (Z3's bit-blasted FP times out
  even on a single monotone-addition lemma); see ``SCOPE_FP``.
* regime: the spec's three predicates (sticky: coh >= sc and D <= sd;
  non_sticky: D >= nd; mixed: neither) hold for exactly one regime at every
  point -- over reals, hence at every pair of doubles.
"""

from __future__ import annotations

import random
from fractions import Fraction

import z3

from flk.impl.core import signals

from .result import Clock, ProofResult, check_unsat, fp_value, solver

F64 = z3.Float64()
RNE = z3.RNE()


def _rv(x: float) -> z3.ArithRef:
    return z3.RealVal(Fraction(x))


def _fv(x: float) -> z3.FPRef:
    return z3.FPVal(x, F64)


def budget_real(d, c, r, p: signals.BudgetParams, clamp: bool = True):
    v = _rv(p.base) + _rv(p.alpha) * (1 - r) + _rv(p.beta) * z3.If(d - _rv(p.d0) > 0, d - _rv(p.d0), 0) \
        + _rv(p.gamma) * c
    if not clamp:
        return v
    lo = z3.If(v > 0, v, 0)
    return z3.If(lo < 1, lo, 1)


def _py_max(a, b):
    """Python's max(a, b): a unless b > a."""
    return z3.If(z3.fpGT(b, a), b, a)


def _py_min(a, b):
    """Python's min(a, b): a unless b < a."""
    return z3.If(z3.fpLT(b, a), b, a)


def budget_fp(d, c, r, p: signals.BudgetParams, clamp: bool = True):
    t1 = z3.fpMul(RNE, _fv(p.alpha), z3.fpSub(RNE, _fv(1.0), r))
    t2 = z3.fpMul(RNE, _fv(p.beta), _py_max(_fv(0.0), z3.fpSub(RNE, d, _fv(p.d0))))
    t3 = z3.fpMul(RNE, _fv(p.gamma), c)
    v = z3.fpAdd(RNE, z3.fpAdd(RNE, z3.fpAdd(RNE, _fv(p.base), t1), t2), t3)
    if not clamp:
        return v
    return _py_min(_fv(1.0), _py_max(_fv(0.0), v))


SCOPE_REAL = ("budget over reals, all real D, coh, r: in [0,1], non-decreasing in coh, non-increasing in r; "
              "for the given BudgetParams and for all params with alpha, beta, gamma >= 0; "
              "encoding cross-checked against signals.budget on random points (|diff| <= 1e-12).")
SCOPE_FP = ("budget over binary64 as Python evaluates it (RNE, left to right, max/min semantics), all finite "
            "D and all coh, r in [0, 1] (the domain signals.budget accepts): result in [0,1] and not NaN; "
            "encoding cross-checked bit for bit against signals.budget on random points. NOT proved over "
            "binary64: monotonicity (Z3 times out even on one monotone fpAdd lemma; it is proved over reals "
            "and follows from the monotonicity of correctly rounded IEEE operations, which is not re-proved here).")
SCOPE_REGIME = ("all real (hence all double) D, coh: exactly one of sticky / mixed / non_sticky holds "
                "for the given RegimeThresholds; encoding cross-checked against signals.regime.")


def prove_budget_real(tier: str = "quick", params: signals.BudgetParams | None = None,
                      clamp: bool = True) -> ProofResult:
    clock = Clock()
    p = params or signals.DEFAULT_BUDGET
    d, c, r, c2, r2 = z3.Reals("D coh r coh2 r2")
    b = budget_real(d, c, r, p, clamp)
    claims = {
        "bounds": z3.And(b >= 0, b <= 1),
        "monotone-coh": z3.Implies(c <= c2, b <= budget_real(d, c2, r, p, clamp)),
        "monotone-r": z3.Implies(r <= r2, b >= budget_real(d, c, r2, p, clamp)),
    }
    details: dict = {"params": p.__dict__, "clamp": clamp, "claims": {}}
    for name, claim in claims.items():
        s = solver(30_000)
        s.add(z3.Not(claim))
        status, model = check_unsat(s)
        details["claims"][name] = status
        if status != "proved":
            cex = None
            if model is not None:
                cex = {"claim": name, **{str(v): str(model.eval(v, model_completion=True))
                                         for v in (d, c, r, c2, r2)}}
            return ProofResult("INV-BUDGET-BOUNDS.real", status, clock(), cex, SCOPE_REAL, details)
    # all nonnegative weights (nonlinear)
    base, alpha, beta, gamma, d0 = z3.Reals("base alpha beta gamma d0")
    gen = signals.BudgetParams  # only to name the fields
    del gen

    def bsym(dd, cc, rr):
        v = base + alpha * (1 - rr) + beta * z3.If(dd - d0 > 0, dd - d0, 0) + gamma * cc
        lo = z3.If(v > 0, v, 0)
        return z3.If(lo < 1, lo, 1)

    s = solver(60_000)
    s.add(alpha >= 0, beta >= 0, gamma >= 0)
    bs = bsym(d, c, r)
    s.add(z3.Not(z3.And(bs >= 0, bs <= 1, z3.Implies(c <= c2, bs <= bsym(d, c2, r)),
                        z3.Implies(r <= r2, bs >= bsym(d, c, r2)))))
    status, _ = check_unsat(s)
    details["claims"]["all-nonnegative-params"] = status
    if status != "proved":
        return ProofResult("INV-BUDGET-BOUNDS.real", status, clock(), None, SCOPE_REAL, details)
    xc = crosscheck_budget(p, 300 if tier == "quick" else 3000, exact=False, clamp=clamp)
    details["crosscheck"] = xc
    if xc["mismatches"]:
        return ProofResult("INV-BUDGET-BOUNDS.real", "counterexample", clock(), {"code_vs_z3": xc["first"]},
                           SCOPE_REAL, details)
    return ProofResult("INV-BUDGET-BOUNDS.real", "proved", clock(), None, SCOPE_REAL, details)


def prove_budget_fp(tier: str = "quick", params: signals.BudgetParams | None = None,
                    clamp: bool = True, claims: tuple[str, ...] | None = None) -> ProofResult:
    clock = Clock()
    p = params or signals.DEFAULT_BUDGET
    d, c, r, c2, r2 = (z3.FP(n, F64) for n in ("D", "coh", "r", "coh2", "r2"))
    finite = [z3.Not(z3.Or(z3.fpIsNaN(d), z3.fpIsInf(d)))]
    finite += [z3.And(z3.fpLEQ(_fv(0.0), x), z3.fpLEQ(x, _fv(1.0))) for x in (c, r, c2, r2)]
    b = budget_fp(d, c, r, p, clamp)
    all_claims = {
        "bounds": z3.And(z3.Not(z3.fpIsNaN(b)), z3.fpLEQ(_fv(0.0), b), z3.fpLEQ(b, _fv(1.0))),
        "monotone-coh": z3.Implies(z3.fpLEQ(c, c2), z3.fpLEQ(b, budget_fp(d, c2, r, p, clamp))),
        "monotone-r": z3.Implies(z3.fpLEQ(r, r2), z3.fpGEQ(b, budget_fp(d, c, r2, p, clamp))),
    }
    wanted = claims or ("bounds",)
    details: dict = {"params": p.__dict__, "clamp": clamp, "claims": {}}
    for name in wanted:
        s = solver(240_000)
        s.add(*finite)
        s.add(z3.Not(all_claims[name]))
        status, model = check_unsat(s)
        details["claims"][name] = status
        if status != "proved":
            cex = None
            if model is not None:
                vals = {n: fp_value(model, x) for n, x in (("D", d), ("coh", c), ("r", r))}
                cex = {"claim": name, **{k: repr(v) for k, v in vals.items()},
                       "signals.budget": repr(signals.budget(vals["D"], vals["coh"], vals["r"], p))
                       if clamp else None}
            return ProofResult("INV-BUDGET-BOUNDS.float", status, clock(), cex, SCOPE_FP, details)
    xc = crosscheck_budget(p, 200 if tier == "quick" else 2000, exact=True, clamp=clamp)
    details["crosscheck"] = xc
    if xc["mismatches"]:
        return ProofResult("INV-BUDGET-BOUNDS.float", "counterexample", clock(), {"code_vs_z3": xc["first"]},
                           SCOPE_FP, details)
    return ProofResult("INV-BUDGET-BOUNDS.float", "proved", clock(), None, SCOPE_FP, details)


def _rand_point(rng: random.Random) -> tuple[float, float, float]:
    """D any finite double (mostly near the thresholds); coh and r in [0, 1] as signals requires."""
    k = rng.random()
    if k < 0.6:
        d = rng.uniform(-0.5, 3.5)
    elif k < 0.8:
        d = rng.uniform(-1e6, 1e6)
    else:
        d = rng.choice([0.0, -0.0, 1.0, 2.2, 1.5, 2.6, 0.7, 1e308, -1e308, 5e-324])

    def unit() -> float:
        return rng.random() if rng.random() < 0.8 else rng.choice([0.0, -0.0, 1.0, 5e-324, 0.7])

    return d, unit(), unit()


def crosscheck_budget(p: signals.BudgetParams, n: int, exact: bool, clamp: bool = True, seed: int = 3) -> dict:
    rng = random.Random(seed)
    mismatches, first = 0, None
    for _ in range(n):
        d, c, r = _rand_point(rng)
        want = signals.budget(d, c, r, p)
        if not clamp:
            want = p.base + p.alpha * (1.0 - r) + p.beta * max(0.0, d - p.d0) + p.gamma * c
        if exact:
            e = z3.simplify(budget_fp(_fv(d), _fv(c), _fv(r), p, clamp))
            from .result import _fp_to_float
            got = _fp_to_float(e)
            ok = got == want or (got != got and want != want)
        else:
            e = z3.simplify(budget_real(_rv(d), _rv(c), _rv(r), p, clamp))
            got = float(e.as_fraction())
            ok = abs(got - want) <= 1e-12 * max(1.0, abs(want))
        if not ok:
            mismatches += 1
            first = first or {"D": d, "coh": c, "r": r, "z3": got, "signals.budget": want}
    return {"cases": n, "mismatches": mismatches, "first": first}


def regime_preds(d, c, t: signals.RegimeThresholds):
    sticky = z3.And(c >= _rv(t.sticky_coh), d <= _rv(t.sticky_d_max))
    non_sticky = d >= _rv(t.non_sticky_d_min)
    mixed = z3.And(z3.Not(sticky), z3.Not(non_sticky))
    return {"sticky": sticky, "non_sticky": non_sticky, "mixed": mixed}


def prove_regime(tier: str = "quick", thresholds: signals.RegimeThresholds | None = None) -> ProofResult:
    clock = Clock()
    t = thresholds or signals.DEFAULT_REGIME
    d, c = z3.Reals("D coh")
    preds = regime_preds(d, c, t)
    s = solver(30_000)
    s.add(z3.Not(z3.PbEq([(v, 1) for v in preds.values()], 1)))
    status, model = check_unsat(s)
    details: dict = {"thresholds": t.__dict__}
    if status != "proved":
        cex = None
        if model is not None:
            dv, cv = (model.eval(v, model_completion=True) for v in (d, c))
            cex = {"D": str(dv), "coh": str(cv),
                   "regimes": [k for k, v in preds.items() if z3.is_true(model.eval(v, model_completion=True))]}
        return ProofResult("INV-REGIME-PARTITION", status, clock(), cex, SCOPE_REGIME, details)
    rng = random.Random(5)
    mismatches, first = 0, None
    n = 500 if tier == "quick" else 5000
    for _ in range(n):
        dv = rng.choice([rng.uniform(0, 4), t.sticky_d_max, t.non_sticky_d_min, rng.uniform(-1e3, 1e3)])
        cv = rng.choice([rng.uniform(0, 1), t.sticky_coh, 0.0, 1.0])
        p = regime_preds(_rv(dv), _rv(cv), t)
        got = [k for k, v in p.items() if z3.is_true(z3.simplify(v))]
        want = signals.regime(dv, cv, t)
        if got != [want]:
            mismatches += 1
            first = first or {"D": dv, "coh": cv, "z3": got, "signals.regime": want}
    details["crosscheck"] = {"cases": n, "mismatches": mismatches, "first": first}
    if mismatches:
        return ProofResult("INV-REGIME-PARTITION", "counterexample", clock(), {"code_vs_z3": first}, SCOPE_REGIME,
                           details)
    return ProofResult("INV-REGIME-PARTITION", "proved", clock(), None, SCOPE_REGIME, details)
