"""Planted bug: the verifier's base64 decoder skips whitespace (Go's decoder drops newlines even in Strict mode)."""

import sys

from _planted import run

from flk.impl.core import signing

FLAG = "base64-strict"
CLASS = "lenient-base64"
STRICT = signing.b64decode_strict


def b64decode_skip_whitespace(text, length=None, field="sig"):
    return STRICT("".join(text.split()) if isinstance(text, str) else text, length, field)  # bug


if __name__ == "__main__":
    sys.exit(run(b64decode=b64decode_skip_whitespace))
