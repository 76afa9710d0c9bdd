"""Two planted bugs of JavaScript's x.toFixed(9): exact ties rounded away from zero, exponent form from 1e21."""

import sys

from _planted import run
from bug_tie_away import fmt9 as tie_away

from flk.conformance.hypotheses import js_number

CLASSES = ("round-tie", "exponent-form")


def to_fixed(x, field="value"):
    text = tie_away(x, field)
    return js_number(float(x)) if abs(float(x)) >= 1e21 else text  # toFixed gives String(x) from 1e21


if __name__ == "__main__":
    sys.exit(run(fmt9=to_fixed))
