"""Signed PCS documents and tenant registries for the pipeline tests (over the one factory)."""

from __future__ import annotations

import hashlib
import json

from flk.impl.agent import factory
from flk.impl.core.signing import b64encode, public_key_bytes
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
    return factory.synthetic_pcs(root, shard, epoch, scales=scales, counts=counts, coh=coh, r=r,
                                 version=version, **override)


def sign(doc: dict, key, alg: str = "hmac") -> dict:
    return factory.sign(doc, key, alg)


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
