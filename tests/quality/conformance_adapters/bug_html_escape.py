"""Planted bug: '<', '>' and '&' escaped as \\u003c \\u003e \\u0026 (Go's encoding/json default)."""

import sys

from _planted import REFERENCE_ESCAPE, run

FLAG = "html-escape"
CLASS = "html-escape"


def escape(s, field="value"):
    text = REFERENCE_ESCAPE(s, field)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")  # bug


if __name__ == "__main__":
    sys.exit(run(escape=escape))
