"""Signed PCS documents and tenant registries for the governance tests."""

from __future__ import annotations

import hashlib
import json

from flk.impl.core.canonical import SIGNED_FIELDS, round9
from flk.impl.core.pcs import pcs_id
from flk.impl.core.signals import budget, d_hat, regime
from flk.impl.core.signing import sign_hmac
from flk.impl.verifier.tenants import from_mapping

KEY_A = b"gov-tenant-a-secret"
KEY_B = b"gov-tenant-b-secret"
SCALES = (2, 4, 8, 16, 32)
COUNTS = (3, 5, 9, 17, 31)


def make_pcs(seed: int = 1, shard: str = "shard-001", epoch: int = 1, coh: float = 0.73, r: float = 0.87,
             d_shift: float = 0.0, budget_shift: float = 0.0, **override) -> dict:
    root = hashlib.sha256(f"gov-root-{seed}".encode()).hexdigest()
    dh = d_hat(list(SCALES), list(COUNTS))
    doc = {
        "pcs_id": pcs_id(root, epoch, shard),
        "schema": "fractal-lba-kakeya",
        "version": "1",
        "shard_id": shard,
        "epoch": epoch,
        "scales": list(SCALES),
        "N_j": {str(s): c for s, c in zip(SCALES, COUNTS, strict=True)},
        "coh_star": coh,
        "v_star": [0.6, 0.8],
        "D_hat": round9(dh + d_shift),
        "r": r,
        "regime": regime(dh, coh),
        "budget": round9(budget(dh, coh, r) + budget_shift),
        "merkle_root": root,
        "sig": "",
    }
    doc.update(override)
    return doc


def sign(doc: dict, key: bytes = KEY_A) -> dict:
    doc = dict(doc)
    doc["sig"] = sign_hmac({k: doc[k] for k in SIGNED_FIELDS}, key, "v1")
    return doc


def body(doc: dict) -> bytes:
    return json.dumps(doc).encode()


TENANTS_TOML = f"""
[tenants.ta]
alg = "hmac"
pii_mode = "block"
[[tenants.ta.keys]]
id = "a1"
secret = "{KEY_A.decode()}"

[tenants.tb]
alg = "hmac"
pii_mode = "redact"
[[tenants.tb.keys]]
id = "b1"
secret = "{KEY_B.decode()}"
"""


def registry(pii_a: str = "block", pii_b: str = "redact"):
    return from_mapping({"tenants": {
        "ta": {"alg": "hmac", "pii_mode": pii_a, "keys": [{"id": "a1", "secret": KEY_A.decode()}]},
        "tb": {"alg": "hmac", "pii_mode": pii_b, "keys": [{"id": "b1", "secret": KEY_B.decode()}]},
    }})
