"""Planted bug: a float field given as a JSON integer is written as an integer ("2", not "2.000000000")."""

import sys

from _planted import REFERENCE_FMT9, run

FLAG = "integer-valued"
CLASS = "integer-valued"


def fmt9(x, field="value"):
    text = REFERENCE_FMT9(x, field)  # validation and the float case as the reference
    return str(x) if isinstance(x, int) and not isinstance(x, bool) else text  # bug


if __name__ == "__main__":
    sys.exit(run(fmt9=fmt9))
