"""Planted bug: Python's round(x * 1e9) (half-to-even on the already rounded product)."""

import math
import sys

from _planted import run

from flk.impl.core.canonical import finite_number

FLAG = "x1e9-rounding"
CLASS = "x1e9-rounding"


def fmt9(x, field="value"):
    product = finite_number(x, field) * 1e9
    if math.isinf(product):
        raise OverflowError("the product overflows")  # round(inf) raises in Python
    n = round(product)  # bug: the product is rounded, not the exact value
    digits = f"{abs(n):010d}"
    text = f"{'-' if n < 0 else ''}{digits[:-9]}.{digits[-9:]}"
    return "0.000000000" if text == "-0.000000000" else text


if __name__ == "__main__":
    sys.exit(run(fmt9=fmt9))
