"""Planted bug: JavaScript's x.toFixed(9) below 1e21 -- the exact value, but ties rounded away from zero."""

import sys
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext

from _planted import run

from flk.impl.core.canonical import finite_number

FLAG = "round-tie"
CLASS = "round-tie"


def fmt9(x, field="value"):
    v = finite_number(x, field)
    with localcontext(Context(prec=800, Emax=999, Emin=-999)):
        text = format(Decimal(v).quantize(Decimal("1e-9"), rounding=ROUND_HALF_UP), "f")  # bug: not half-even
    return "0.000000000" if text == "-0.000000000" else text


if __name__ == "__main__":
    sys.exit(run(fmt9=fmt9))
