"""Planted bug: rounded correctly to nine decimals, then written as the shortest text (repr(round(x, 9)))."""

import sys

from _planted import run

from flk.impl.core.canonical import finite_number

FLAG = "float-format"
CLASS = "round-then-shortest"


def fmt9(x, field="value"):
    return repr(round(finite_number(x, field), 9))  # bug: "0.5", "0.12345679", "1e+21"


if __name__ == "__main__":
    sys.exit(run(fmt9=fmt9))
