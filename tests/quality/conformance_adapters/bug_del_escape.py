"""Planted bug: U+007F (DEL) escaped as \\u007f (Java and some hand-written escapers)."""

import sys

from _planted import REFERENCE_ESCAPE, run

FLAG = "control-char"
CLASS = "del-escape"


def escape(s, field="value"):
    return REFERENCE_ESCAPE(s, field).replace("\x7f", "\\u007f")  # bug


if __name__ == "__main__":
    sys.exit(run(escape=escape))
