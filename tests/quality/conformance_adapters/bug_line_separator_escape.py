"""Planted bug: U+2028 and U+2029 escaped as \\u2028 / \\u2029 (JavaScript-safe serializers, Go)."""

import sys

from _planted import REFERENCE_ESCAPE, run

FLAG = "unicode-escape"
CLASS = "line-separator-escape"


def escape(s, field="value"):
    return REFERENCE_ESCAPE(s, field).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")  # bug


if __name__ == "__main__":
    sys.exit(run(escape=escape))
