"""Planted bug: HMAC over pretty-printed JSON (json.dumps(indent=2) of the canonical object), not the canonical bytes.

canonical_bytes is right; every signature is over other bytes.
"""

import base64
import hmac
import json
import sys

from _planted import run

from flk.impl.core import canonical, signing

FLAG = "v1-example"
CLASS = "signs-other-bytes"


def _signed(subset, profile):
    raw = canonical.canonical_bytes(subset, profile)
    return json.dumps(json.loads(raw), indent=2).encode()  # bug: pretty-printed


def sign_hmac(subset, key, profile="v1"):
    return base64.b64encode(hmac.digest(key, _signed(subset, profile), "sha256")).decode("ascii")


def verify_hmac(subset, sig, keys, profile="v1"):
    msg = _signed(subset, profile)
    try:
        raw = signing.b64decode_strict(sig, 32)
    except ValueError:
        return False
    return any(hmac.compare_digest(hmac.digest(k, msg, "sha256"), raw) for k in keys)


if __name__ == "__main__":
    sys.exit(run(sign_hmac=sign_hmac, verify_hmac=verify_hmac))
