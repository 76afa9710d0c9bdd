"""Ed25519 public keys are decoded as RFC 8032 section 5.1.3 says (the reference verifier, flk.impl.core.signing).

OpenSSL (under ``cryptography``) reads y mod p and ignores the sign bit of x = 0,
so a key spelled ``y + p`` verifies what its canonical twin verifies. The
reference refuses such keys; the ``non-canonical-key`` vectors of
spec/vectors/verify_ed25519.v1.json pin it for every adapter.
"""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.core import signing
from flk.impl.governance import vrf
from flk.impl.lab.vectors import BASE, lenient_forgery

P = 2**255 - 19
IDENTITY = (1).to_bytes(32, "little")
NON_CANONICAL = [(P + 1).to_bytes(32, "little"), (1 | 1 << 255).to_bytes(32, "little"),
                 (P - 1 | 1 << 255).to_bytes(32, "little")]


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(min_size=32, max_size=32) | st.builds(
    lambda y, s: (y | s << 255).to_bytes(32, "little"), st.integers(P - 3, 2**255 - 1), st.integers(0, 1)))
def test_key_rule_agrees_with_an_independent_strict_decoder(raw):
    """vrf.string_to_point (RFC 8032 section 5.1.3 in full, written apart) decodes only keys the rule calls
    canonical; every y >= p is refused."""
    if vrf.string_to_point(raw) is not None:
        assert signing.ed25519_key_canonical(raw)
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    if y >= P:
        assert not signing.ed25519_key_canonical(raw) and vrf.string_to_point(raw) is None


def test_lenient_forgeries_fail_and_the_canonical_twin_still_verifies():
    msg_subset = dict(BASE)
    msg = signing.ed25519_message(msg_subset)
    for key in NON_CANONICAL:
        sig = base64.b64encode(lenient_forgery(key, msg)).decode()  # OpenSSL accepts it (checked inside)
        assert signing.verify_ed25519(msg_subset, sig, [key]) is False
        assert signing.verify_ed25519(msg_subset, sig, [key, IDENTITY]) is (sig.startswith("AQAA"))
    # control: the identity's canonical spelling verifies R = identity, S = 0 (cofactorless equation),
    # so the refusals above are the encoding's doing alone
    sig = base64.b64encode(IDENTITY + bytes(32)).decode()
    assert signing.verify_ed25519(msg_subset, sig, [IDENTITY]) is True
    assert signing.verify_ed25519(msg_subset, sig, [NON_CANONICAL[0]]) is False


def test_key_objects_are_checked_too():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    sig = base64.b64encode(IDENTITY + bytes(32)).decode()
    lenient = Ed25519PublicKey.from_public_bytes(NON_CANONICAL[0])
    assert signing.verify_ed25519(dict(BASE), sig, [lenient]) is False
    assert signing.verify_ed25519(dict(BASE), sig, [Ed25519PublicKey.from_public_bytes(IDENTITY)]) is True


def test_server_configuration_and_signed_reads_refuse_non_canonical_keys():
    import pytest

    from flk.impl.server import auth, config

    for key in NON_CANONICAL:
        with pytest.raises(config.ConfigError, match="not a canonical Ed25519 public key"):
            config._ed25519_pub("PCS_ED25519_PUB_B64", base64.b64encode(key).decode())
    assert config._ed25519_pub("K", base64.b64encode(IDENTITY).decode()) == IDENTITY

    class Tenant:
        alg = "ed25519"

        def __init__(self, key):
            self.key = key

        def active_keys(self, now):
            return [self.key]

    msg = b"GET /v1/pcs/x"
    sig = lenient_forgery(NON_CANONICAL[0], msg)  # OpenSSL alone would accept it
    assert auth._verify(Tenant(NON_CANONICAL[0]), msg, sig, 0.0) is False
    assert auth._verify(Tenant(IDENTITY), msg, sig, 0.0) is True  # the canonical twin (control)
