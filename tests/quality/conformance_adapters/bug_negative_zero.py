"""Planted bug: negative zero kept ("-0.000000000", what printf("%.9f") gives)."""

import sys

from _planted import run

from flk.impl.core.canonical import finite_number

FLAG = "negative-zero"
CLASS = "negative-zero"  # the diagnosed root cause (flk.conformance.diagnosis)


def fmt9(x, field="value"):
    return format(finite_number(x, field), ".9f")  # bug: no -0 normalisation


if __name__ == "__main__":
    sys.exit(run(fmt9=fmt9))
