"""Planted bug: Math.round(x * 1e9) / 1e9 -- the product is rounded before the decimal rounding."""

import math
import sys

from _planted import run

from flk.impl.core.canonical import finite_number

FLAG = "x1e9-rounding"
CLASS = "x1e9-rounding"  # the diagnosed root cause (flk.conformance.diagnosis)


def fmt9(x, field="value"):
    v = finite_number(x, field)
    if math.isinf(v * 1e9):
        return "Infinity" if v > 0 else "-Infinity"  # what (Math.round(x*1e9)/1e9).toFixed(9) gives
    n = math.floor(v * 1e9 + 0.5)  # bug: x*1e9 is itself rounded, and ties go up
    sign = "-" if n < 0 else ""
    digits = f"{abs(n):010d}"
    return f"{sign}{digits[:-9]}.{digits[-9:]}"


if __name__ == "__main__":
    sys.exit(run(fmt9=fmt9))
