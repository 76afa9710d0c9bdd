"""The structured result every proof returns, and the small helpers they share.

A proof is a function ``(tier) -> ProofResult``. ``status`` is ``proved``
(the negated claim is unsat), ``counterexample`` (Z3 or a cross-check found a
concrete input; it is in ``counterexample``, already confirmed against the
Python code where the proof says so) or ``unknown`` (timeout / incomplete).
``scope`` says exactly what was proved -- ranges, bounds, assumptions.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import z3

PROVED = "proved"
COUNTEREXAMPLE = "counterexample"
UNKNOWN = "unknown"
STATUSES = (PROVED, COUNTEREXAMPLE, UNKNOWN)


@dataclass
class ProofResult:
    id: str
    status: str
    seconds: float
    counterexample: dict[str, Any] | None = None
    scope: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Clock:
    """CPU seconds of one proof, this process's (a driver concern: proofs are not protocol
    logic). CPU, not wall time, so that a proof's budget says whether the proof blew up,
    not how loaded a shared machine was while it ran."""

    def __init__(self) -> None:
        self.t0 = time.process_time()

    def __call__(self) -> float:
        return round(time.process_time() - self.t0, 3)


def check_unsat(solver: z3.Solver) -> tuple[str, z3.ModelRef | None]:
    """(status, model): proved if unsat, counterexample (with the model) if sat, else unknown."""
    r = solver.check()
    if r == z3.unsat:
        return PROVED, None
    if r == z3.sat:
        return COUNTEREXAMPLE, solver.model()
    return UNKNOWN, None


def solver(timeout_ms: int = 60_000) -> z3.Solver:
    s = z3.Solver()
    s.set("timeout", timeout_ms)
    s.set("random_seed", 0)  # deterministic search, whatever ran before in this process
    return s


def py_value(v: z3.ExprRef) -> Any:
    """A concrete Z3 value as a Python value (int, Fraction-as-string, bool, str)."""
    if z3.is_int_value(v):
        return v.as_long()
    if z3.is_rational_value(v):
        return str(v.as_fraction())
    if z3.is_true(v):
        return True
    if z3.is_false(v):
        return False
    if z3.is_string_value(v):
        return v.as_string()
    if isinstance(v, z3.FPNumRef):
        return _fp_to_float(v)
    return str(v)


def _fp_to_float(v: z3.FPNumRef) -> float:
    import struct

    bits = z3.simplify(z3.fpToIEEEBV(v)).as_long()
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


def fp_value(model: z3.ModelRef, x: z3.ExprRef) -> float:
    return _fp_to_float(model.eval(x, model_completion=True))
