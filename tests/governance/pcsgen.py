"""Signed PCS documents and tenant registries for the governance tests."""

from __future__ import annotations

import hashlib
import json

from flk.impl.agent import factory
from flk.impl.verifier.tenants import from_mapping

KEY_A = b"gov-tenant-a-secret"
KEY_B = b"gov-tenant-b-secret"
SCALES = (2, 4, 8, 16, 32)
COUNTS = (3, 5, 9, 17, 31)


def make_pcs(seed: int = 1, shard: str = "shard-001", epoch: int = 1, coh: float = 0.73, r: float = 0.87,
             d_shift: float = 0.0, budget_shift: float = 0.0, **override) -> dict:
    root = hashlib.sha256(f"gov-root-{seed}".encode()).hexdigest()
    return factory.synthetic_pcs(root, shard, epoch, scales=SCALES, counts=COUNTS, coh=coh, r=r,
                                 d_shift=d_shift, budget_shift=budget_shift, **override)


def sign(doc: dict, key: bytes = KEY_A) -> dict:
    return factory.sign(doc, key)


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
