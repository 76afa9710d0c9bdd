"""Planted bug: non-ASCII text escaped as \\uXXXX (json.dumps default, ensure_ascii=True) in v1."""

import json
import sys

from _planted import run

FLAG = "unicode-escape"
CLASS = "ascii-escape"  # the diagnosed root cause (flk.conformance.diagnosis)


def escape(s, field="value"):
    return json.dumps(s)  # bug: ASCII-only output


if __name__ == "__main__":
    sys.exit(run(escape=escape))
