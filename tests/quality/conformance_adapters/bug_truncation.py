"""Planted bug: the digits after the ninth are dropped (truncation toward zero) instead of rounded."""

import sys
from decimal import ROUND_DOWN, Context, Decimal, localcontext

from _planted import run

from flk.impl.core.canonical import finite_number

FLAG = "truncation"
CLASS = "truncation"


def fmt9(x, field="value"):
    v = finite_number(x, field)
    with localcontext(Context(prec=800, Emax=999, Emin=-999)):
        text = format(Decimal(v).quantize(Decimal("1e-9"), rounding=ROUND_DOWN), "f")  # bug
    return "0.000000000" if text == "-0.000000000" else text


if __name__ == "__main__":
    sys.exit(run(fmt9=fmt9))
