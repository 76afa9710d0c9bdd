"""Planted bug: a lone surrogate replaced by U+FFFD (Go's encoding/json) instead of refused."""

import sys

from _planted import REFERENCE_CANONICAL, make_canonical, run

FLAG = "surrogate"
CLASS = "accepts-invalid-input"
WRITE = make_canonical()


def _clean(value):
    if isinstance(value, str):
        return "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in value)  # bug
    return value


def canonical_bytes(subset, profile="v1"):
    if profile != "v1" or not hasattr(subset, "items"):
        return REFERENCE_CANONICAL(subset, profile)
    return WRITE({k: _clean(v) for k, v in subset.items()}, profile)


if __name__ == "__main__":
    sys.exit(run(canonical_bytes=canonical_bytes))
