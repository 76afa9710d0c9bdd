"""Planted bug: JavaScript's x.toFixed(9), which switches to exponent form ("1e+21") from 1e21 up."""

import sys

from _planted import REFERENCE_FMT9, run

from flk.conformance.diagnosis import js_number

FLAG = "large-value"
CLASS = "exponent-form"


def fmt9(x, field="value"):
    text = REFERENCE_FMT9(x, field)
    return js_number(float(x)) if abs(float(x)) >= 1e21 else text  # bug: toFixed gives String(x)


if __name__ == "__main__":
    sys.exit(run(fmt9=fmt9))
