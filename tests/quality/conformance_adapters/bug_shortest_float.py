"""Planted bug: floats written as their shortest round-trip text (repr / JS toString)."""

import json
import sys

from _planted import run

from flk.impl.core.canonical import finite_number

FLAG = "shortest-repr"
CLASS = "shortest-repr"  # the diagnosed root cause (flk.conformance.diagnosis)


def fmt9(x, field="value"):
    return json.dumps(finite_number(x, field))  # bug: "0.5", "1e-07" instead of 9 decimals


if __name__ == "__main__":
    sys.exit(run(fmt9=fmt9))
