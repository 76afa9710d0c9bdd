"""Synthetic signed PCS: the one factory behind load generation, benchmarks,
the simulator, the server conformance suite and the tests.

Why this module exists: a throughput run, a chaos scenario or a black-box
server check needs many *distinct*, validly signed, self-consistent PCS
(N_j, D-hat, coh-star, r, budget and regime exactly as the verifier
recomputes them), plus the classic variants -- a duplicate, the same
``pcs_id`` with another payload, a bad signature, a re-signature after a key
rotation. Building each from an event stream is slow, so documents are made
here from their signal values (or copied from a template the real builder
made) and only the identity fields and the signature are redone.

One key derivation for synthetic tenants lives here too
(:func:`tenant_key`): ``hex(HMAC-SHA256(base, "flk-loadgen-tenant:" +
tenant))``, with ``"#<generation>"`` appended to the tenant id for a rotated
key. Everything is pure and seeded: no clock, no global RNG.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
from collections.abc import Mapping, Sequence

from ..core.canonical import SIGNED_FIELDS, profile_of, round9  # profile_of: re-exported
from ..core.errors import InvalidInput
from ..core.pcs import pcs_id as compute_pcs_id
from ..core.signals import DEFAULT_SCALES, budget, d_hat, regime
from ..core.signing import sign_ed25519, sign_hmac

TENANT_KEY_LABEL = b"flk-loadgen-tenant:"


def tenant_key(base: bytes, tenant: str, generation: int = 0) -> bytes:
    """The HMAC key synthetic tenant ``tenant`` signs with (key generation
    ``generation``; 0 is the first key, a rotation moves to 1, 2, ...)."""
    if not base:
        raise InvalidInput("hmac_key", "the base secret is empty")
    label = tenant if generation == 0 else f"{tenant}#{generation}"
    return hmac.new(base, TENANT_KEY_LABEL + label.encode("utf-8"), "sha256").hexdigest().encode("ascii")


def synthetic_pcs(root: str, shard_id: str, epoch: int, *, scales: Sequence[int] = (2, 4, 8, 16, 32),
                  counts: Sequence[int] = (3, 5, 9, 17, 31), coh: float = 0.73, r: float = 0.87,
                  version: str = "1", v_star: Sequence[float] = (0.6, 0.8), d_shift: float = 0.0,
                  budget_shift: float = 0.0, **override) -> dict:
    """An unsigned PCS (``sig`` empty) whose signals are self-consistent.

    ``d_shift`` / ``budget_shift`` move the *reported* D-hat / budget away from
    the recomputed values (to provoke escalation); ``override`` replaces any
    field after the fact (to build malformed documents on purpose)."""
    profile = profile_of({"version": version})
    dim = d_hat(list(scales), list(counts), profile)
    coh_c, r_c = min(1.0, max(0.0, coh)), min(1.0, max(0.0, r))
    doc = {
        "pcs_id": compute_pcs_id(root, epoch, shard_id),
        "schema": "fractal-lba-kakeya",
        "version": version,
        "shard_id": shard_id,
        "epoch": epoch,
        "scales": list(scales),
        "N_j": {str(s): c for s, c in zip(scales, counts, strict=True)},
        "coh_star": coh,
        "v_star": list(v_star),
        "D_hat": round9(dim + d_shift),
        "r": r,
        "regime": regime(round9(dim), coh_c),  # from the published D-hat, as the verifier does (SPEC 2)
        "budget": round9(budget(round9(dim), coh_c, r_c) + budget_shift),
        "merkle_root": root,
        "sig": "",
    }
    doc.update(override)
    return doc


def random_signals(rng: random.Random) -> dict:
    """A random but self-consistent set of signal fields: box counts that follow
    ``s**d`` and never decrease with resolution, coh-star and r in range."""
    scales = list(DEFAULT_SCALES)
    dim = 0.3 + 2.6 * rng.random()
    n_j = [max(1, round(s**dim * (0.9 + 0.2 * rng.random()))) for s in scales]
    for i in range(1, len(n_j)):
        n_j[i] = max(n_j[i], n_j[i - 1])
    d_exact = d_hat(scales, n_j)
    d = round9(d_exact)
    coh = round9(0.2 + 0.8 * rng.random())
    r = round9(0.05 + 0.9 * rng.random())
    return {
        "scales": scales,
        "N_j": {str(s): c for s, c in zip(scales, n_j, strict=True)},
        "D_hat": d,
        "coh_star": coh,
        "v_star": [1.0, 0.0],
        "r": r,
        "budget": round9(budget(d, coh, r)),
        "regime": regime(d, coh),  # from the published D-hat, as the verifier does (SPEC 2)
    }


def sign(doc: Mapping, key: bytes, alg: str = "hmac", profile: str | None = None,
         set_alg: bool = False) -> dict:
    """A copy of ``doc`` with ``sig`` over its signed subset (``sig_alg`` too
    when ``set_alg``). ``profile`` defaults to the document's version."""
    out = dict(doc)
    if profile is None:
        profile = profile_of(out)
    subset = {k: out[k] for k in SIGNED_FIELDS}
    out["sig"] = sign_hmac(subset, key, profile) if alg == "hmac" else sign_ed25519(subset, key, profile)
    if set_alg:
        out["sig_alg"] = alg
    return out


def with_identity(template: Mapping, key: bytes, *, root: str | None = None, shard_id: str | None = None,
                  epoch: int | None = None, alg: str = "hmac") -> dict:
    """A copy of ``template`` with new identity fields (``pcs_id`` recomputed,
    INV-PCSID) signed anew: the cheap way to make many distinct PCS."""
    out = dict(template)
    if root is not None:
        out["merkle_root"] = root
    if shard_id is not None:
        out["shard_id"] = shard_id
    if epoch is not None:
        out["epoch"] = epoch
    out["pcs_id"] = compute_pcs_id(out["merkle_root"], out["epoch"], out["shard_id"])
    return sign(out, key, alg)


def other_payload(pcs: Mapping, key: bytes, field: str = "coh_star", delta: float = 0.001,
                  alg: str = "hmac") -> dict:
    """Same ``pcs_id``, another signed subset (``field`` moved by ``delta``,
    kept in [0, 1] for coh-star), validly signed: the input of a 409."""
    out = dict(pcs)
    value = pcs[field]
    if field == "coh_star":
        value = min(1.0, value + delta) if value < 1.0 else value - delta
    else:
        value = value + delta
    out[field] = round9(value)
    return sign(out, key, alg)


def bad_signature(pcs: Mapping) -> dict:
    """The same document with one bit of its signature flipped (still strict base64)."""
    out = dict(pcs)
    raw = bytearray(base64.b64decode(pcs["sig"]))
    raw[len(raw) // 2] ^= 0x01
    out["sig"] = base64.b64encode(bytes(raw)).decode("ascii")
    return out


def seeded_root(*parts: object) -> str:
    """A Merkle-root-shaped hex string from the given parts (deterministic)."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8")).hexdigest()
