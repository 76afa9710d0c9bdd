"""ECVRF-EDWARDS25519-SHA512-TAI (RFC 9381, suite string 0x03) in pure Python.

Why this module exists: coh-star samples its projection directions from a
seed (``flk.impl.core.signals.directions``). If the agent picks the seed, it can
shop for a seed whose directions flatter its data. With a VRF the seed is
*derived* from a proof only the agent's VRF key can produce over a fixed
input, and anybody with the public key can check it -- so the agent cannot
steer the directions. The ``cryptography`` package does not expose an ECVRF,
so the Edwards arithmetic is done here with Python integers (extended twisted
Edwards coordinates, RFC 8032 section 5.1.4 formulas).

Construction (RFC 9381 sections 5.1-5.5, cipher suite ECVRF-EDWARDS25519-SHA512-TAI):

* secret scalar ``x`` and public key ``Y = x*B`` as in RFC 8032 section 5.1.5;
* ``H = encode_to_curve_try_and_increment(PK_string, alpha)``: for ctr = 0..255,
  ``SHA512(0x03 || 0x01 || PK || alpha || ctr || 0x00)[0:32]`` decoded as a
  point, times the cofactor 8, first one that is a valid non-identity point;
* nonce ``k = SHA512(SHA512(SK)[32:64] || point(H)) mod L`` (section 5.4.2.2);
* challenge ``c = SHA512(0x03 || 0x02 || Y || H || Gamma || U || V || 0x00)[0:16]``
  read little-endian;
* ``pi = point(Gamma) || c (16 bytes LE) || s (32 bytes LE)``, 80 bytes;
* ``beta = SHA512(0x03 || 0x03 || point(8*Gamma) || 0x00)``, 64 bytes.

Verification validates the public key (rejects non-canonical encodings and
small-order points, section 5.4.5), rejects ``s >= L`` and non-canonical
Gamma, and recomputes the challenge. Not constant time: the prover here is for
tests, the simulator and the reference agent; verification uses only public
data.

Use in flk (see spec/GOVERNANCE.md): ``alpha = vrf_alpha(merkle_root, epoch,
shard_id)`` = UTF-8 of ``merkle_root|epoch|shard_id``; the coh-star seed is
``vrf_seed(beta)`` = the first 8 bytes of beta, big-endian, as a uint64.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..core.errors import InvalidInput

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493  # group order q
D = (-121665 * pow(121666, P - 2, P)) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
COFACTOR = 8
SUITE = b"\x03"
C_LEN = 16
PT_LEN = 32
Q_LEN = 32
PI_LEN = PT_LEN + C_LEN + Q_LEN
BETA_LEN = 64

# reason code for the pipeline hook (HTTP 401)
REASON_VRF_INVALID = "vrf_invalid"
REASON_VRF_MISSING = "vrf_missing"
REASON_VRF_SEED_MISMATCH = "vrf_seed_mismatch"

Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, xy = T/Z
IDENTITY: Point = (0, 1, 1, 0)


def _add(p: Point, q: Point) -> Point:
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * t1 * t2 * D % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _double(p: Point) -> Point:
    return _add(p, p)


def _mul(k: int, p: Point) -> Point:
    r = IDENTITY
    q = p
    while k > 0:
        if k & 1:
            r = _add(r, q)
        q = _double(q)
        k >>= 1
    return r


def _neg(p: Point) -> Point:
    x, y, z, t = p
    return ((-x) % P, y, z, (-t) % P)


def _is_identity(p: Point) -> bool:
    x, y, z, _ = p
    return x % P == 0 and (y - z) % P == 0


def _recover_x(y: int, sign: int) -> int | None:
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if x & 1 != sign:
        x = P - x
    return x


_BY = 4 * pow(5, P - 2, P) % P
_BX = _recover_x(_BY, 0)
assert _BX is not None
BASE: Point = (_BX, _BY, 1, _BX * _BY % P)


def point_to_string(p: Point) -> bytes:
    x, y, z, _ = p
    zi = pow(z, P - 2, P)
    x, y = x * zi % P, y * zi % P
    return int.to_bytes(y | ((x & 1) << 255), 32, "little")


def string_to_point(s: bytes) -> Point | None:
    """RFC 8032 section 5.1.3 decoding; None for anything that is not a canonical point."""
    if len(s) != 32:
        return None
    v = int.from_bytes(s, "little")
    sign = v >> 255
    y = v & ((1 << 255) - 1)
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % P)


def _sha512(*parts: bytes) -> bytes:
    h = hashlib.sha512()
    for part in parts:
        h.update(part)
    return h.digest()


def _expand(sk: bytes) -> tuple[int, bytes]:
    if not isinstance(sk, (bytes, bytearray)) or len(sk) != 32:
        raise InvalidInput("vrf_secret_key", "must be 32 bytes (an Ed25519 seed)")
    h = _sha512(bytes(sk))
    a = bytearray(h[:32])
    a[0] &= 248
    a[31] &= 127
    a[31] |= 64
    return int.from_bytes(a, "little"), h[32:]


def secret_scalar(sk: bytes) -> int:
    return _expand(sk)[0]


def public_key(sk: bytes) -> bytes:
    """The 32-byte public key for a 32-byte secret key (RFC 8032 section 5.1.5)."""
    return point_to_string(_mul(_expand(sk)[0], BASE))


def encode_to_curve_tai(pk_string: bytes, alpha: bytes) -> tuple[Point, int]:
    """(H, ctr): try-and-increment hash to the curve (RFC 9381 section 5.4.1.1)."""
    for ctr in range(256):
        digest = _sha512(SUITE, b"\x01", pk_string, alpha, bytes([ctr]), b"\x00")
        cand = string_to_point(digest[:32])
        if cand is None:
            continue
        h = _mul(COFACTOR, cand)
        if not _is_identity(h):
            return h, ctr
    raise InvalidInput("alpha", "encode_to_curve found no point in 256 tries")  # probability 2^-256


def nonce(sk: bytes, h_string: bytes) -> int:
    """RFC 9381 section 5.4.2.2 (the RFC 8032 nonce)."""
    return int.from_bytes(_sha512(_sha512(bytes(sk))[32:], h_string), "little") % L


def challenge(*points: Point) -> int:
    parts = [SUITE, b"\x02"] + [point_to_string(p) for p in points] + [b"\x00"]
    return int.from_bytes(_sha512(*parts)[:C_LEN], "little")


def prove(sk: bytes, alpha: bytes) -> bytes:
    """ECVRF_prove(SK, alpha_string) -> 80-byte pi_string."""
    alpha = _bytes(alpha, "alpha")
    x, _ = _expand(sk)
    y = _mul(x, BASE)
    pk = point_to_string(y)
    h, _ = encode_to_curve_tai(pk, alpha)
    h_string = point_to_string(h)
    gamma = _mul(x, h)
    k = nonce(sk, h_string)
    c = challenge(y, h, gamma, _mul(k, BASE), _mul(k, h))
    s = (k + c * x) % L
    return point_to_string(gamma) + c.to_bytes(C_LEN, "little") + s.to_bytes(Q_LEN, "little")


def _bytes(v: object, field: str) -> bytes:
    if not isinstance(v, (bytes, bytearray)):
        raise InvalidInput(field, f"must be bytes, got {type(v).__name__}")
    return bytes(v)


def _decode_proof(pi: bytes) -> tuple[Point, int, int] | None:
    if len(pi) != PI_LEN:
        return None
    gamma = string_to_point(pi[:PT_LEN])
    if gamma is None:
        return None
    c = int.from_bytes(pi[PT_LEN : PT_LEN + C_LEN], "little")
    s = int.from_bytes(pi[PT_LEN + C_LEN :], "little")
    if s >= L:
        return None
    return gamma, c, s


def proof_to_hash(pi: bytes) -> bytes:
    """ECVRF_proof_to_hash: beta (64 bytes). Does not verify ``pi`` -- use :func:`verify`."""
    decoded = _decode_proof(_bytes(pi, "pi"))
    if decoded is None:
        raise InvalidInput("pi", "not a decodable ECVRF proof")
    return _sha512(SUITE, b"\x03", point_to_string(_mul(COFACTOR, decoded[0])), b"\x00")


def verify(pk: bytes, alpha: bytes, pi: bytes, validate_key: bool = True) -> bytes | None:
    """ECVRF_verify: beta on success, None when the proof (or key) is invalid."""
    if not all(isinstance(v, (bytes, bytearray)) for v in (pk, alpha, pi)):
        return None
    pk, alpha, pi = bytes(pk), bytes(alpha), bytes(pi)
    y = string_to_point(pk)
    if y is None:
        return None
    if validate_key and _is_identity(_mul(COFACTOR, y)):
        return None
    decoded = _decode_proof(pi)
    if decoded is None:
        return None
    gamma, c, s = decoded
    h, _ = encode_to_curve_tai(pk, alpha)
    u = _add(_mul(s, BASE), _neg(_mul(c, y)))
    v = _add(_mul(s, h), _neg(_mul(c, gamma)))
    if challenge(y, h, gamma, u, v) != c:
        return None
    return _sha512(SUITE, b"\x03", point_to_string(_mul(COFACTOR, gamma)), b"\x00")


# ---------------------------------------------------------------------------
# flk use: VRF-seeded coh-star directions


def vrf_alpha(merkle_root: str, epoch: int, shard_id: str) -> bytes:
    """The canonical VRF input of a PCS: UTF-8 of ``merkle_root|epoch|shard_id``."""
    if not isinstance(merkle_root, str) or not isinstance(shard_id, str):
        raise InvalidInput("vrf_alpha", "merkle_root and shard_id must be strings")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise InvalidInput("epoch", "must be a non-negative integer")
    return f"{merkle_root}|{epoch}|{shard_id}".encode()


def vrf_seed(beta: bytes) -> int:
    """The coh-star seed (uint64) derived from a VRF output: beta[0:8] big-endian."""
    if len(beta) != BETA_LEN:
        raise InvalidInput("beta", f"must be {BETA_LEN} bytes")
    return int.from_bytes(beta[:8], "big")


def agent_prove(sk: bytes, merkle_root: str, epoch: int, shard_id: str) -> tuple[str, int]:
    """What an agent does: (vrf_proof hex, coh-star seed) for a PCS."""
    pi = prove(sk, vrf_alpha(merkle_root, epoch, shard_id))
    return pi.hex(), vrf_seed(proof_to_hash(pi))


@dataclass(frozen=True)
class VrfCheck:
    """The outcome of checking a PCS's VRF proof: the reasons (empty if fine) and the seed."""

    reasons: tuple[str, ...]
    seed: int | None


def check_pcs(pcs: Mapping, public_key_bytes: bytes | None, required: bool = False) -> VrfCheck:
    """Verify ``pcs['vrf_proof']`` (hex) over the PCS's canonical alpha.

    * no proof: fine unless ``required`` (then ``vrf_missing``);
    * a proof but no key for the tenant, a malformed or invalid proof: ``vrf_invalid``;
    * a valid proof and a ``seed`` field that differs from the derived seed:
      ``vrf_seed_mismatch`` (the agent sampled directions it chose itself).
    """
    proof = pcs.get("vrf_proof")
    if proof is None:
        return VrfCheck((REASON_VRF_MISSING,) if required else (), None)
    if public_key_bytes is None or not isinstance(proof, str):
        return VrfCheck((REASON_VRF_INVALID,), None)
    try:
        pi = bytes.fromhex(proof)
        alpha = vrf_alpha(pcs.get("merkle_root"), pcs.get("epoch"), pcs.get("shard_id"))
    except (ValueError, InvalidInput):
        return VrfCheck((REASON_VRF_INVALID,), None)
    beta = verify(public_key_bytes, alpha, pi)
    if beta is None:
        return VrfCheck((REASON_VRF_INVALID,), None)
    seed = vrf_seed(beta)
    if "seed" in pcs and pcs["seed"] != seed:
        return VrfCheck((REASON_VRF_SEED_MISMATCH,), seed)
    return VrfCheck((), seed)


def make_vrf_hook(
    keys: Mapping[str, bytes] | Callable[[str], bytes | None], required: bool = False
) -> Callable[[Mapping, str], list[str]]:
    """A pipeline hook ``(pcs, tenant) -> [reason]`` checking VRF proofs.

    ``keys`` maps tenant -> 32-byte VRF public key (or is a lookup function).
    Reasons map to HTTP 401 (see :data:`HTTP_STATUS`).
    """

    def lookup(tenant: str) -> bytes | None:
        if callable(keys):
            return keys(tenant)
        return keys.get(tenant)

    def hook(pcs: Mapping, tenant: str) -> list[str]:
        return list(check_pcs(pcs, lookup(tenant), required).reasons)

    hook.__name__ = "vrf_hook"
    return hook


def make_tenants_vrf_hook(settings: Mapping[str, tuple[bytes, bool]]) -> Callable[[Mapping, str], list[str]]:
    """The hook ``flk serve`` installs: ``settings`` maps tenant -> (VRF public key,
    proof required?); a tenant not listed is not checked (its ``vrf`` is off)."""

    def hook(pcs: Mapping, tenant: str) -> list[str]:
        entry = settings.get(tenant)
        if entry is None:
            return []
        return list(check_pcs(pcs, entry[0], entry[1]).reasons)

    hook.__name__ = "vrf_hook"
    return hook


HTTP_STATUS = {REASON_VRF_INVALID: 401, REASON_VRF_MISSING: 401, REASON_VRF_SEED_MISMATCH: 401}
