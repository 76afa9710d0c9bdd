"""Three planted bugs: a fixed unsorted key order, Math.round(x*1e9) rounding, a whitespace-skipping base64 decoder."""

import sys

from _planted import run
from bug_any_key_order import ORDER
from bug_base64_whitespace import b64decode_skip_whitespace
from bug_x1e9_rounding import fmt9

CLASSES = ("key-order", "x1e9-rounding", "lenient-base64")

if __name__ == "__main__":
    sys.exit(run(order=ORDER, fmt9=fmt9, b64decode=b64decode_skip_whitespace))
