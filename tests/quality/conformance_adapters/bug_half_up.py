"""Planted bug: round half-up on the shortest decimal string (Python Decimal(repr(x)), JS toFixed habits)."""

import sys
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext

from _planted import run

from flk.impl.core.canonical import finite_number

FLAG = "half-up"
CLASS = "half-up"  # the diagnosed root cause (flk.conformance.diagnosis)


def fmt9(x, field="value"):
    v = finite_number(x, field)
    with localcontext(Context(prec=800)):
        q = Decimal(repr(v)).quantize(Decimal("1e-9"), rounding=ROUND_HALF_UP)  # bug
    text = format(q, "f")
    return "0.000000000" if text == "-0.000000000" else text


if __name__ == "__main__":
    sys.exit(run(fmt9=fmt9))
