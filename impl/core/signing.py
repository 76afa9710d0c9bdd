"""Signatures over canonical bytes (SPEC.md section 4).

* HMAC: ``sig = base64(HMAC-SHA256(key, canonical_bytes))`` -- over the bytes
  themselves, never over their digest.
* Ed25519: signs ``SHA-256(canonical_bytes)`` (the 32-byte digest).

Base64 is standard alphabet with padding, decoded strictly: no whitespace, no
foreign characters, exact length, canonical trailing bits. Verification takes
several keys (rotation overlap) and compares in constant time.

HMAC-SHA256 and strict base64 decoding have a compiled fast path (bound
through :mod:`.accel`; ``canonical.CORE_PATH`` says which is active); the pure functions below stay the reference, and the
public functions keep their names, errors and behaviour on both paths.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import accel
from .canonical import canonical_bytes, check_profile
from .errors import InvalidInput

_B64 = re.compile(r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$")
HMAC_SIG_LEN = 32
ED25519_SIG_LEN = 64


# strict base64 in the compiled core (None: not strict base64, the pure path says why); None on the pure path
_compiled_b64decode = accel.bind("b64decode_canonical", globals(), "_compiled_b64decode")


def b64encode(raw: bytes) -> str:
    """Standard base64 with padding, no newline."""
    return binascii.b2a_base64(raw, newline=False).decode("ascii")


def b64decode_strict(text: str, length: int | None = None, field: str = "sig") -> bytes:
    """Strict standard base64: raises :class:`InvalidInput` on anything lenient decoders accept."""
    if _compiled_b64decode is not None:
        raw = _compiled_b64decode(text)  # None: not strict base64, the pure path says why
        if raw is not None and (length is None or len(raw) == length):
            return raw
    return pure_b64decode_strict(text, length, field)


def pure_b64decode_strict(text: str, length: int | None = None, field: str = "sig") -> bytes:
    """:func:`b64decode_strict` in pure Python (the reference)."""
    if not isinstance(text, str):
        raise InvalidInput(field, f"must be a base64 string, got {type(text).__name__}")
    if not _B64.fullmatch(text):
        raise InvalidInput(field, "not strict standard base64 (alphabet, padding or length)")
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise InvalidInput(field, "not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise InvalidInput(field, "non-canonical base64 (trailing bits set)")
    if length is not None and len(raw) != length:
        raise InvalidInput(field, f"decodes to {len(raw)} bytes, expected {length}")
    return raw


def _key_bytes(key: bytes | str, field: str = "key") -> bytes:
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, (bytes, bytearray)) or len(key) == 0:
        raise InvalidInput(field, "HMAC key must be non-empty bytes")
    return bytes(key)


def _key_list(keys: object, field: str = "keys") -> list:
    if isinstance(keys, (str, bytes, bytearray)) or not isinstance(keys, Sequence):
        raise InvalidInput(field, "must be a sequence of keys (rotation overlap), not a single key")
    return list(keys)


def pure_hmac_b64(key: bytes, msg: bytes) -> str:
    """base64(HMAC-SHA256(key, msg)) with the standard library (the reference)."""
    return binascii.b2a_base64(hmac.digest(key, msg, "sha256"), newline=False).decode("ascii")


def pure_hmac_any(keys: list[bytes], msg: bytes, expected: bytes) -> bool:
    """True iff the HMAC of ``msg`` under one of ``keys`` is ``expected`` (every key tried)."""
    ok = False
    for key in keys:  # every key is tried: timing does not reveal which matched
        ok |= hmac.compare_digest(hmac.digest(key, msg, "sha256"), expected)
    return ok


# the compiled HMAC (same signature and answers as the references, which the pure path binds)
_hmac_b64 = accel.bind("hmac_sha256_b64", globals(), "_hmac_b64", pure_hmac_b64)
_hmac_any = accel.bind("hmac_sha256_any", globals(), "_hmac_any", pure_hmac_any)


def sign_hmac(subset: Mapping, key: bytes, profile: str = "v1") -> str:
    """base64(HMAC-SHA256(key, canonical_bytes(subset, profile)))."""
    msg = canonical_bytes(subset, profile)
    if type(key) is not bytes or not key:
        key = _key_bytes(key)
    return _hmac_b64(key, msg)


def verify_hmac(subset: Mapping, sig: str, keys: Sequence[bytes], profile: str = "v1") -> bool:
    """True iff ``sig`` is a strict-base64 HMAC of the subset under one of ``keys``.

    A malformed signature is simply not valid (False); a malformed subset raises.
    """
    msg = canonical_bytes(subset, profile)
    if type(keys) is not list or not all(type(k) is bytes and k for k in keys):
        keys = [_key_bytes(k) for k in _key_list(keys)]  # validates; str, bytearray, tuple normalised
    try:
        raw = b64decode_strict(sig, HMAC_SIG_LEN)
    except InvalidInput:
        return False
    return _hmac_any(keys, msg, raw)


def _private_key(key: Ed25519PrivateKey | bytes) -> Ed25519PrivateKey:
    if isinstance(key, Ed25519PrivateKey):
        return key
    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        return Ed25519PrivateKey.from_private_bytes(bytes(key))
    raise InvalidInput("key", "Ed25519 private key must be a key object or 32 raw bytes")


ED25519_P = 2**255 - 19  # the field prime of edwards25519


def ed25519_key_canonical(raw: bytes) -> bool:
    """True when ``raw`` (32 bytes) passes the canonical-encoding steps of RFC 8032 section 5.1.3:
    the 255-bit y is below p (step 1), and x = 0 -- y = 1 or y = p - 1 -- does not come with the
    sign bit set (step 4). OpenSSL (under ``cryptography``) skips both, so a key ``y + p`` (the
    same point spelled twice) would verify what its canonical twin verifies; the reference refuses it.
    Whether y is on the curve at all is left to the verifier (off-curve keys verify nothing)."""
    v = int.from_bytes(raw, "little")
    y, sign = v & ((1 << 255) - 1), v >> 255
    return y < ED25519_P and not (sign and y in (1, ED25519_P - 1))


def _public_key(key: Ed25519PublicKey | bytes) -> Ed25519PublicKey | None:
    """The key object, or None for a 32-byte key that is not a canonical encoding (it verifies nothing)."""
    if isinstance(key, Ed25519PublicKey):
        return key if ed25519_key_canonical(public_key_bytes(key)) else None
    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        if not ed25519_key_canonical(bytes(key)):
            return None
        try:
            return Ed25519PublicKey.from_public_bytes(bytes(key))
        except ValueError:
            raise InvalidInput("key", "not a valid Ed25519 public key") from None
    raise InvalidInput("key", "Ed25519 public key must be a key object or 32 raw bytes")


def ed25519_message(subset: Mapping, profile: str = "v1") -> bytes:
    """What Ed25519 signs: the SHA-256 digest of the canonical bytes (v1 only:
    profile legacy-0.1 is HMAC only, SPEC.md section 10)."""
    if profile != "v1":
        check_profile(profile)
        raise InvalidInput("profile", f"Ed25519 is defined for profile v1 only, not {profile}")
    return hashlib.sha256(canonical_bytes(subset, profile)).digest()


def sign_ed25519(subset: Mapping, key: Ed25519PrivateKey | bytes, profile: str = "v1") -> str:
    return b64encode(_private_key(key).sign(ed25519_message(subset, profile)))


def verify_ed25519(
    subset: Mapping,
    sig: str,
    keys: Sequence[Ed25519PublicKey | bytes],
    profile: str = "v1",
) -> bool:
    msg = ed25519_message(subset, profile)
    pubs = [_public_key(k) for k in _key_list(keys)]
    try:
        raw = b64decode_strict(sig, ED25519_SIG_LEN)
    except InvalidInput:
        return False
    ok = False
    for key in pubs:
        if key is None:  # a non-canonical encoding (RFC 8032 section 5.1.3): decoding fails, not valid
            continue
        try:
            key.verify(raw, msg)
            ok = True
        except InvalidSignature:
            pass
    return ok


def public_key_bytes(key: Ed25519PrivateKey | Ed25519PublicKey | bytes) -> bytes:
    """Raw 32-byte public key for a private key (object or raw bytes) or a public key."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    if isinstance(key, (bytes, bytearray)):
        key = _private_key(key)
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)
