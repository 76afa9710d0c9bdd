"""INV-ROUND: ``fmt9`` is the correctly rounded, half-to-even, 9-decimal value.

What is proved, and how
-----------------------
Z3's floating-point theory cannot decide these queries: ``fp.to_real`` /
``fp.to_fp`` from a symbolic real timed out (> 300 s) on a single binade. So a
double is encoded exactly by its fields instead: in binade ``e`` a positive
double is ``M * 2^(e-52)`` with integer ``M`` in ``[2^52, 2^53)`` (linear
integer/real arithmetic, decided in milliseconds). Rounding a real ``t`` to
the nearest double (RNE) is the integer ``M'`` with ``|M'*2^(b-52) - t| <=
2^(b-53)``, ties to even ``M'``, in the binade ``b`` of ``t``. Half-even
9-decimal rounding of ``v`` is the integer ``n`` with ``|v*10^9 - n| < 1/2``
or ``= 1/2`` and ``n`` even. Negative doubles follow from the proved symmetry
lemma ``he(-v) = -he(v)`` (RNE is symmetric by construction).

* ``INV-ROUND.idempotent`` -- for every double ``x`` in the range (quick tier:
  ``|x| < 2^54``, which contains the signable range ``|x| <= 2^53``; full
  tier: every finite double), with ``n = he(x*10^9)`` and ``y`` the double
  nearest ``n/10^9`` (what a verifier parses from the text),
  ``he(y*10^9) = n``: the text parses back to a double whose ``fmt9`` is the
  same text. Binades below ``2^-31`` are one query (``n = 0``). Per binade
  the claim is proved through one of two lemmas: for ``e >= 23`` (ulp >
  1e-9) ``x`` is strictly nearer to ``n/10^9`` than half the gap to either
  neighbouring double, so the parse returns ``x`` itself; below, the parsed
  double lies strictly within half a unit of the 9th decimal of ``n``. Either
  way ``he(y*10^9) = n`` by the (proved) uniqueness of half-even rounding.
* ``INV-ROUND.monotonic`` -- for all reals ``x1 <= x2``: ``he(x1) <= he(x2)``.
* Tie to the code: ``flk.impl.core.canonical.fmt9`` (CPython's correctly rounded
  ``%.9f``) is compared with the spec value (exact ``Fraction`` arithmetic) on
  hard inputs -- exact ties and nearest-to-tie doubles in every
  binade (ties are exactly the odd multiples of 2^-10), and their parse-backs. Any disagreement is a counterexample. This
  cross-check is a test, not a proof of CPython's dtoa.
* ``INV-ROUND.shortcut-c`` / ``INV-ROUND.shortcut-halfup`` -- counterexample
  searches: doubles where ``round(x*1e9)/1e9`` (C ``round``/Go ``math.Round``:
  product rounded to a double, ties away from zero, divided back) or half-up
  on the shortest decimal string (the legacy-0.1 Python agent) print a
  different 9-decimal text than v1. Every Z3 model is confirmed in Python
  before it is reported; the expected result is ``counterexample``.
"""

from __future__ import annotations

import math
import random
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

import z3

from flk.impl.core import canonical

from .result import (
    COUNTEREXAMPLE,
    PROVED,
    UNKNOWN,
    Clock,
    ProofResult,
    check_unsat,
    solver,
)

E9 = 10**9
HALF = Fraction(1, 2)


def _pow2(k: int) -> z3.ArithRef:
    return z3.RealVal(Fraction(2) ** k)


def he_constraint(v: z3.ArithRef, n: z3.ArithRef) -> z3.BoolRef:
    """n is the half-to-even rounding of the real v to an integer."""
    d = v - z3.ToReal(n)
    return z3.Or(z3.And(d > -z3.RealVal(HALF), d < z3.RealVal(HALF)),
                 z3.And(z3.Or(d == z3.RealVal(HALF), d == -z3.RealVal(HALF)), n % 2 == 0))


def rne_double(t: z3.ArithRef, binades: list[int], name: str, precision: int = 53) -> tuple[z3.ArithRef, z3.BoolRef]:
    """(y, constraint): y is the double (or, with precision 24, the float32) nearest the positive real t,
    ties to even, given that t lies in one of ``binades``; t == 0 gives 0."""
    M = z3.Int(f"{name}_M")
    y = z3.Real(name)
    p = precision - 1
    cases = [z3.And(t == 0, y == 0)]
    for b in binades:
        ulp = _pow2(b - p)
        cases.append(z3.And(
            t >= _pow2(b), t < _pow2(b + 1),
            M >= 2**p, M <= 2 ** (p + 1),  # 2^(p+1) = rounded up to the next binade
            y == z3.ToReal(M) * ulp,
            2 * (y - t) <= ulp, 2 * (y - t) >= -ulp,
            z3.Implies(z3.Or(2 * (y - t) == ulp, 2 * (y - t) == -ulp), M % 2 == 0)))
    return y, z3.Or(cases)


def _x_in_binade(e: int, name: str = "x") -> tuple[z3.ArithRef, z3.ArithRef, z3.BoolRef]:
    M = z3.Int(f"{name}_M")
    return z3.ToReal(M) * _pow2(e - 52), M, z3.And(M >= 2**52, M < 2**53)


def _double(M: int, e: int) -> float:
    return math.ldexp(M, e - 52)


def spec_text(x: float) -> str:
    """The v1 text of a double by definition: exact value, half-even to 9 decimals (Fraction arithmetic)."""
    v = Fraction(x) * E9
    n = round(v)  # Fraction.__round__ is half-to-even
    sign = "-" if n < 0 else ""
    q, r = divmod(abs(n), E9)
    return f"{sign}{q}.{r:09d}" if n != 0 else "0.000000000"


# ---------------------------------------------------------------- idempotence
def _binades(tier: str) -> list[int]:
    return list(range(-31, 54)) if tier == "quick" else list(range(-31, 1024))


def prove_idempotent(tier: str = "quick", variant: str = "spec") -> ProofResult:
    """variant "float32_parse" (mutant): the reader parses the text into a float32."""
    clock = Clock()
    pid = "INV-ROUND.idempotent"
    precision = 24 if variant == "float32_parse" else 53
    details: dict = {"variant": variant, "binades": 0, "lemmas": {}}
    scope = SCOPE_IDEM_QUICK if tier == "quick" else SCOPE_IDEM_FULL
    # lemma: symmetry of half-even rounding
    v, n1, n2 = z3.Real("v"), z3.Int("n1"), z3.Int("n2")
    s = solver()
    s.add(he_constraint(v, n1), he_constraint(-v, n2), n2 != -n1)
    details["lemmas"]["symmetry"] = check_unsat(s)[0]
    # lemma: uniqueness of the half-even integer (so "the" rounding is well defined)
    s = solver()
    s.add(he_constraint(v, n1), he_constraint(v, n2), n1 != n2)
    details["lemmas"]["unique"] = check_unsat(s)[0]
    # tiny: 0 <= x < 2^-31 (zero, subnormals, binades < -31) rounds to 0 and parses back to 0
    s = solver()
    s.add(v >= 0, v < _pow2(-31), he_constraint(v * E9, n1), n1 != 0)
    details["lemmas"]["tiny"] = check_unsat(s)[0]
    if any(r != PROVED for r in details["lemmas"].values()):
        return ProofResult(pid, UNKNOWN, clock(), None, scope, details)
    for e in _binades(tier):
        xr, M, dom = _x_in_binade(e)
        n = z3.Int("n")
        t = z3.ToReal(n) / E9
        y, ydef = rne_double(t, [e - 1, e, e + 1], "y", precision)
        s = solver(60_000)
        s.add(dom, he_constraint(xr * E9, n), ydef)
        # Two lemma shapes, both implying he(y*1e9) = n by the uniqueness lemma:
        # binades with ulp > 1e-9 (e >= 23): the text parses back to x itself;
        # finer binades: y lies strictly within 1/2 unit of the 9th decimal of the text.
        if e >= 23 and precision == 53:
            # x is strictly nearer to t than half the gap to either neighbouring double (the gap
            # below 2^e is half as wide), so the double nearest t -- the parse -- is x itself
            s = solver(60_000)
            s.add(dom, he_constraint(xr * E9, n))
            gap = _pow2(e - 52)
            dist2 = 2 * (xr - t)
            s.add(z3.Or(dist2 >= gap, dist2 <= -gap,
                        z3.And(M == 2**52, z3.Or(2 * dist2 >= gap, 2 * dist2 <= -gap))))
            lemma = "reparse-is-x"
        else:
            dd = y * E9 - z3.ToReal(n)
            s.add(z3.Or(dd >= z3.RealVal(HALF), dd <= -z3.RealVal(HALF)))
            lemma = "reparse-within-half-unit"
        status, model = check_unsat(s)
        details["binades"] += 1
        if status != PROVED:
            cex = None
            if model is not None:
                x = _double(model.eval(M).as_long(), e)
                yv = model.eval(y)
                cex = {"x": repr(x), "binade": e, "lemma": lemma, "text": spec_text(x),
                       "reparsed": str(yv), "precision": precision}
                if precision == 53:
                    cex["fmt9(float(fmt9(x)))"] = canonical.fmt9(float(canonical.fmt9(x)))
            return ProofResult(pid, status, clock(), cex, scope, details)
    xc = crosscheck_fmt9(tier)
    details["crosscheck"] = {k: v for k, v in xc.items() if k != "first"}
    if xc["mismatches"]:
        return ProofResult(pid, COUNTEREXAMPLE, clock(), {"fmt9_vs_spec": xc["first"]}, scope, details)
    return ProofResult(pid, PROVED, clock(), None, scope, details)


SCOPE_IDEM_QUICK = ("every double x with |x| < 2^54 (contains the signable range |x| <= 2^53): 85 binades "
                    "[2^-31, 2^54) + one query for |x| < 2^-31, negatives by the proved symmetry lemma: "
                    "he(RNE(he(x*1e9)/1e9)*1e9) = he(x*1e9), i.e. fmt9(float(fmt9(x))) == fmt9(x). Doubles "
                    "encoded by integer significand and exponent (Z3 FP theory timed out). Tie to "
                    "canonical.fmt9: exact ties and nearest-to-tie doubles per binade compared with exact Fraction "
                    "rounding (a cross-check, not a proof of CPython's dtoa).")
SCOPE_IDEM_FULL = SCOPE_IDEM_QUICK.replace("every double x with |x| < 2^54 (contains the signable range |x| <= "
                                           "2^53): 85 binades [2^-31, 2^54)",
                                           "every finite double: all 1055 binades [2^-31, 2^1024)")


def prove_monotonic(tier: str = "quick") -> ProofResult:
    clock = Clock()
    x1, x2 = z3.Reals("x1 x2")
    n1, n2 = z3.Ints("n1 n2")
    s = solver()
    s.add(x1 <= x2, he_constraint(x1 * E9, n1), he_constraint(x2 * E9, n2), n1 > n2)
    status, model = check_unsat(s)
    cex = None if model is None else {"x1": str(model.eval(x1)), "x2": str(model.eval(x2))}
    return ProofResult("INV-ROUND.monotonic", status, clock(), cex,
                       "all reals x1 <= x2 (hence all finite doubles): he(x1*1e9) <= he(x2*1e9).", {})


# ---------------------------------------------------------------- code tie
def _ties_and_near_ties(e: int, rng: random.Random) -> list[float]:
    """Doubles of binade e at or next to a 9-decimal tie. x*1e9 is a half-integer iff
    x = j/2^10 with j odd (2e9 = 2^10 * 5^9), so exact ties exist only for e >= -10;
    plus, for a random half-integer target in the binade, the double nearest it and
    both its neighbours."""
    out: list[float] = []
    if -10 <= e <= 42:
        j = rng.randrange(2 ** (e + 10), 2 ** (e + 11)) | 1
        out.append(math.ldexp(j, -10))
    lo, hi = Fraction(2) ** e * E9, Fraction(2) ** (e + 1) * E9
    k = rng.randrange(math.floor(lo), math.ceil(hi))
    target = float((Fraction(k) + HALF) / E9)
    out += [math.nextafter(target, -math.inf), target, math.nextafter(target, math.inf)]
    return [x for x in out if math.ldexp(1.0, e) <= x and (e == 1023 or x < math.ldexp(1.0, e + 1))]


def crosscheck_fmt9(tier: str) -> dict:
    binades = range(-31, 54) if tier == "quick" else range(-40, 1024)
    cases = mismatches = 0
    first = None
    rng = random.Random(9)
    for e in binades:
        for x in _ties_and_near_ties(e, rng):
            for v in (x, -x, float(canonical.fmt9(x))):
                cases += 1
                got, want = canonical.fmt9(v), spec_text(v)
                if got != want:
                    mismatches += 1
                    first = first or {"x": repr(v), "fmt9": got, "spec": want}
    return {"cases": cases, "mismatches": mismatches, "first": first}


# ---------------------------------------------------------------- shortcuts
def c_round_text(x: float) -> str:
    """The C/Go shortcut: round(x*1e9)/1e9 with ties away from zero, then printed with %.9f."""
    p = x * 1e9
    q = float(Decimal(p).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return canonical.fmt9(q / 1e9)


def halfup_text(x: float) -> str:
    """Half-up on the shortest decimal string (legacy-0.1 agents), as a 9-decimal text."""
    q = Decimal(repr(x)).quantize(Decimal("1e-9"), rounding=ROUND_HALF_UP)
    return canonical.fmt9(float(q))


def search_shortcut_c(tier: str = "quick", variant: str = "c_round", want: int | None = None) -> ProofResult:
    """variant "spec" replaces the shortcut by correct rounding (a control: nothing may be found)."""
    clock = Clock()
    pid = "INV-ROUND.shortcut-c"
    want = want or (3 if tier == "quick" else 20)
    found: list[dict] = []
    tried = 0
    order = [-1, -2, -3, 0, 1, -4, -5, -10, -20, 2, 3, 5, 10, 20, -30] if tier == "quick" else list(range(-31, 54))
    for e in order:
        xr, M, dom = _x_in_binade(e)
        n, m, q = z3.Ints("n m q")
        p, pdef = rne_double(xr * E9, [e + 29, e + 30], "p")
        if variant == "spec":
            qdef = he_constraint(xr * E9, q)
        else:  # round half away from zero of the rounded product (positive)
            d = p - z3.ToReal(q)
            qdef = z3.And(d >= -z3.RealVal(HALF), d < z3.RealVal(HALF))
        z, zdef = rne_double(z3.ToReal(q) / E9, [e - 1, e, e + 1], "z")
        s = solver(5_000 if tier == "quick" else 10_000)
        s.add(dom, pdef, qdef, zdef, he_constraint(xr * E9, n), he_constraint(z * E9, m), m != n)
        blocked = []
        for _ in range(1):  # one model per binade: blocking models makes later queries hard
            if blocked:
                s.add(*blocked[-1:])
            tried += 1
            if s.check() != z3.sat:
                break
            x = _double(s.model().eval(M).as_long(), e)
            blocked.append(M != s.model().eval(M))
            v1, short = canonical.fmt9(x), (c_round_text(x) if variant != "spec" else canonical.fmt9(x))
            if v1 != short:  # confirmed in Python
                found.append({"x": repr(x), "v1": v1, "round(x*1e9)/1e9": short})
            if len(found) >= want:
                break
        if len(found) >= want:
            break
    scope = ("search (not a proof): doubles in binades " + (f"{order}" if tier == "quick" else "[-31, 53]")
             + " where round-half-away(fl(x*1e9))/1e9 printed with 9 decimals differs from v1; each Z3 model "
               "confirmed with canonical.fmt9 in Python.")
    details = {"variant": variant, "queries": tried, "confirmed": len(found)}
    if found:
        return ProofResult(pid, COUNTEREXAMPLE, clock(), {"examples": found}, scope, details)
    return ProofResult(pid, PROVED, clock(), None, scope, details)


def search_shortcut_halfup(tier: str = "quick", want: int | None = None) -> ProofResult:
    clock = Clock()
    pid = "INV-ROUND.shortcut-halfup"
    want = want or (3 if tier == "quick" else 20)
    found: list[dict] = []
    tried = 0
    for b in ([-2, -1, 0, 1, -5] if tier == "quick" else list(range(-30, 16))):
        k, n = z3.Ints("k n")
        t = z3.ToReal(k) / 10**10
        x, xdef = rne_double(t, [b], "x")
        s = solver(30_000)
        # a 10-decimal value whose 10th digit is 5, <= 15 significant digits (so it is the shortest repr
        # candidate), whose nearest double lies below it: half-up goes up, exact half-even goes down
        s.add(k > 0, k < 10**15, k % 10 == 5, xdef, x < t, he_constraint(x * E9, n), n != (k + 5) / 10)
        blocked = []
        for _ in range(want):
            if blocked:
                s.add(blocked[-1])
            tried += 1
            if s.check() != z3.sat:
                break
            kv = s.model().eval(k).as_long()
            blocked.append(k != kv)
            xf = float(Fraction(kv, 10**10))
            v1, legacy = canonical.fmt9(xf), halfup_text(xf)
            if v1 != legacy:  # confirmed in Python
                found.append({"x": repr(xf), "v1": v1, "half-up(repr)": legacy})
            if len(found) >= want:
                break
        if len(found) >= want:
            break
    scope = ("search (not a proof): 10-decimal values ending in 5 whose nearest double lies below them; "
             "half-up on repr(x) vs v1, each Z3 model confirmed in Python.")
    details = {"queries": tried, "confirmed": len(found)}
    if found:
        return ProofResult(pid, COUNTEREXAMPLE, clock(), {"examples": found}, scope, details)
    return ProofResult(pid, PROVED, clock(), None, scope, details)
