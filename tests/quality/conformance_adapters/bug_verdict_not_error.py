"""Planted bug: a verifier that answers valid: false for a malformed subset instead of refusing it."""

import sys

from _planted import run

from flk.conformance.ops import op_verify_ed25519, op_verify_hmac
from flk.impl.core.errors import InvalidInput

FLAG = "nan-inf"
CLASS = "verdict-not-error"


def verdict_always(op):
    def verify(inp, profile):
        try:
            return op(inp, profile)
        except InvalidInput:
            return {"valid": False}  # bug: one answer for "malformed" and "bad signature"

    return verify


if __name__ == "__main__":
    sys.exit(run(ops={"verify_hmac": verdict_always(op_verify_hmac), "verify_ed25519": verdict_always(op_verify_ed25519)}))
