"""Building signed PCS documents for the pipeline tests."""

from __future__ import annotations

import hashlib
import json

from flk.impl.core.canonical import SIGNED_FIELDS, round9
from flk.impl.core.pcs import pcs_id
from flk.impl.core.signals import budget, d_hat, regime
from flk.impl.core.signing import b64encode, public_key_bytes, sign_ed25519, sign_hmac
from flk.impl.verifier.tenants import from_mapping

HMAC_A = b"tenant-a-secret-0001"
HMAC_A2 = b"tenant-a-secret-0002"
HMAC_B = b"tenant-b-secret-0001"
ED_SEED_C = bytes(range(32))
ED_PUB_C = public_key_bytes(ED_SEED_C)


def make_pcs(
    seed: int = 1,
    shard: str = "shard-001",
    epoch: int = 1,
    counts=(3, 5, 9, 17, 31),
    scales=(2, 4, 8, 16, 32),
    coh: float = 0.73,
    r: float = 0.87,
    version: str = "1",
    **override,
) -> dict:
    root = hashlib.sha256(f"root-{seed}".encode()).hexdigest()
    profile = "v1" if version == "1" else "legacy-0.1"
    dh = d_hat(list(scales), list(counts), profile)
    cc, rc = min(1.0, max(0.0, coh)), min(1.0, max(0.0, r))
    doc = {
        "pcs_id": pcs_id(root, epoch, shard),
        "schema": "fractal-lba-kakeya",
        "version": version,
        "shard_id": shard,
        "epoch": epoch,
        "scales": list(scales),
        "N_j": {str(s): c for s, c in zip(scales, counts, strict=True)},
        "coh_star": coh,
        "v_star": [0.6, 0.8],
        "D_hat": round9(dh),
        "r": r,
        "regime": regime(dh, cc),
        "budget": round9(budget(dh, cc, rc)),
        "merkle_root": root,
        "sig": "",
    }
    doc.update(override)
    return doc


def sign(doc: dict, key, alg: str = "hmac") -> dict:
    doc = dict(doc)
    profile = "v1" if doc.get("version") == "1" else "legacy-0.1"
    subset = {k: doc[k] for k in SIGNED_FIELDS}
    doc["sig"] = sign_hmac(subset, key, profile) if alg == "hmac" else sign_ed25519(subset, key, profile)
    return doc


def body(doc: dict) -> bytes:
    return json.dumps(doc).encode()


def registry(**tenant_overrides):
    tenants = {
        "ta": {"alg": "hmac", "keys": [{"id": "a1", "secret": HMAC_A.decode()}], "profiles": ["v1", "legacy-0.1"]},
        "tb": {"alg": "hmac", "keys": [{"id": "b1", "secret": HMAC_B.decode()}]},
        "tc": {"alg": "ed25519", "keys": [{"id": "c1", "public_key_b64": b64encode(ED_PUB_C)}]},
    }
    for k, v in tenant_overrides.items():
        tenants[k] = {**tenants.get(k, {}), **v}
    return from_mapping({"tenants": tenants})
