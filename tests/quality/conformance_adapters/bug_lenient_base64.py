"""Planted bug: lenient base64 (whitespace skipped, padding optional, URL-safe alphabet, any trailing bits)."""

import base64
import binascii
import sys

from _planted import run

from flk.impl.core.errors import InvalidInput

FLAG = "base64-strict"
CLASS = "lenient-base64"  # the diagnosed root cause (flk.conformance.diagnosis)


def b64decode_lenient(text, length=None, field="sig"):
    if not isinstance(text, str):
        raise InvalidInput(field, "must be a base64 string")
    cleaned = "".join(text.split()).replace("-", "+").replace("_", "/").rstrip("=")
    try:
        raw = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))  # bug: forgiving
    except (binascii.Error, ValueError):
        raise InvalidInput(field, "not base64") from None
    if length is not None and len(raw) != length:
        raise InvalidInput(field, f"decodes to {len(raw)} bytes, expected {length}")
    return raw


if __name__ == "__main__":
    sys.exit(run(b64decode=b64decode_lenient))
