"""Planted bug: HMAC over SHA-256(canonical bytes) instead of over the bytes themselves."""

import base64
import hashlib
import hmac
import sys

from _planted import run

from flk.impl.core import canonical, signing

FLAG = "prehash"
CLASS = "prehash"  # the diagnosed root cause (flk.conformance.diagnosis)


def _mac(subset, key, profile):
    digest = hashlib.sha256(canonical.canonical_bytes(subset, profile)).digest()
    return hmac.digest(key, digest, "sha256")  # bug: pre-hashed


def sign_hmac(subset, key, profile="v1"):
    return base64.b64encode(_mac(subset, key, profile)).decode("ascii")


def verify_hmac(subset, sig, keys, profile="v1"):
    try:
        raw = signing.b64decode_strict(sig, 32)
    except ValueError:
        canonical.canonical_bytes(subset, profile)
        return False
    return any(hmac.compare_digest(_mac(subset, k, profile), raw) for k in keys)


if __name__ == "__main__":
    sys.exit(run(sign_hmac=sign_hmac, verify_hmac=verify_hmac))
