"""Planted bug: NaN and infinities accepted and written as null (JavaScript's JSON.stringify)."""

import math
import sys

from _planted import REFERENCE_FMT9, run

FLAG = "nan-inf"
CLASS = "nan-accepted"


def fmt9(x, field="value"):
    if isinstance(x, float) and not math.isfinite(x):
        return "null"  # bug: should be rejected
    return REFERENCE_FMT9(x, field)


if __name__ == "__main__":
    sys.exit(run(fmt9=fmt9, accept_non_finite=True))
